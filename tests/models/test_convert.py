"""Checkpoint converters: key layouts, bit-exact round trips, and numerical equivalence with small reference
implementations written here from the released models' conventions (Meta LLaMA with interleaved complex RoPE
as in WavLLM's llama.py; Qwen v1 blocks as in Qwen-Audio's modeling_qwen.py)."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from fastadasp.models import convert
from fastadasp.models.convert import (
    WAVLLM_DECODER_PREFIX as P,
    WavLLMDecoderShape,
    convert_qwen_audio_state_dict,
    convert_wavllm_state_dict,
    permute_rotary,
    qwen_audio_state_dict_from_hf,
    qwen_audio_synthetic_state_dict,
    unpermute_rotary,
    wavllm_state_dict_from_hf,
    wavllm_synthetic_state_dict,
)

transformers = pytest.importorskip("transformers")

SHAPE = WavLLMDecoderShape(num_layers=2, hidden_size=64, num_heads=4, num_kv_heads=4, intermediate_size=96,
                           vocab_size=101, lora_rank=4)
SHAPE_GQA = WavLLMDecoderShape(num_layers=2, hidden_size=64, num_heads=4, num_kv_heads=2, intermediate_size=96,
                               vocab_size=101, lora_rank=0)
META_EPS = 1e-6  # WavLLM's ModelArgs.norm_eps
QWEN_EPS = 1e-5  # Qwen-Audio config.json layer_norm_epsilon
THETA = 10000.0
QWEN = dict(num_layers=2, hidden=64, heads=4, intermediate=96, vocab=101)


def _assert_same_dicts(a: dict, b: dict) -> None:
    assert set(a) == set(b), (sorted(set(a) ^ set(b)))[:6]
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), k


# ------------------------------------------------------------------------------------------------------------
# Reference implementations (test-local)


def _rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _meta_freqs_cis(head_dim: int, seqlen: int) -> torch.Tensor:
    freqs = 1.0 / (THETA ** (torch.arange(0, head_dim, 2).float() / head_dim))
    angles = torch.outer(torch.arange(seqlen).float(), freqs)
    return torch.polar(torch.ones_like(angles), angles)  # [T, head_dim/2] complex


def _meta_rope(x: torch.Tensor, cis: torch.Tensor) -> torch.Tensor:
    """Interleaved (adjacent pairs = one complex number) RoPE; x [T, heads, head_dim]."""
    t, n, d = x.shape
    xc = torch.view_as_complex(x.float().reshape(t, n, d // 2, 2))
    return torch.view_as_real(xc * cis[:, None, :]).reshape(t, n, d)


def _causal_attention(q, k, v):
    """q [T, H, d], k/v [T, H, d] (already repeated) -> [T, H*d]"""
    t, h, d = q.shape
    scores = torch.einsum("thd,shd->hts", q, k) / math.sqrt(d)
    scores = scores + torch.full((t, t), float("-inf")).triu(1)
    return torch.einsum("hts,shd->thd", scores.softmax(-1), v).reshape(t, h * d)


def meta_llama_logits(sd, shape: WavLLMDecoderShape, ids: torch.Tensor, prefix: str = P) -> torch.Tensor:
    """Meta-layout LLaMA forward (the layout WavLLM's llama.py stores), no LoRA; ids [T] -> logits [T, V]."""
    g = lambda k: sd[prefix + k]  # noqa: E731
    t, hd, nh, nkv = ids.shape[0], shape.head_dim, shape.num_heads, shape.num_kv_heads
    cis = _meta_freqs_cis(hd, t)
    h = g("tok_embeddings.weight")[ids]
    for i in range(shape.num_layers):
        L = f"layers.{i}."
        x = _rms(h, g(L + "attention_norm.weight"), META_EPS)
        q = _meta_rope((x @ g(L + "attention.wq.weight").T).view(t, nh, hd), cis)
        k = _meta_rope((x @ g(L + "attention.wk.weight").T).view(t, nkv, hd), cis)
        v = (x @ g(L + "attention.wv.weight").T).view(t, nkv, hd)
        rep = nh // nkv
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        h = h + _causal_attention(q, k, v) @ g(L + "attention.wo.weight").T
        x = _rms(h, g(L + "ffn_norm.weight"), META_EPS)
        ff = F.silu(x @ g(L + "feed_forward.w1.weight").T) * (x @ g(L + "feed_forward.w3.weight").T)
        h = h + ff @ g(L + "feed_forward.w2.weight").T
    return _rms(h, g("norm.weight"), META_EPS) @ g("output.weight").T


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def qwen_v1_logits(sd, num_layers: int, heads: int, ids: torch.Tensor) -> torch.Tensor:
    """Qwen v1 (QWenLMHeadModel) forward, short context (no logn / dynamic NTK); ids [T] -> logits [T, V]."""
    t = ids.shape[0]
    h = sd["transformer.wte.weight"][ids]
    d = h.shape[-1]
    hd = d // heads
    inv = 1.0 / (THETA ** (torch.arange(0, hd, 2).float() / hd))
    freqs = torch.outer(torch.arange(t).float(), inv)
    emb = torch.cat((freqs, freqs), dim=-1)[:, None, :]  # [T, 1, hd]
    cos, sin = emb.cos(), emb.sin()
    for i in range(num_layers):
        L = f"transformer.h.{i}."
        x = _rms(h, sd[L + "ln_1.weight"], QWEN_EPS)
        mixed = x @ sd[L + "attn.c_attn.weight"].T + sd[L + "attn.c_attn.bias"]
        q, k, v = (z.view(t, heads, hd) for z in mixed.split(d, dim=-1))
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        h = h + _causal_attention(q, k, v) @ sd[L + "attn.c_proj.weight"].T
        x = _rms(h, sd[L + "ln_2.weight"], QWEN_EPS)
        a1, a2 = x @ sd[L + "mlp.w1.weight"].T, x @ sd[L + "mlp.w2.weight"].T
        h = h + (a1 * F.silu(a2)) @ sd[L + "mlp.c_proj.weight"].T
    return _rms(h, sd["transformer.ln_f.weight"], QWEN_EPS) @ sd["lm_head.weight"].T


def _llama_config(shape: WavLLMDecoderShape):
    cfg = transformers.LlamaConfig(
        vocab_size=shape.vocab_size, hidden_size=shape.hidden_size, intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers, num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads, rms_norm_eps=META_EPS, max_position_embeddings=256,
        rope_parameters={"rope_type": "default", "rope_theta": THETA}, tie_word_embeddings=False,
    )
    cfg._attn_implementation = "eager"
    return cfg


def _hf_llama(shape: WavLLMDecoderShape, decoder_weights=None):
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(_llama_config(shape)).eval()
    if decoder_weights is not None:
        model.load_state_dict(decoder_weights, strict=True)
    return model


def _hf_qk_scores(model, wq, wk, x, layer=0):
    """Pre-softmax q.k scores with HF's own half-split rotary; wq/wk in HF layout; x [1, T, D]."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

    cfg = model.config
    nh, nkv = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = cfg.hidden_size // nh
    t = x.shape[1]
    q = (x @ wq.T).view(1, t, nh, hd).transpose(1, 2)
    k = (x @ wk.T).view(1, t, nkv, hd).transpose(1, 2)
    cos, sin = model.model.rotary_emb(x, torch.arange(t)[None])
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    k = repeat_kv(k, nh // nkv)
    return (q @ k.transpose(-1, -2))[0] / math.sqrt(hd)  # [H, T, T]


def _meta_qk_scores(wq, wk, x, nh, nkv):
    t, d = x.shape[1], x.shape[2]
    hd = d // nh
    cis = _meta_freqs_cis(hd, t)
    q = _meta_rope((x[0] @ wq.T).view(t, nh, hd), cis)
    k = _meta_rope((x[0] @ wk.T).view(t, nkv, hd), cis).repeat_interleave(nh // nkv, dim=1)
    return torch.einsum("thd,shd->hts", q, k) / math.sqrt(hd)


# ------------------------------------------------------------------------------------------------------------
# Rotary permutation


def test_permute_rotary_round_trip_and_matches_transformers_formula():
    g = torch.Generator().manual_seed(1)
    n_heads, head_dim, dim = 4, 8, 24
    w = torch.randn(n_heads * head_dim, dim, generator=g)
    hf = permute_rotary(w, n_heads)
    # transformers' convert_llama_weights_to_hf.permute, written out for this shape.
    expected = w.view(n_heads, head_dim // 2, 2, dim).transpose(1, 2).reshape(n_heads * head_dim, dim)
    assert torch.equal(hf, expected)
    assert not torch.equal(hf, w)
    assert torch.equal(unpermute_rotary(hf, n_heads), w)
    assert torch.equal(permute_rotary(unpermute_rotary(w, n_heads), n_heads), w)
    b = torch.randn(n_heads * head_dim, generator=g)
    assert torch.equal(permute_rotary(b, n_heads), permute_rotary(b[:, None], n_heads)[:, 0])
    assert torch.equal(unpermute_rotary(permute_rotary(b, n_heads), n_heads), b)
    s = torch.randn(3, n_heads * head_dim, generator=g)  # per-channel scale [B, out]
    assert torch.equal(permute_rotary(s, n_heads, dim=-1), permute_rotary(s.T, n_heads).T)
    assert torch.equal(unpermute_rotary(permute_rotary(s, n_heads, dim=-1), n_heads, dim=-1), s)
    with pytest.raises(ValueError):
        permute_rotary(torch.zeros(4 * 3, 2), 4)  # odd head_dim


def test_permutation_maps_meta_interleaved_rope_onto_hf_half_split_rope():
    """q.k scores of Meta-layout weights under interleaved complex RoPE equal those of the permuted weights
    under transformers' half-split RoPE -- the property the permutation exists for."""
    for shape in (SHAPE, SHAPE_GQA):
        model = _hf_llama(shape)
        attn = model.model.layers[0].self_attn
        wq_hf, wk_hf = attn.q_proj.weight.detach(), attn.k_proj.weight.detach()
        wq_meta = unpermute_rotary(wq_hf, shape.num_heads)
        wk_meta = unpermute_rotary(wk_hf, shape.num_kv_heads)
        x = torch.randn(1, 9, shape.hidden_size, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            hf = _hf_qk_scores(model, wq_hf, wk_hf, x)
            meta = _meta_qk_scores(wq_meta, wk_meta, x, shape.num_heads, shape.num_kv_heads)
            unpermuted = _hf_qk_scores(model, wq_meta, wk_meta, x)
        torch.testing.assert_close(meta, hf, rtol=1e-5, atol=1e-5)
        assert (unpermuted - meta).abs().max() > 1e-2  # without the permutation the scores differ


# ------------------------------------------------------------------------------------------------------------
# WavLLM


def test_wavllm_synthetic_uses_released_key_names():
    sd = wavllm_synthetic_state_dict(SHAPE)
    for key in (
        P + "tok_embeddings.weight", P + "layers.1.attention.wq.weight", P + "layers.0.feed_forward.w3.weight",
        P + "layers.0.attention_norm.weight", P + "layers.1.ffn_norm.weight", P + "norm.weight", P + "output.weight",
        P + "layers.0.attention.wq_lora_A", P + "layers.1.attention.wo_lora_B", P + "scale_fc_1.weight",
        P + "scale_fc_2.bias", P + "scale_weight_attention.weight", "audio_encoder.projector.weight",
        "wavlm_encoder.output_weights", "wavlm_audio_proj.weight",
    ):
        assert key in sd, key
    assert sd[P + "layers.0.attention.wq_lora_A"].shape == (64, 4)  # (dim, r) as in Attention_LoRA
    assert sd[P + "layers.0.attention.wq_lora_B"].shape == (4, 64)  # (r, dim)
    # Deterministic per seed.
    _assert_same_dicts(sd, wavllm_synthetic_state_dict(SHAPE))


def test_wavllm_conversion_groups_shapes_and_strict_load():
    sd = wavllm_synthetic_state_dict(SHAPE)
    groups = convert_wavllm_state_dict(sd, SHAPE)
    assert set(groups) == {"decoder", "lora", "prompt_scale", "audio", "unused"}
    model = _hf_llama(SHAPE)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in groups["decoder"].items()} == expected
    model.load_state_dict(groups["decoder"], strict=True)

    lora = groups["lora"]
    assert len(lora) == SHAPE.num_layers * 4 * 2
    d, r = SHAPE.hidden_size, SHAPE.lora_rank
    for i in range(SHAPE.num_layers):
        for p in "qkvo":
            assert lora[f"layers.{i}.{p}.lora_a"].shape == (r, d)
            assert lora[f"layers.{i}.{p}.lora_b"].shape == (d, r)
    assert set(groups["prompt_scale"]) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "pool.weight",
                                           "pool.bias"}
    assert torch.equal(groups["prompt_scale"]["fc1.weight"], sd[P + "scale_fc_1.weight"])
    assert torch.equal(groups["prompt_scale"]["pool.bias"], sd[P + "scale_weight_attention.bias"])
    audio_src = {k for k in sd if k.startswith(convert.WAVLLM_AUDIO_PREFIXES)}
    assert set(groups["audio"]) == audio_src
    assert all(torch.equal(groups["audio"][k], sd[k]) for k in audio_src)
    assert groups["unused"] == {}
    # Every input tensor is accounted for exactly once.
    assert sum(len(g) for g in groups.values()) == len(sd)
    # The fairseq checkpoint wrapper {"model": ...} is accepted as well.
    _assert_same_dicts(convert_wavllm_state_dict({"model": sd, "cfg": None}, SHAPE)["decoder"], groups["decoder"])


