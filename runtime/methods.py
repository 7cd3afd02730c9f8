"""Reduction method -> PyTorch reference backend: the one dispatch `fastadasp run`, the evaluation
scripts and the tests share.

Span methods (the weighted merge and the baselines) shorten the audio span at the schedule's layers during
prefill; "h2o" keeps the prefill whole and evicts KV entries during decode down to a budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastadasp.core.choices import POSITION_POLICIES, REDUCTION_METHODS, SINGLE_LAYER_METHODS
from fastadasp.core.errors import InvalidOption
from fastadasp.reduction.baselines import SPAN_REDUCERS
from fastadasp.reduction.h2o import H2OPolicy
from fastadasp.reduction.schedule import Schedule
from fastadasp.runtime.backends.torch_backend import TorchBackend


@dataclass(frozen=True)
class MethodConfig:
    """method: one of REDUCTION_METHODS. h2o: kv_budget entries kept per layer (None: half the prompt) and
    recent_window newest entries always kept (None: a quarter of the budget). seed: random baselines."""

    method: str = "weighted"
    position_policy: str = "reference"
    kv_budget: int | None = None
    recent_window: int | None = None
    seed: int = 0

    def validate(self, schedule_kind: str | None = None) -> None:
        if self.method not in REDUCTION_METHODS:
            raise InvalidOption(f"--method {self.method!r}: choose one of {', '.join(REDUCTION_METHODS)}")
        if self.position_policy not in POSITION_POLICIES:
            raise InvalidOption(f"--position-policy {self.position_policy!r}: choose one of {', '.join(POSITION_POLICIES)}")
        if self.method in SINGLE_LAYER_METHODS and schedule_kind not in (None, "sparse"):
            raise InvalidOption(f"--method {self.method} acts at a single layer: use --schedule sparse "
                                f"(got --schedule {schedule_kind})")
        if self.method != "h2o" and (self.kv_budget is not None or self.recent_window is not None):
            raise InvalidOption("--kv-budget / --recent-window apply only to --method h2o")
        if self.kv_budget is not None and self.kv_budget < 1:
            raise InvalidOption(f"--kv-budget must be >= 1 KV entries per layer, got {self.kv_budget}")
        if self.recent_window is not None and self.recent_window < 0:
            raise InvalidOption(f"--recent-window must be >= 0, got {self.recent_window}")
        if self.kv_budget is not None and self.recent_window is not None and self.recent_window > self.kv_budget:
            raise InvalidOption(f"--recent-window {self.recent_window} exceeds --kv-budget {self.kv_budget}")

    def h2o_sizes(self, prompt_length: int) -> tuple[int, int]:
        budget = self.kv_budget or max(2, prompt_length // 2)
        recent = self.recent_window if self.recent_window is not None else budget // 4
        return budget, min(recent, budget)


def reduced_backend(decoder, schedule: Schedule | None, config: MethodConfig, prompt_length: int) -> TorchBackend:
    """The reference backend that applies `config.method` (with `schedule` for span methods)."""
    config.validate(None if schedule is None else schedule.kind)
    if config.method == "h2o":
        budget, recent = config.h2o_sizes(prompt_length)
        return TorchBackend(decoder, None, position_policy=config.position_policy, kv_policy=H2OPolicy(budget, recent))
    if schedule is None:
        raise InvalidOption(f"--method {config.method} needs a merge schedule")
    generator = torch.Generator().manual_seed(config.seed)
    return TorchBackend(decoder, schedule, position_policy=config.position_policy,
                        reducer=SPAN_REDUCERS[config.method], generator=generator)
