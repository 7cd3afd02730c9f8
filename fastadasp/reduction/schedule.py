"""Per-layer merge schedules, the decoder prefill FLOPs model, and the FLOPs-target solver.

A schedule gives every decoder layer a ratio r_l: at layer l the audio span of current length n_l loses
m_l = num_merged(n_l, r_l) tokens (after attention, before the MLP), so n_{l+1} = n_l - m_l. Ratios are
fractions of the *current* span, so kept fractions compound.

Conventions used everywhere (planner, reference model, exporter, runtime):
  span_lengths(n)[l] = audio tokens entering layer l (its attention and its KV cache see this many),
  span_lengths(n)[L] = audio tokens after the last layer, for l in 0..L-1 with L decoder layers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from fastadasp.core.choices import DEFAULT_START_LAYER, SCHEDULE_KINDS
from fastadasp.core.errors import UserError
from fastadasp.core.shapes import DecoderArgs
from fastadasp.reduction.merge import num_merged, quantize_ratio


# Bisection steps for the ratio solver: 2**-50 is far below the resolution floor(n * r) can see.
_SOLVER_STEPS = 50
# Largest base ratio the solver tries: every span keeps at least one token anyway (num_merged caps m at n-1).
_MAX_RATIO = 1.0 - 1e-9


def span_lengths_for_ratios(ratios, audio_tokens: int) -> list[int]:
    """Audio tokens entering each layer under per-layer ratios, plus the count after the last layer."""
    lengths = [int(audio_tokens)]
    for ratio in ratios:
        lengths.append(lengths[-1] - num_merged(lengths[-1], ratio))
    return lengths


class ScheduleError(UserError, ValueError):
    """A schedule or planning request that cannot be satisfied; the message names the fix."""


@dataclass(frozen=True)
class Schedule:
    """Merge ratios fixed per decoder layer.

    kind: "constant" | "decay" | "sparse"; base_ratio: r; start_layer: first (for sparse: only) merge layer.
    ratios: one float per decoder layer, 0 where nothing is merged.
    """

    kind: str
    num_layers: int
    start_layer: int
    base_ratio: float
    ratios: tuple[float, ...]

    def span_lengths(self, audio_tokens: int) -> list[int]:
        """Audio-span length entering each layer, plus the length after the last layer ([num_layers + 1])."""
        return span_lengths_for_ratios(self.ratios, audio_tokens)

    def merges(self, audio_tokens: int) -> list[int]:
        """Tokens removed at each layer ([num_layers])."""
        lengths = self.span_lengths(audio_tokens)
        return [a - b for a, b in zip(lengths[:-1], lengths[1:])]

    @property
    def merge_layers(self) -> list[int]:
        return [i for i, r in enumerate(self.ratios) if r > 0.0]

    def to_dict(self) -> dict:
        return {**asdict(self), "ratios": list(self.ratios)}


def make_schedule(kind: str, num_layers: int, start_layer: int, ratio: float) -> Schedule:
    """Build a schedule.

    constant: r_i = r for i >= start_layer
    decay:    r_i = r * (1 - (i - start)/(num_layers - 1 - start)) for i >= start (0 at the last layer)
    sparse:   r at start_layer only
    """
    if kind not in SCHEDULE_KINDS:
        raise ScheduleError(f"unknown schedule {kind!r}; choose one of {', '.join(SCHEDULE_KINDS)}")
    if num_layers < 1:
        raise ScheduleError(f"num_layers must be >= 1, got {num_layers}")
    if not 0 <= start_layer < num_layers:
        raise ScheduleError(
            f"start layer {start_layer} is outside the decoder's layers 0..{num_layers - 1}; pass --start-layer in that range"
        )
    if not (0.0 <= ratio < 1.0) or math.isnan(ratio):
        raise ScheduleError(f"ratio must be in [0, 1) (a fraction of the current audio span), got {ratio}")
    ratios = [0.0] * num_layers
    if kind == "constant":
        for i in range(start_layer, num_layers):
            ratios[i] = ratio
    elif kind == "decay":
        span = num_layers - 1 - start_layer
        for i in range(start_layer, num_layers):
            ratios[i] = ratio * (1.0 - (i - start_layer) / span) if span > 0 else ratio
    else:
        ratios[start_layer] = ratio
    # Store the fixed-point ratios every stage computes with (see merge.RATIO_DENOMINATOR).
    return Schedule(kind, num_layers, start_layer, float(ratio), tuple(quantize_ratio(r) for r in ratios))


def layer_flops(shape: DecoderArgs, attn_tokens: int, mlp_tokens: int) -> float:
    """One decoder layer's prefill FLOPs: 2T(2d^2 + 2d*d_kv) + 4T^2 d for attention at length T, then
    2T'*3*d*f for the SwiGLU MLP at the (possibly merged) length T'."""
    d, dkv, f = shape.hidden_size, shape.kv_dim, shape.intermediate_size
    t, t_mlp = float(attn_tokens), float(mlp_tokens)
    return 2 * t * (2 * d * d + 2 * d * dkv) + 4 * t * t * d + 2 * t_mlp * 3 * d * f


def prefill_flops(shape: DecoderArgs, schedule: Schedule | None, audio_tokens: int, text_tokens: int) -> float:
    """Decoder prefill FLOPs for text_tokens + audio_tokens under a schedule (None = full model)."""
    if schedule is None:
        lengths = [audio_tokens] * (shape.num_layers + 1)
    else:
        if schedule.num_layers != shape.num_layers:
            raise ScheduleError(
                f"schedule has {schedule.num_layers} layers but the decoder has {shape.num_layers}"
            )
        lengths = schedule.span_lengths(audio_tokens)
    return sum(
        layer_flops(shape, text_tokens + lengths[i], text_tokens + lengths[i + 1]) for i in range(shape.num_layers)
    )


@dataclass(frozen=True)
class Plan:
    """A schedule evaluated on a nominal input: per-layer token counts and the FLOPs it saves."""

    schedule: Schedule
    audio_tokens: int
    text_tokens: int
    tokens_per_layer: list[int]
    flops_full: float
    flops_reduced: float
    flops_target: float | None

    @property
    def flops_reduction(self) -> float:
        return 1.0 - self.flops_reduced / self.flops_full

    def to_dict(self) -> dict:
        return {
            "schedule": self.schedule.kind,
            "start_layer": self.schedule.start_layer,
            "base_ratio": self.schedule.base_ratio,
            "ratios": list(self.schedule.ratios),
            "audio_tokens": self.audio_tokens,
            "text_tokens": self.text_tokens,
            "tokens_per_layer": self.tokens_per_layer,
            "merges_per_layer": self.schedule.merges(self.audio_tokens),
            "flops_full": self.flops_full,
            "flops_reduced": self.flops_reduced,
            "flops_reduction": self.flops_reduction,
            "flops_target": self.flops_target,
        }


def evaluate_schedule(
    shape: DecoderArgs, schedule: Schedule, audio_tokens: int, text_tokens: int, target: float | None = None
) -> Plan:
    """Evaluate a schedule on an input of text_tokens + audio_tokens."""
    if audio_tokens < 1:
        raise ScheduleError(f"audio tokens must be >= 1, got {audio_tokens}")
    if text_tokens < 0:
        raise ScheduleError(f"text tokens must be >= 0, got {text_tokens}")
    return Plan(
        schedule=schedule,
        audio_tokens=audio_tokens,
        text_tokens=text_tokens,
        tokens_per_layer=schedule.span_lengths(audio_tokens),
        flops_full=prefill_flops(shape, None, audio_tokens, text_tokens),
        flops_reduced=prefill_flops(shape, schedule, audio_tokens, text_tokens),
        flops_target=target,
    )


def plan_for_flops_target(
    shape: DecoderArgs,
    kind: str,
    start_layer: int,
    target: float,
    audio_tokens: int,
    text_tokens: int = 64,
) -> Plan:
    """Solve the base ratio r so that the reduced/full prefill FLOPs = 1 - target on the nominal input.

    The achieved cut is a step function of r (token counts are integers) and non-decreasing in r, so
    bisection brackets the target; the bracket end closest to the target wins.
    """
    if not (0.0 < target < 1.0):
        raise ScheduleError(f"FLOPs target must be a fraction in (0, 1), e.g. 0.3 for 30% fewer FLOPs; got {target}")

    def achieved(ratio: float) -> Plan:
        return evaluate_schedule(shape, make_schedule(kind, shape.num_layers, start_layer, ratio), audio_tokens, text_tokens, target)

    best_possible = achieved(_MAX_RATIO)
    if best_possible.flops_reduction < target - 0.02:
        raise ScheduleError(
            f"FLOPs target {target:.0%} is infeasible for schedule {kind!r} from layer {start_layer} with "
            f"{audio_tokens} audio + {text_tokens} text tokens: merging cuts at most {best_possible.flops_reduction:.1%}. "
            "Lower the target, use an earlier --start-layer, or a denser schedule."
        )
    lo, hi = 0.0, _MAX_RATIO
    for _ in range(_SOLVER_STEPS):
        mid = 0.5 * (lo + hi)
        if achieved(mid).flops_reduction < target:
            lo = mid
        else:
            hi = mid
    candidates = [achieved(lo), achieved(hi)]
    return min(candidates, key=lambda p: abs(p.flops_reduction - target))


@dataclass(frozen=True)
class PlanRequest:
    """What a user asks for: a schedule kind with a FLOPs target or a base ratio (neither: a 30% target).
    start_layer None: the kind's default (DEFAULT_START_LAYER)."""

    kind: str = "decay"
    flops_target: float | None = None
    ratio: float | None = None
    start_layer: int | None = None

    def validate(self) -> None:
        """Checks that need no model, so bad values are refused before anything is built."""
        if self.kind not in SCHEDULE_KINDS:
            raise ScheduleError(f"--schedule {self.kind!r}: choose one of {', '.join(SCHEDULE_KINDS)}")
        if self.flops_target is not None and self.ratio is not None:
            raise ScheduleError("give --flops-target or --ratio, not both")
        if self.ratio is not None and not 0.0 <= self.ratio < 1.0:
            raise ScheduleError(f"--ratio must be in [0, 1) (a fraction of the current audio span), got {self.ratio}")
        if self.flops_target is not None and not 0.0 < self.flops_target < 1.0:
            raise ScheduleError(f"--flops-target: FLOPs target must be a fraction in (0, 1), e.g. 0.3 for 30% fewer "
                                f"FLOPs; got {self.flops_target}")
        if self.start_layer is not None and self.start_layer < 0:
            raise ScheduleError(f"--start-layer must be >= 0, got {self.start_layer}")

    def resolve(self, shape: DecoderArgs, audio_tokens: int, text_tokens: int) -> Plan:
        self.validate()
        start = self.start_layer if self.start_layer is not None else DEFAULT_START_LAYER[self.kind]
        if start >= shape.num_layers:
            raise ScheduleError(f"--start-layer {start} is past the model's last layer ({shape.num_layers - 1}); "
                                "pass a smaller one")
        if self.ratio is not None:
            return evaluate_schedule(shape, make_schedule(self.kind, shape.num_layers, start, self.ratio),
                                     audio_tokens, text_tokens)
        target = 0.3 if self.flops_target is None else self.flops_target
        return plan_for_flops_target(shape, self.kind, start, target, audio_tokens, text_tokens)