@pytest.mark.parametrize("shape", [SHAPE, SHAPE_GQA], ids=["mha", "gqa"])
def test_wavllm_converted_llama_logits_match_meta_reference(shape):
    sd = wavllm_synthetic_state_dict(shape, seed=3)
    model = _hf_llama(shape, convert_wavllm_state_dict(sd, shape)["decoder"])
    ids = torch.tensor([5, 17, 99, 3, 42, 42, 0, 64, 7, 100, 1])
    with torch.no_grad():
        hf = model(ids[None]).logits[0]
        ref = meta_llama_logits(sd, shape, ids)
    assert ref.abs().max() > 0.1
    torch.testing.assert_close(hf, ref, rtol=1e-5, atol=1e-5)


def test_wavllm_round_trip_is_bit_exact():
    sd = wavllm_synthetic_state_dict(SHAPE, seed=4)
    sd["criterion.something"] = torch.arange(3)
    _assert_same_dicts(wavllm_state_dict_from_hf(convert_wavllm_state_dict(sd, SHAPE), SHAPE), sd)
    half = {k: v.half() for k, v in sd.items()}
    _assert_same_dicts(wavllm_state_dict_from_hf(convert_wavllm_state_dict(half, SHAPE), SHAPE), half)
    sd_gqa = wavllm_synthetic_state_dict(SHAPE_GQA, seed=4)
    _assert_same_dicts(wavllm_state_dict_from_hf(convert_wavllm_state_dict(sd_gqa, SHAPE_GQA), SHAPE_GQA), sd_gqa)


