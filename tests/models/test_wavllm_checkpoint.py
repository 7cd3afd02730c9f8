"""WavLLM checkpoint converter: key layout, bit-exact round trips, and numerical equivalence with the Meta
LLaMA reference implementation (tests/models/checkpoint_reference.py)."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from checkpoint_reference import (
    RANK,
    SHAPE,
    SHAPE_GQA,
    assert_same_dicts,
    hf_llama,
    meta_freqs_cis,
    meta_llama_logits,
    meta_rope,
)
from fastadasp.models.checkpoint import permute_rotary
from fastadasp.models.synthetic import wavllm_synthetic_state_dict
from fastadasp.models.wavllm_checkpoint import (
    WAVLLM_AUDIO_PREFIXES,
    WAVLLM_DECODER_PREFIX as P,
    convert_wavllm_state_dict,
    infer_wavllm_shape,
    wavllm_state_dict_from_hf,
)


def test_wavllm_conversion_groups_shapes_and_strict_load():
    sd = wavllm_synthetic_state_dict(SHAPE, RANK)
    groups = convert_wavllm_state_dict(sd, SHAPE, RANK)
    assert set(groups) == {"decoder", "lora", "prompt_scale", "audio", "unused"}
    model = hf_llama(SHAPE)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in groups["decoder"].items()} == expected
    model.load_state_dict(groups["decoder"], strict=True)

    lora = groups["lora"]
    assert len(lora) == SHAPE.num_layers * 4 * 2
    d, r = SHAPE.hidden_size, RANK
    for i in range(SHAPE.num_layers):
        for p in "qkvo":
            assert lora[f"layers.{i}.{p}.lora_a"].shape == (r, d)
            assert lora[f"layers.{i}.{p}.lora_b"].shape == (d, r)
    assert set(groups["prompt_scale"]) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "pool.weight",
                                           "pool.bias"}
    assert torch.equal(groups["prompt_scale"]["fc1.weight"], sd[P + "scale_fc_1.weight"])
    assert torch.equal(groups["prompt_scale"]["pool.bias"], sd[P + "scale_weight_attention.bias"])
    audio_src = {k for k in sd if k.startswith(WAVLLM_AUDIO_PREFIXES)}
    assert set(groups["audio"]) == audio_src
    assert all(torch.equal(groups["audio"][k], sd[k]) for k in audio_src)
    assert groups["unused"] == {}
    # Every input tensor is accounted for exactly once.
    assert sum(len(g) for g in groups.values()) == len(sd)
    # The fairseq checkpoint wrapper {"model": ...} is accepted as well.
    assert_same_dicts(convert_wavllm_state_dict({"model": sd, "cfg": None}, SHAPE, RANK)["decoder"], groups["decoder"])


@pytest.mark.parametrize("shape,rank", [(SHAPE, RANK), (SHAPE_GQA, 0)], ids=["mha", "gqa"])
def test_wavllm_converted_llama_logits_match_meta_reference(shape, rank):
    sd = wavllm_synthetic_state_dict(shape, rank, seed=3)
    model = hf_llama(shape, convert_wavllm_state_dict(sd, shape, rank)["decoder"])
    ids = torch.tensor([5, 17, 99, 3, 42, 42, 0, 64, 7, 100, 1])
    with torch.no_grad():
        hf = model(ids[None]).logits[0]
        ref = meta_llama_logits(sd, shape, ids)
    assert ref.abs().max() > 0.1
    torch.testing.assert_close(hf, ref, rtol=1e-5, atol=1e-5)


def test_wavllm_round_trip_is_bit_exact():
    sd = wavllm_synthetic_state_dict(SHAPE, RANK, seed=4)
    sd["criterion.something"] = torch.arange(3)
    assert_same_dicts(wavllm_state_dict_from_hf(convert_wavllm_state_dict(sd, SHAPE, RANK), SHAPE), sd)
    half = {k: v.half() for k, v in sd.items()}
    assert_same_dicts(wavllm_state_dict_from_hf(convert_wavllm_state_dict(half, SHAPE, RANK), SHAPE), half)
    sd_gqa = wavllm_synthetic_state_dict(SHAPE_GQA, 0, seed=4)
    assert_same_dicts(wavllm_state_dict_from_hf(convert_wavllm_state_dict(sd_gqa, SHAPE_GQA, 0), SHAPE_GQA), sd_gqa)


def test_wavllm_lora_orientation_and_scale_follow_the_checkpoint_convention():
    """WavLLM (llama.py, Attention_LoRA): out = w(x) + (x @ w_lora_A @ w_lora_B) * s.unsqueeze(1), s [B, dim].
    Converted: F.linear(F.linear(x, lora_a), lora_b), in HF channel order; for q/k the scale is permuted too."""
    sd = wavllm_synthetic_state_dict(SHAPE, RANK, seed=5)
    groups = convert_wavllm_state_dict(sd, SHAPE, RANK)
    lora = groups["lora"]
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 7, SHAPE.hidden_size, generator=g)
    s = torch.rand(2, SHAPE.hidden_size, generator=g) * 3
    heads = {"q": SHAPE.num_heads, "k": SHAPE.num_kv_heads, "v": None, "o": None}
    for i in range(SHAPE.num_layers):
        for p, nh in heads.items():
            a, b = sd[f"{P}layers.{i}.attention.w{p}_lora_A"], sd[f"{P}layers.{i}.attention.w{p}_lora_B"]
            meta = (x @ a @ b) * s.unsqueeze(1)
            s_hf = permute_rotary(s, nh, dim=-1) if nh else s
            ours = F.linear(F.linear(x, lora[f"layers.{i}.{p}.lora_a"]), lora[f"layers.{i}.{p}.lora_b"])
            ours = ours * s_hf.unsqueeze(1)
            expected = permute_rotary(meta, nh, dim=-1) if nh else meta
            torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)

    # End to end on attention scores: Meta q/k with LoRA + interleaved RoPE == HF layout with half-split RoPE.
    model = hf_llama(SHAPE, groups["decoder"])
    xs = x[:1]
    with torch.no_grad():
        def meta_w(p):
            return (xs[0] @ sd[f"{P}layers.1.attention.w{p}_lora_A"] @ sd[f"{P}layers.1.attention.w{p}_lora_B"]) * s[0]

        t, nh, hd = xs.shape[1], SHAPE.num_heads, SHAPE.head_dim
        cis = meta_freqs_cis(hd, t)
        q_m = meta_rope((xs[0] @ sd[P + "layers.1.attention.wq.weight"].T + meta_w("q")).view(t, nh, hd), cis)
        k_m = meta_rope((xs[0] @ sd[P + "layers.1.attention.wk.weight"].T + meta_w("k")).view(t, nh, hd), cis)
        meta_scores = torch.einsum("thd,shd->hts", q_m, k_m) / math.sqrt(hd)

        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        attn = model.model.layers[1].self_attn

        def hf_proj(p, w):
            delta = F.linear(F.linear(xs, lora[f"layers.1.{p}.lora_a"]), lora[f"layers.1.{p}.lora_b"])
            return w(xs) + delta * permute_rotary(s[:1], nh, dim=-1).unsqueeze(1)

        q_h = hf_proj("q", attn.q_proj).view(1, t, nh, hd).transpose(1, 2)
        k_h = hf_proj("k", attn.k_proj).view(1, t, nh, hd).transpose(1, 2)
        cos, sin = model.model.rotary_emb(xs, torch.arange(t)[None])
        q_h, k_h = apply_rotary_pos_emb(q_h, k_h, cos, sin)
        hf_scores = (q_h @ k_h.transpose(-1, -2))[0] / math.sqrt(hd)
    torch.testing.assert_close(hf_scores, meta_scores, rtol=1e-5, atol=1e-5)


def test_wavllm_missing_decoder_key_raises_naming_it():
    sd = wavllm_synthetic_state_dict(SHAPE, RANK)
    gone = P + "layers.1.attention.wk.weight"
    del sd[gone]
    with pytest.raises(ValueError, match=re.escape(gone)) as err:
        convert_wavllm_state_dict(sd, SHAPE, RANK)
    assert "WavLLM" in str(err.value)
    with pytest.raises(ValueError, match="missing"):
        convert_wavllm_state_dict({"unrelated.weight": torch.zeros(1)}, SHAPE, RANK)


def test_wavllm_bad_shapes_and_partial_lora_raise():
    sd = wavllm_synthetic_state_dict(SHAPE, RANK)
    bad = dict(sd)
    bad[P + "layers.0.feed_forward.w1.weight"] = torch.zeros(95, 64)
    with pytest.raises(ValueError, match="feed_forward.w1"):
        convert_wavllm_state_dict(bad, SHAPE, RANK)
    partial = dict(sd)
    del partial[P + "layers.1.attention.wv_lora_B"]
    with pytest.raises(ValueError, match="wv_lora_B"):
        convert_wavllm_state_dict(partial, SHAPE, RANK)
    with pytest.raises(ValueError, match="lora_rank"):
        convert_wavllm_state_dict(sd, SHAPE, 0)
    with pytest.raises(ValueError, match="lora_rank"):
        convert_wavllm_state_dict(sd, SHAPE, -1)
    scale_partial = dict(sd)
    del scale_partial[P + "scale_weight_attention.bias"]
    with pytest.raises(ValueError, match="scale_weight_attention.bias"):
        convert_wavllm_state_dict(scale_partial, SHAPE, RANK)


def test_wavllm_unknown_keys_land_in_unused_and_wrappers_are_stripped():
    sd = wavllm_synthetic_state_dict(SHAPE, RANK)
    wrapped = {}
    for k, v in sd.items():  # as activation checkpointing / FSDP could name them
        k = k.replace(P + "layers.0.", P + "layers.0._checkpoint_wrapped_module.")
        k = k.replace("feed_forward.", "feed_forward._fsdp_wrapped_module.")
        wrapped[k] = v
    wrapped[P + "some_adapter.weight"] = torch.ones(2)
    wrapped["decoder.version"] = torch.tensor([3.0])
    groups = convert_wavllm_state_dict(wrapped, SHAPE, RANK)
    assert set(groups["unused"]) == {P + "some_adapter.weight", "decoder.version"}
    assert_same_dicts(groups["decoder"], convert_wavllm_state_dict(sd, SHAPE, RANK)["decoder"])


def test_wavllm_without_lora_or_scale_network_and_shape_inference():
    sd = wavllm_synthetic_state_dict(SHAPE_GQA, 0)
    sd = {k: v for k, v in sd.items() if "scale_" not in k}
    groups = convert_wavllm_state_dict(sd, SHAPE_GQA, 0)
    assert groups["lora"] == {} and groups["prompt_scale"] == {}
    assert_same_dicts(wavllm_state_dict_from_hf(groups, SHAPE_GQA), sd)
    assert infer_wavllm_shape(sd, head_dim=16) == (SHAPE_GQA, 0)
    assert infer_wavllm_shape({"model": wavllm_synthetic_state_dict(SHAPE, RANK)}, head_dim=16) == (SHAPE, RANK)
    # A bare Meta LLaMA state dict (no gpt_model.model_llama. prefix) converts too.
    bare = {k[len(P):]: v for k, v in sd.items() if k.startswith(P)}
    assert_same_dicts(convert_wavllm_state_dict(bare, SHAPE_GQA, 0)["decoder"], groups["decoder"])
