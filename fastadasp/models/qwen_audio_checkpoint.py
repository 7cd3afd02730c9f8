"""Qwen-Audio (v1) checkpoint keys: the released state dict <-> Hugging Face ``Qwen2ForCausalLM`` + our groups.

Pure state-dict functions (torch + stdlib only). Every input key ends up in exactly one output group; keys
the converter does not recognise land in ``"unused"`` and are never dropped. Tensors are moved, split or
concatenated only, so every conversion is bit-exact and has an exact inverse.

Sources the key names were read from (public code; nothing here is copied from it)
----------------------------------------------------------------------------------
Qwen-Audio v1 -- ``QwenLM/Qwen-Audio`` ``modeling_qwen.py``, ``audio.py``, ``config.json`` (and the FastAdaSP
reference ``yichen14/FastAdaSP`` ``Qwen-Audio/modeling_qwen.py``, same names):
``transformer.wte``, ``transformer.h.{i}.ln_1`` / ``ln_2`` (RMSNorm, ``layer_norm_epsilon`` 1e-5),
``attn.c_attn`` (fused ``Linear(D, 3D)`` with bias; ``split(D, dim=-1)`` -> q, k, v), ``attn.c_proj``
(bias only when ``no_bias`` is false; the release has ``no_bias: true``), ``mlp.w1`` / ``mlp.w2`` /
``mlp.c_proj`` (``c_proj(w1(x) * silu(w2(x)))``, width ``intermediate_size // 2``), ``transformer.ln_f``,
``lm_head``. RoPE is half-split (``_rotate_half`` over ``(j d)`` with ``cat(freqs, freqs)``), the same as
HF, so no permutation; ``rotary_emb.inv_freq`` is a non-persistent buffer (not in checkpoints).
Audio encoder ``transformer.audio.*``: ``conv1``, ``conv2``, ``positional_embedding`` (buffer),
``blocks.{i}.attn.{query,key,value,out}`` (``key`` has no bias), ``blocks.{i}.attn_ln``,
``blocks.{i}.mlp.{0,2}``, ``blocks.{i}.mlp_ln``, ``ln_post``, ``proj``, ``audio_bos_eos_token``.
Not representable in Qwen2 and only active past ``seq_length`` = 2048 tokens: v1's ``use_logn_attn`` query
scaling and ``use_dynamic_ntk`` RoPE base scaling.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from fastadasp.models.checkpoint import check_shapes, missing_keys_error, normalize_keys

__all__ = ["QWEN_AUDIO_PREFIX", "convert_qwen_audio_state_dict", "qwen_audio_state_dict_from_hf"]

QWEN_AUDIO_PREFIX = "transformer.audio."
_QWEN_LAYOUT = "Qwen-Audio v1 (QWenLMHeadModel: transformer.h.{i}.attn.c_attn.weight, ...)"


def _qwen_plain_map(num_layers: int):
    """(v1 key, HF Qwen2 key) pairs that move unchanged."""
    entries = [("transformer.wte.weight", "model.embed_tokens.weight")]
    for i in range(num_layers):
        v1, hf = f"transformer.h.{i}.", f"model.layers.{i}."
        entries += [
            (v1 + "ln_1.weight", hf + "input_layernorm.weight"),
            (v1 + "attn.c_proj.weight", hf + "self_attn.o_proj.weight"),
            (v1 + "ln_2.weight", hf + "post_attention_layernorm.weight"),
            (v1 + "mlp.w2.weight", hf + "mlp.gate_proj.weight"),  # a2 = w2(x) goes through silu
            (v1 + "mlp.w1.weight", hf + "mlp.up_proj.weight"),
            (v1 + "mlp.c_proj.weight", hf + "mlp.down_proj.weight"),
        ]
    entries += [("transformer.ln_f.weight", "model.norm.weight"), ("lm_head.weight", "lm_head.weight")]
    return entries


def _qwen_fused(num_layers: int):
    """(v1 c_attn key, [q, k, v] HF keys) for weights and biases."""
    out = []
    for i in range(num_layers):
        v1, hf = f"transformer.h.{i}.attn.c_attn.", f"model.layers.{i}.self_attn."
        for p in ("weight", "bias"):
            out.append((v1 + p, [f"{hf}{n}_proj.{p}" for n in "qkv"]))
    return out


# Biases that exist in v1 only when config.no_bias is false; Qwen2 has none there.
_QWEN_OPTIONAL_BIASES = ("attn.c_proj.bias", "mlp.w1.bias", "mlp.w2.bias", "mlp.c_proj.bias")


def convert_qwen_audio_state_dict(sd: Mapping[str, Tensor], num_layers: int, num_heads: int,
                                  ) -> dict[str, dict[str, Tensor]]:
    """A Qwen-Audio v1 state dict -> ``"decoder"`` (``Qwen2ForCausalLM`` keys: c_attn split into q/k/v weight and
    bias, c_proj -> o_proj, w2 -> gate_proj, w1 -> up_proj, mlp.c_proj -> down_proj; no RoPE permutation),
    ``"audio"`` (``transformer.audio.*`` with that prefix stripped) and ``"unused"`` (everything else, plus
    all-zero v1 biases that Qwen2 has no slot for). Non-zero such biases raise ValueError."""
    rest = normalize_keys(sd)
    groups: dict[str, dict[str, Tensor]] = {g: {} for g in ("decoder", "audio", "unused")}
    required = [src for src, _ in _qwen_plain_map(num_layers)] + [src for src, _ in _qwen_fused(num_layers)]
    missing = [k for k in required if k not in rest]
    if missing:
        raise missing_keys_error(missing, _QWEN_LAYOUT)
    hidden = rest["transformer.wte.weight"].shape[1]
    if hidden % num_heads or (hidden // num_heads) % 2:
        raise ValueError(f"hidden_size {hidden} is not num_heads {num_heads} x an even head_dim")
    bad = []
    for src, dsts in _qwen_fused(num_layers):
        t = rest.pop(src)
        if t.shape[0] != 3 * hidden:
            bad.append(f"{src} {tuple(t.shape)}: first dim != 3 x {hidden}")
            continue
        for dst, part in zip(dsts, t.split(hidden, dim=0)):
            groups["decoder"][dst] = part.contiguous()
    check_shapes(bad, _QWEN_LAYOUT)
    for src, dst in _qwen_plain_map(num_layers):
        groups["decoder"][dst] = rest.pop(src)
    for i in range(num_layers):
        for suffix in _QWEN_OPTIONAL_BIASES:
            key = f"transformer.h.{i}.{suffix}"
            if key in rest:
                if torch.count_nonzero(rest[key]):
                    raise ValueError(f"{key} is non-zero (no_bias=false checkpoint); the Qwen2 layout has no such bias")
                groups["unused"][key] = rest.pop(key)
    for key in list(rest):
        if key.startswith(QWEN_AUDIO_PREFIX):
            groups["audio"][key[len(QWEN_AUDIO_PREFIX):]] = rest.pop(key)
        else:
            groups["unused"][key] = rest.pop(key)
    return groups


def qwen_audio_state_dict_from_hf(groups: Mapping[str, Mapping[str, Tensor]], num_layers: int,
                                  num_heads: int | None = None) -> dict[str, Tensor]:
    """The exact inverse of ``convert_qwen_audio_state_dict``."""
    dec = groups["decoder"]
    needed = [dst for _, dst in _qwen_plain_map(num_layers)] + [d for _, ds in _qwen_fused(num_layers) for d in ds]
    missing = [k for k in needed if k not in dec]
    if missing:
        raise missing_keys_error(missing, "Hugging Face Qwen2ForCausalLM")
    extra = set(dec) - set(needed)
    if extra:
        raise ValueError(f"unexpected decoder keys: {sorted(extra)[:6]}")
    if num_heads is not None and dec["model.embed_tokens.weight"].shape[1] % num_heads:
        raise ValueError("hidden_size is not a multiple of num_heads")
    out: dict[str, Tensor] = {src: dec[dst] for src, dst in _qwen_plain_map(num_layers)}
    for src, dsts in _qwen_fused(num_layers):
        out[src] = torch.cat([dec[d] for d in dsts], dim=0)
    for key, t in groups.get("audio", {}).items():
        out[QWEN_AUDIO_PREFIX + key] = t
    for key, t in groups.get("unused", {}).items():
        if key in out:
            raise ValueError(f"key {key!r} appears twice")
        out[key] = t
    return out