def test_wavllm_lora_orientation_and_scale_follow_the_checkpoint_convention():
    """WavLLM (llama.py, Attention_LoRA): out = w(x) + (x @ w_lora_A @ w_lora_B) * s.unsqueeze(1), s [B, dim].
    Converted: F.linear(F.linear(x, lora_a), lora_b), in HF channel order; for q/k the scale is permuted too."""
    sd = wavllm_synthetic_state_dict(SHAPE, seed=5)
    groups = convert_wavllm_state_dict(sd, SHAPE)
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
    model = _hf_llama(SHAPE, groups["decoder"])
    xs = x[:1]
    with torch.no_grad():
        def meta_w(p):
            return (xs[0] @ sd[f"{P}layers.1.attention.w{p}_lora_A"] @ sd[f"{P}layers.1.attention.w{p}_lora_B"]) * s[0]

        t, nh, hd = xs.shape[1], SHAPE.num_heads, SHAPE.head_dim
        cis = _meta_freqs_cis(hd, t)
        q_m = _meta_rope((xs[0] @ sd[P + "layers.1.attention.wq.weight"].T + meta_w("q")).view(t, nh, hd), cis)
        k_m = _meta_rope((xs[0] @ sd[P + "layers.1.attention.wk.weight"].T + meta_w("k")).view(t, nh, hd), cis)
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
    sd = wavllm_synthetic_state_dict(SHAPE)
    gone = P + "layers.1.attention.wk.weight"
    del sd[gone]
    with pytest.raises(ValueError, match=re.escape(gone)) as err:
        convert_wavllm_state_dict(sd, SHAPE)
    assert "WavLLM" in str(err.value)
    with pytest.raises(ValueError, match="missing"):
        convert_wavllm_state_dict({"unrelated.weight": torch.zeros(1)}, SHAPE)


