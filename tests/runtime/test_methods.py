import pytest

from fastadasp.runtime.backends.torch_backend import TorchBackend
from fastadasp.runtime.generate import GenerationConfig, generate
from fastadasp.reduction.h2o import H2OPolicy


def test_budget_above_length_changes_nothing(tiny):
    lm = tiny("tiny-llama")
    inputs = lm.synthetic_prompt(batch_size=2, seed=1)
    config = GenerationConfig(max_new_tokens=12)
    full = generate(TorchBackend(lm.decoder), inputs, config).sequences
    roomy = generate(TorchBackend(lm.decoder, kv_policy=H2OPolicy(budget=10_000, recent_window=4)), inputs, config)
    assert roomy.sequences.tolist() == full.tolist()


def test_cache_is_held_at_budget_through_greedy_and_beam(tiny):
    lm = tiny("tiny-qwen2-audio")
    inputs = lm.synthetic_prompt(batch_size=2, seed=2)
    for beams in (1, 3):
        policy = H2OPolicy(budget=16, recent_window=4)
        backend = TorchBackend(lm.decoder, kv_policy=policy)
        out = generate(backend, inputs, GenerationConfig(max_new_tokens=10, num_beams=beams))
        assert out.sequences.shape[0] == 2
        # evicted after the last step's attention: every layer holds exactly the budget
        assert backend.cache.lengths == [16] * lm.args.num_layers
        assert all(s.shape == (2 * beams, 16) for s in policy.scores.values())


def test_every_span_method_has_a_reducer():
    from fastadasp.core.choices import REDUCTION_METHODS, SPAN_METHODS
    from fastadasp.reduction.baselines import SPAN_REDUCERS

    assert set(SPAN_METHODS) == set(SPAN_REDUCERS)
    assert set(REDUCTION_METHODS) == set(SPAN_METHODS) | {"h2o"}


def test_dispatch_builds_the_backend_each_method_needs(tiny):
    from fastadasp.core.errors import InvalidOption
    from fastadasp.reduction.baselines import SPAN_REDUCERS
    from fastadasp.reduction.schedule import make_schedule
    from fastadasp.runtime.methods import MethodConfig, reduced_backend

    lm = tiny("tiny-llama")
    sparse = make_schedule("sparse", lm.args.num_layers, 1, 0.5)
    fastv = reduced_backend(lm.decoder, sparse, MethodConfig("fastv"), 40)
    assert fastv.reducer is SPAN_REDUCERS["fastv"] and fastv.ratios == list(sparse.ratios)
    h2o = reduced_backend(lm.decoder, None, MethodConfig("h2o", kv_budget=12), 40)
    assert h2o.kv_policy.budget == 12 and h2o.kv_policy.recent_window == 3 and set(h2o.ratios) == {0.0}
    decay = make_schedule("decay", lm.args.num_layers, 1, 0.5)
    with pytest.raises(InvalidOption, match="--schedule sparse"):
        reduced_backend(lm.decoder, decay, MethodConfig("fastv"), 40)
    with pytest.raises(InvalidOption, match="only to --method h2o"):
        reduced_backend(lm.decoder, decay, MethodConfig("weighted", kv_budget=4), 40)
