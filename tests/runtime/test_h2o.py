import torch

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