def test_wavllm_bad_shapes_and_partial_lora_raise():
    sd = wavllm_synthetic_state_dict(SHAPE)
    bad = dict(sd)
    bad[P + "layers.0.feed_forward.w1.weight"] = torch.zeros(95, 64)
    with pytest.raises(ValueError, match="feed_forward.w1"):
        convert_wavllm_state_dict(bad, SHAPE)
    partial = dict(sd)
    del partial[P + "layers.1.attention.wv_lora_B"]
    with pytest.raises(ValueError, match="wv_lora_B"):
        convert_wavllm_state_dict(partial, SHAPE)
    no_rank = WavLLMDecoderShape(**{**SHAPE.__dict__, "lora_rank": 0})
    with pytest.raises(ValueError, match="lora_rank"):
        convert_wavllm_state_dict(sd, no_rank)
    scale_partial = dict(sd)
    del scale_partial[P + "scale_weight_attention.bias"]
    with pytest.raises(ValueError, match="scale_weight_attention.bias"):
        convert_wavllm_state_dict(scale_partial, SHAPE)


def test_wavllm_unknown_keys_land_in_unused_and_wrappers_are_stripped():
    sd = wavllm_synthetic_state_dict(SHAPE)
    wrapped = {}
    for k, v in sd.items():  # as activation checkpointing / FSDP could name them
        k = k.replace(P + "layers.0.", P + "layers.0._checkpoint_wrapped_module.")
        k = k.replace("feed_forward.", "feed_forward._fsdp_wrapped_module.")
        wrapped[k] = v
    wrapped[P + "some_adapter.weight"] = torch.ones(2)
    wrapped["decoder.version"] = torch.tensor([3.0])
    groups = convert_wavllm_state_dict(wrapped, SHAPE)
    assert set(groups["unused"]) == {P + "some_adapter.weight", "decoder.version"}
    _assert_same_dicts(groups["decoder"], convert_wavllm_state_dict(sd, SHAPE)["decoder"])


