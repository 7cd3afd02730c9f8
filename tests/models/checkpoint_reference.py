"""Small reference implementations written here from the released models' conventions (Meta LLaMA with
interleaved complex RoPE as in WavLLM's llama.py; Qwen v1 blocks as in Qwen-Audio's modeling_qwen.py), the
decoder shapes the converter tests use, and helpers shared by tests/models/test_*checkpoint.py."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import transformers

from fastadasp.core.shapes import DecoderArgs
from fastadasp.models.synthetic import qwen_audio_synthetic_state_dict
from fastadasp.models.wavllm_checkpoint import WAVLLM_DECODER_PREFIX as P

SHAPE = DecoderArgs(vocab_size=101, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=4, head_dim=16,
                    intermediate_size=96)
RANK = 4  # SHAPE's LoRA rank
SHAPE_GQA = DecoderArgs(vocab_size=101, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
                        intermediate_size=96)  # no LoRA
META_EPS = 1e-6  # WavLLM's ModelArgs.norm_eps
QWEN_EPS = 1e-5  # Qwen-Audio config.json layer_norm_epsilon
THETA = 10000.0
QWEN = dict(num_layers=2, hidden=64, heads=4, intermediate=96, vocab=101)


def assert_same_dicts(a: dict, b: dict) -> None:
    assert set(a) == set(b), (sorted(set(a) ^ set(b)))[:6]
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), k


def rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def meta_freqs_cis(head_dim: int, seqlen: int) -> torch.Tensor:
    freqs = 1.0 / (THETA ** (torch.arange(0, head_dim, 2).float() / head_dim))
    angles = torch.outer(torch.arange(seqlen).float(), freqs)
    return torch.polar(torch.ones_like(angles), angles)  # [T, head_dim/2] complex


def meta_rope(x: torch.Tensor, cis: torch.Tensor) -> torch.Tensor:
    """Interleaved (adjacent pairs = one complex number) RoPE; x [T, heads, head_dim]."""
    t, n, d = x.shape
    xc = torch.view_as_complex(x.float().reshape(t, n, d // 2, 2))
    return torch.view_as_real(xc * cis[:, None, :]).reshape(t, n, d)


def causal_attention(q, k, v):
    """q [T, H, d], k/v [T, H, d] (already repeated) -> [T, H*d]"""
    t, h, d = q.shape
    scores = torch.einsum("thd,shd->hts", q, k) / math.sqrt(d)
    scores = scores + torch.full((t, t), float("-inf")).triu(1)
    return torch.einsum("hts,shd->thd", scores.softmax(-1), v).reshape(t, h * d)


def meta_llama_logits(sd, shape: DecoderArgs, ids: torch.Tensor, prefix: str = P) -> torch.Tensor:
    """Meta-layout LLaMA forward (the layout WavLLM's llama.py stores), no LoRA; ids [T] -> logits [T, V]."""
    g = lambda k: sd[prefix + k]  # noqa: E731
    t, hd, nh, nkv = ids.shape[0], shape.head_dim, shape.num_heads, shape.num_kv_heads
    cis = meta_freqs_cis(hd, t)
    h = g("tok_embeddings.weight")[ids]
    for i in range(shape.num_layers):
        L = f"layers.{i}."
        x = rms(h, g(L + "attention_norm.weight"), META_EPS)
        q = meta_rope((x @ g(L + "attention.wq.weight").T).view(t, nh, hd), cis)
        k = meta_rope((x @ g(L + "attention.wk.weight").T).view(t, nkv, hd), cis)
        v = (x @ g(L + "attention.wv.weight").T).view(t, nkv, hd)
        rep = nh // nkv
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        h = h + causal_attention(q, k, v) @ g(L + "attention.wo.weight").T
        x = rms(h, g(L + "ffn_norm.weight"), META_EPS)
        ff = F.silu(x @ g(L + "feed_forward.w1.weight").T) * (x @ g(L + "feed_forward.w3.weight").T)
        h = h + ff @ g(L + "feed_forward.w2.weight").T
    return rms(h, g("norm.weight"), META_EPS) @ g("output.weight").T


def rotate_half(x):
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
        x = rms(h, sd[L + "ln_1.weight"], QWEN_EPS)
        mixed = x @ sd[L + "attn.c_attn.weight"].T + sd[L + "attn.c_attn.bias"]
        q, k, v = (z.view(t, heads, hd) for z in mixed.split(d, dim=-1))
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        h = h + causal_attention(q, k, v) @ sd[L + "attn.c_proj.weight"].T
        x = rms(h, sd[L + "ln_2.weight"], QWEN_EPS)
        a1, a2 = x @ sd[L + "mlp.w1.weight"].T, x @ sd[L + "mlp.w2.weight"].T
        h = h + (a1 * F.silu(a2)) @ sd[L + "mlp.c_proj.weight"].T
    return rms(h, sd["transformer.ln_f.weight"], QWEN_EPS) @ sd["lm_head.weight"].T


def llama_config(shape: DecoderArgs):
    cfg = transformers.LlamaConfig(
        vocab_size=shape.vocab_size, hidden_size=shape.hidden_size, intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers, num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads, rms_norm_eps=META_EPS, max_position_embeddings=256,
        rope_parameters={"rope_type": "default", "rope_theta": THETA}, tie_word_embeddings=False,
    )
    cfg._attn_implementation = "eager"
    return cfg


def hf_llama(shape: DecoderArgs, decoder_weights=None):
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(llama_config(shape)).eval()
    if decoder_weights is not None:
        model.load_state_dict(decoder_weights, strict=True)
    return model


def hf_qk_scores(model, wq, wk, x, layer=0):
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


def meta_qk_scores(wq, wk, x, nh, nkv):
    t, d = x.shape[1], x.shape[2]
    hd = d // nh
    cis = meta_freqs_cis(hd, t)
    q = meta_rope((x[0] @ wq.T).view(t, nh, hd), cis)
    k = meta_rope((x[0] @ wk.T).view(t, nkv, hd), cis).repeat_interleave(nh // nkv, dim=1)
    return torch.einsum("thd,shd->hts", q, k) / math.sqrt(hd)


def qwen2_model(decoder_weights=None):
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


def qwen_sd(seed=0):
    return qwen_audio_synthetic_state_dict(QWEN["num_layers"], QWEN["hidden"], QWEN["heads"], QWEN["intermediate"],
                                           QWEN["vocab"], seed=seed)


def qwen_v1_block(sd, i, h, heads):
    t, d = h.shape
    hd = d // heads
    inv = 1.0 / (THETA ** (torch.arange(0, hd, 2).float() / hd))
    emb = torch.cat([torch.outer(torch.arange(t).float(), inv)] * 2, dim=-1)[:, None, :]
    L = f"transformer.h.{i}."
    x = rms(h, sd[L + "ln_1.weight"], QWEN_EPS)
    mixed = x @ sd[L + "attn.c_attn.weight"].T + sd[L + "attn.c_attn.bias"]
    q, k, v = (z.view(t, heads, hd) for z in mixed.split(d, -1))
    q, k = q * emb.cos() + rotate_half(q) * emb.sin(), k * emb.cos() + rotate_half(k) * emb.sin()
    h = h + causal_attention(q, k, v) @ sd[L + "attn.c_proj.weight"].T
    x = rms(h, sd[L + "ln_2.weight"], QWEN_EPS)
    return h + ((x @ sd[L + "mlp.w1.weight"].T) * F.silu(x @ sd[L + "mlp.w2.weight"].T)) @ sd[L + "mlp.c_proj.weight"].T

