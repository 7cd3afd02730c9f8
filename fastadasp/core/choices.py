"""The choice lists the CLI, the planner, the exporter and the runtime all validate against."""

from __future__ import annotations

SCHEDULE_KINDS = ("constant", "decay", "sparse")
# "reference": a shortened sequence is renumbered right-aligned (the published method);
# "first": a merged token keeps its first member's position.
POSITION_POLICIES = ("reference", "first")
# Span reducers applied at the schedule's layers, plus "h2o" (decode-time KV eviction, no prefill merge).
SPAN_METHODS = ("weighted", "average", "random_merge", "random_evict", "atome", "fastv")
REDUCTION_METHODS = SPAN_METHODS + ("h2o",)
# Methods that act at one layer only (they need the sparse schedule).
SINGLE_LAYER_METHODS = ("fastv",)
PRECISIONS = ("fp32", "fp16", "bf16")
DEFAULT_START_LAYER = {"constant": 2, "decay": 2, "sparse": 3}
