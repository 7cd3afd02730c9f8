import pytest

from fastadasp.core.shapes import DecoderArgs
from fastadasp.models.llama import LLAMA2_7B
from fastadasp.reduction.schedule import (
    ScheduleError,
    evaluate_schedule,
    layer_flops,
    make_schedule,
    plan_for_flops_target,
    prefill_flops,
)

SHAPE_32 = LLAMA2_7B


def test_schedule_formulas():
    step = 2.0**-16  # ratios are stored as the fixed-point values every stage computes with
    c = make_schedule("constant", 8, 2, 0.3)
    assert c.ratios[:2] == (0, 0) and all(0.3 <= r < 0.3 + step for r in c.ratios[2:])
    d = make_schedule("decay", 8, 2, 0.3)
    assert d.ratios[:2] == (0, 0) and d.ratios[2] == pytest.approx(0.3, abs=step) and d.ratios[-1] == 0.0
    assert d.ratios[4] == pytest.approx(0.3 * (1 - 2 / 5), abs=step)
    s = make_schedule("sparse", 8, 3, 0.75)
    assert s.merge_layers == [3] and s.ratios[3] == 0.75
    assert all(r * 65536 == int(r * 65536) for r in d.ratios)


def test_ratios_compound_on_the_current_span():
    sched = make_schedule("constant", 4, 0, 0.5)
    assert sched.span_lengths(100) == [100, 50, 25, 13, 7]
    assert sched.merges(100) == [50, 25, 12, 6]


def test_full_flops_closed_form():
    shape = DecoderArgs(vocab_size=16, hidden_size=8, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=4, intermediate_size=16)
    t = 10 + 20
    expected = 2 * (2 * t * (2 * 64 + 2 * 8 * 4) + 4 * t * t * 8 + 2 * t * 3 * 8 * 16)
    assert prefill_flops(shape, None, 20, 10) == expected
    assert layer_flops(shape, 30, 30) * 2 == expected


@pytest.mark.parametrize("kind", ["constant", "decay"])
@pytest.mark.parametrize("target", [0.1, 0.2, 0.3, 0.4, 0.5])
@pytest.mark.parametrize("audio", [1500, 3000])
def test_flops_target_is_met_within_two_points(kind, target, audio):
    plan = plan_for_flops_target(SHAPE_32, kind, 2, target, audio, 64)
    assert abs(plan.flops_reduction - target) <= 0.02
    # the plan is internally consistent: recomputing from its schedule gives the same cut
    again = evaluate_schedule(SHAPE_32, plan.schedule, audio, 64)
    assert again.flops_reduction == pytest.approx(plan.flops_reduction)


def test_sparse_target():
    plan = plan_for_flops_target(SHAPE_32, "sparse", 3, 0.5, 1500, 64)
    assert abs(plan.flops_reduction - 0.5) <= 0.02
    assert plan.schedule.merge_layers == [3]


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: make_schedule("linear", 32, 2, 0.3), "unknown schedule"),
        (lambda: make_schedule("decay", 32, 2, 1.0), "ratio must be in"),
        (lambda: make_schedule("decay", 32, 40, 0.3), "start layer"),
        (lambda: plan_for_flops_target(SHAPE_32, "decay", 2, 1.5, 1500), "in \\(0, 1\\)"),
        (lambda: plan_for_flops_target(SHAPE_32, "decay", 2, 0.0, 1500), "in \\(0, 1\\)"),
        (lambda: plan_for_flops_target(SHAPE_32, "sparse", 30, 0.5, 1500), "infeasible"),
    ],
)
def test_errors_name_the_problem(call, message):
    with pytest.raises(ScheduleError, match=message):
        call()
