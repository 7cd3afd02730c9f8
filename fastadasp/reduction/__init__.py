"""The method as pure tensor code: merge, schedules and FLOPs planning, baselines, layer selection."""

from fastadasp.reduction.merge import (
    ReducedSpan,
    adjacent_key_similarity,
    attention_received,
    chain_group_index,
    num_merged,
    select_merge_edges,
    weighted_merge,
    weighted_merge_span,
)
from fastadasp.reduction.baselines import SPAN_REDUCERS
from fastadasp.reduction.schedule import (
    Plan,
    Schedule,
    make_schedule,
    plan_for_flops_target,
    prefill_flops,
)

__all__ = [
    "Plan",
    "ReducedSpan",
    "SPAN_REDUCERS",
    "Schedule",
    "adjacent_key_similarity",
    "attention_received",
    "chain_group_index",
    "make_schedule",
    "num_merged",
    "plan_for_flops_target",
    "prefill_flops",
    "select_merge_edges",
    "weighted_merge",
    "weighted_merge_span",
]