def test_wavllm_without_lora_or_scale_network_and_shape_inference():
    sd = wavllm_synthetic_state_dict(SHAPE_GQA)
    sd = {k: v for k, v in sd.items() if "scale_" not in k}
    groups = convert_wavllm_state_dict(sd, SHAPE_GQA)
    assert groups["lora"] == {} and groups["prompt_scale"] == {}
    _assert_same_dicts(wavllm_state_dict_from_hf(groups, SHAPE_GQA), sd)
    assert convert.infer_wavllm_shape(sd, head_dim=16) == SHAPE_GQA
    assert convert.infer_wavllm_shape({"model": wavllm_synthetic_state_dict(SHAPE)}, head_dim=16) == SHAPE
    # A bare Meta LLaMA state dict (no gpt_model.model_llama. prefix) converts too.
    bare = {k[len(P):]: v for k, v in sd.items() if k.startswith(P)}
    _assert_same_dicts(convert_wavllm_state_dict(bare, SHAPE_GQA)["decoder"], groups["decoder"])


# ------------------------------------------------------------------------------------------------------------
# Qwen-Audio (v1)


def _qwen2_model(decoder_weights=None):
    cfg = transformers.Qwen2Config(
        vocab_size=QWEN["vocab"], hidden_size=QWEN["hidden"], intermediate_size=QWEN["intermediate"],
        num_hidden_layers=QWEN["num_layers"], num_attention_heads=QWEN["heads"], num_key_value_heads=QWEN["heads"],
        rms_norm_eps=QWEN_EPS, max_position_embeddings=256, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": THETA},
    )
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = transformers.Qwen2ForCausalLM(cfg).eval()
    if decoder_weights is not None:
        model.load_state_dict(decoder_weights, strict=True)
    return model


def _qwen_sd(seed=0):
    return qwen_audio_synthetic_state_dict(QWEN["num_layers"], QWEN["hidden"], QWEN["heads"], QWEN["intermediate"],
                                           QWEN["vocab"], seed=seed)


