"""The reference prefill / decode step (runtime/reference.py) against Hugging Face (ratio 0) and against its own plan (ratio > 0)."""

import pytest
import torch

from fastadasp.models.decoder import hidden_states
from fastadasp.reduction.schedule import make_schedule
from fastadasp.runtime.backends.torch_backend import TorchBackend
from fastadasp.runtime.generate import GenerationConfig, generate
from fastadasp.core.prompt import PromptInputs
from support import TINY_PRESETS, hf_reference


def _request(lm, batch, seed=0):
    """A request plus, for Qwen2-Audio, the mel features HF needs to rebuild the same audio embeddings."""
    if lm.family == "qwen2-audio":
        g = torch.Generator().manual_seed(seed)
        feats = lm.synthetic_audio_features(batch, g)["input_features"]
        prefix = torch.randint(0, 300, (batch, 5), generator=g)
        suffix = torch.randint(0, 300, (batch, 3), generator=g)
        return PromptInputs(prefix, lm.encode_audio(feats), suffix), feats
    return lm.synthetic_prompt(batch_size=batch, seed=seed), None


@pytest.mark.parametrize("name", TINY_PRESETS)
def test_ratio_zero_logits_match_hugging_face(tiny, name):
    lm = tiny(name)
    inputs, feats = _request(lm, batch=2)
    ref = hf_reference(lm, inputs, features=feats)
    ours = TorchBackend(lm.decoder).prefill(inputs, max_new_tokens=1).logits
    torch.testing.assert_close(ours, ref.last_logits(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", TINY_PRESETS)
@pytest.mark.parametrize("num_beams", [1, 5])
def test_ratio_zero_tokens_match_hugging_face_generate(tiny, name, num_beams):
    lm = tiny(name)
    batch = 2 if num_beams == 1 or not lm.needs_lora_scale else 1
    inputs, feats = _request(lm, batch=batch, seed=1)
    ref = hf_reference(lm, inputs, features=feats)
    # An EOS that the model actually emits exercises finished-beam bookkeeping; pick a frequent token.
    probe = generate(TorchBackend(lm.decoder), inputs, GenerationConfig(max_new_tokens=16))
    eos = int(probe.sequences[0, 5])
    gen = dict(max_new_tokens=16, num_beams=num_beams, eos_token_id=eos, pad_token_id=0)
    expected = ref.generate(**gen)
    ours = generate(TorchBackend(lm.decoder), inputs, GenerationConfig(**gen)).sequences
    assert ours.tolist() == expected.tolist()


@pytest.mark.parametrize("name", TINY_PRESETS)
@pytest.mark.parametrize("kind,start,ratio", [("constant", 1, 0.3), ("decay", 2, 0.5), ("sparse", 1, 0.8)])
def test_reduced_kv_lengths_follow_the_plan(tiny, name, kind, start, ratio):
    lm = tiny(name)
    inputs, _ = _request(lm, batch=2)
    schedule = make_schedule(kind, lm.args.num_layers, start, ratio)
    backend = TorchBackend(lm.decoder, schedule)
    out = generate(backend, inputs, GenerationConfig(max_new_tokens=4))
    spans = schedule.span_lengths(inputs.audio_length)
    assert out.prefill.span_lengths == spans
    decoded = out.sequences.shape[1] - 1  # the last token is never fed back
    assert backend.cache.lengths == [inputs.text_length + n + decoded for n in spans[:-1]]
    assert spans[-1] < inputs.audio_length


@pytest.mark.parametrize("policy", ["reference", "first"])
def test_reduced_batch_equals_per_sample(tiny, policy):
    lm = tiny("tiny-qwen2-audio")
    inputs, _ = _request(lm, batch=3, seed=4)
    schedule = make_schedule("constant", lm.args.num_layers, 1, 0.3)
    batched = TorchBackend(lm.decoder, schedule, position_policy=policy).prefill(inputs, 1)
    for b in range(3):
        one = PromptInputs(inputs.prefix_ids[b : b + 1], inputs.audio_embeds[b : b + 1], inputs.suffix_ids[b : b + 1])
        single = TorchBackend(lm.decoder, schedule, position_policy=policy).prefill(one, 1)
        torch.testing.assert_close(batched.logits[b : b + 1], single.logits, rtol=1e-4, atol=1e-4)
        for layer, kept in single.kept.items():
            assert batched.kept[layer][b : b + 1].tolist() == kept.tolist()


def test_position_policies_agree_without_merges_and_differ_with_them(tiny):
    lm = tiny("tiny-llama")
    inputs = lm.synthetic_prompt(batch_size=1, seed=2)
    zero = [0.0] * lm.args.num_layers
    a = TorchBackend(lm.decoder, zero, position_policy="reference").prefill(inputs, 1).logits
    b = TorchBackend(lm.decoder, zero, position_policy="first").prefill(inputs, 1).logits
    torch.testing.assert_close(a, b)
    schedule = make_schedule("constant", lm.args.num_layers, 0, 0.5)
    a = TorchBackend(lm.decoder, schedule, position_policy="reference").prefill(inputs, 1).logits
    b = TorchBackend(lm.decoder, schedule, position_policy="first").prefill(inputs, 1).logits
    assert (a - b).abs().max() > 1e-4


def test_hidden_states_matches_prefill_logits(tiny):
    lm = tiny("tiny-llama")
    inputs = lm.synthetic_prompt(batch_size=2, seed=5)
    h = hidden_states(lm.decoder, inputs.embeds(lm.decoder.embed, torch.float32))
    logits = TorchBackend(lm.decoder).prefill(inputs, 1).logits
    torch.testing.assert_close(lm.decoder.logits(h[:, -1]), logits, rtol=1e-5, atol=1e-5)


def test_bad_inputs_raise_clear_errors(tiny):
    lm = tiny("tiny-llama")
    with pytest.raises(ValueError, match="prefix_ids must be"):
        PromptInputs(torch.zeros(2, 3, dtype=torch.long), torch.zeros(1, 4, 72), torch.zeros(1, 2, dtype=torch.long))
    inputs = lm.synthetic_prompt()
    with pytest.raises(ValueError, match="position_policy"):
        TorchBackend(lm.decoder, position_policy="middle").prefill(inputs, 1)
    with pytest.raises(ValueError, match="ratios"):
        TorchBackend(lm.decoder, [0.1, 0.2]).prefill(inputs, 1)


def test_missing_front_end_and_lora_are_clear_errors(tiny):
    lm = tiny("tiny-llama")
    with pytest.raises(ValueError, match="no audio front-end"):
        lm.synthetic_audio_features(1, torch.Generator())
    with pytest.raises(ValueError, match="no prompt-aware LoRA"):
        lm.prompt_lora_scale(torch.zeros(1, 3, dtype=torch.long))