def test_qwen_audio_conversion_loads_and_matches_v1_reference():
    sd = _qwen_sd(seed=7)
    groups = convert_qwen_audio_state_dict(sd, QWEN["num_layers"], QWEN["heads"])
    model = _qwen2_model()
    assert {k: v.shape for k, v in groups["decoder"].items()} == {k: v.shape for k, v in model.state_dict().items()}
    model.load_state_dict(groups["decoder"], strict=True)
    assert groups["unused"] == {}
    assert "blocks.1.attn.query.weight" in groups["audio"] and "audio_bos_eos_token.weight" in groups["audio"]
    assert "blocks.0.attn.key.bias" not in groups["audio"]  # v1's key projection has no bias
    assert len(groups["audio"]) == sum(k.startswith("transformer.audio.") for k in sd)
    # c_attn splits in q, k, v order; w2 is the gate (through silu), w1 the up projection.
    c_attn = sd["transformer.h.1.attn.c_attn.weight"]
    assert torch.equal(groups["decoder"]["model.layers.1.self_attn.k_proj.weight"], c_attn[64:128])
    assert torch.equal(groups["decoder"]["model.layers.1.mlp.gate_proj.weight"], sd["transformer.h.1.mlp.w2.weight"])

    ids = torch.tensor([3, 77, 12, 12, 100, 0, 45, 8, 61])
    with torch.no_grad():
        hf = model(ids[None]).logits[0]
        ref = qwen_v1_logits(sd, QWEN["num_layers"], QWEN["heads"], ids)
        # Single decoder layer as well (HF Qwen2DecoderLayer vs the v1 block).
        layer = model.model.layers[0]
        x = torch.randn(1, ids.shape[0], QWEN["hidden"], generator=torch.Generator().manual_seed(8))
        pos = model.model.rotary_emb(x, torch.arange(ids.shape[0])[None])
        mask = torch.full((ids.shape[0],) * 2, float("-inf")).triu(1)[None, None]
        out = layer(x, attention_mask=mask, position_embeddings=pos)
        out = out[0] if isinstance(out, tuple) else out
        ref_layer = _qwen_v1_block(sd, 0, x[0], QWEN["heads"])
    assert ref.abs().max() > 0.1
    torch.testing.assert_close(hf, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[0], ref_layer, rtol=1e-5, atol=1e-5)


def _qwen_v1_block(sd, i, h, heads):
    t, d = h.shape
    hd = d // heads
    inv = 1.0 / (THETA ** (torch.arange(0, hd, 2).float() / hd))
    emb = torch.cat([torch.outer(torch.arange(t).float(), inv)] * 2, dim=-1)[:, None, :]
    L = f"transformer.h.{i}."
    x = _rms(h, sd[L + "ln_1.weight"], QWEN_EPS)
    mixed = x @ sd[L + "attn.c_attn.weight"].T + sd[L + "attn.c_attn.bias"]
    q, k, v = (z.view(t, heads, hd) for z in mixed.split(d, -1))
    q, k = q * emb.cos() + _rotate_half(q) * emb.sin(), k * emb.cos() + _rotate_half(k) * emb.sin()
    h = h + _causal_attention(q, k, v) @ sd[L + "attn.c_proj.weight"].T
    x = _rms(h, sd[L + "ln_2.weight"], QWEN_EPS)
    return h + ((x @ sd[L + "mlp.w1.weight"].T) * F.silu(x @ sd[L + "mlp.w2.weight"].T)) @ sd[L + "mlp.c_proj.weight"].T


def test_qwen_audio_round_trip_is_bit_exact():
    sd = _qwen_sd(seed=9)
    sd["transformer.h.0.attn.c_proj.bias"] = torch.zeros(QWEN["hidden"])  # no_bias=false but zero: kept aside
    sd["some.other.buffer"] = torch.arange(4)
    groups = convert_qwen_audio_state_dict(sd, QWEN["num_layers"], QWEN["heads"])
    assert set(groups["unused"]) == {"transformer.h.0.attn.c_proj.bias", "some.other.buffer"}
    _assert_same_dicts(qwen_audio_state_dict_from_hf(groups, QWEN["num_layers"], QWEN["heads"]), sd)
    bf = {k: v.bfloat16() if v.is_floating_point() else v for k, v in sd.items()}
    _assert_same_dicts(qwen_audio_state_dict_from_hf(convert_qwen_audio_state_dict(bf, 2, 4), 2), bf)


def test_qwen_audio_missing_key_and_nonzero_bias_raise():
    sd = _qwen_sd()
    gone = "transformer.h.1.mlp.w2.weight"
    missing = {k: v for k, v in sd.items() if k != gone}
    with pytest.raises(ValueError, match=re.escape(gone)) as err:
        convert_qwen_audio_state_dict(missing, QWEN["num_layers"], QWEN["heads"])
    assert "Qwen-Audio" in str(err.value)
    biased = dict(sd)
    biased["transformer.h.1.mlp.c_proj.bias"] = torch.ones(QWEN["hidden"])
    with pytest.raises(ValueError, match="mlp.c_proj.bias"):
        convert_qwen_audio_state_dict(biased, QWEN["num_layers"], QWEN["heads"])
    with pytest.raises(ValueError):
        convert_qwen_audio_state_dict(sd, QWEN["num_layers"], 5)  # 64 is not 5 x an even head_dim
