"""Random checkpoints with the released key names, so the tiny presets (tiny-wavllm, tiny-qwen-audio) are
built through the same converters a real checkpoint goes through, offline. Deterministic per seed; fp32.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fastadasp.core.shapes import DecoderArgs
from fastadasp.models.qwen_audio_checkpoint import QWEN_AUDIO_PREFIX
from fastadasp.models.wavllm_checkpoint import WAVLLM_DECODER_PREFIX, decoder_key_map, lora_key_map

__all__ = ["wavllm_synthetic_state_dict", "qwen_audio_synthetic_state_dict"]


def _randn(gen: torch.Generator, *size: int, std: float = 1.0) -> Tensor:
    return torch.randn(*size, generator=gen) * std


def _linear_w(gen: torch.Generator, out_f: int, in_f: int) -> Tensor:
    return _randn(gen, out_f, in_f, std=in_f ** -0.5)


def _norm_w(gen: torch.Generator, n: int) -> Tensor:
    return 1.0 + _randn(gen, n, std=0.1)


def wavllm_synthetic_state_dict(args: DecoderArgs, lora_rank: int, seed: int = 0, scale_inner: int | None = None,
                                ) -> dict[str, Tensor]:
    """A random fp32 WavLLM state dict with the released key names: Meta-layout decoder under
    ``gpt_model.model_llama.``, prompt-aware LoRA of rank ``lora_rank`` (none at 0; non-zero B, so it
    matters), the prompt scale network (inner width ``scale_inner``, default ``hidden_size // 4`` as
    4096 -> 1024 in the release) and a few audio front-end keys of each branch (tiny shapes)."""
    args.validate()
    gen = torch.Generator().manual_seed(seed)
    p, d = WAVLLM_DECODER_PREFIX, args.hidden_size
    sd: dict[str, Tensor] = {p + "tok_embeddings.weight": _randn(gen, args.vocab_size, d)}
    for src, _, expected, _ in decoder_key_map(args)[1:]:
        sd[p + src] = _norm_w(gen, expected[0]) if len(expected) == 1 else _linear_w(gen, *expected)
    if lora_rank:
        r = lora_rank
        for a_key, b_key, _, n_in, n_out, _ in lora_key_map(args):
            sd[p + a_key] = _randn(gen, n_in, r, std=n_in ** -0.5)
            sd[p + b_key] = _randn(gen, r, n_out, std=0.5 * r ** -0.5)
    inner = scale_inner or max(d // 4, 1)
    sd[p + "scale_fc_1.weight"], sd[p + "scale_fc_1.bias"] = _linear_w(gen, inner, d), _randn(gen, inner, std=0.1)
    sd[p + "scale_fc_2.weight"], sd[p + "scale_fc_2.bias"] = _linear_w(gen, d, inner), _randn(gen, d, std=0.1)
    sd[p + "scale_weight_attention.weight"] = _linear_w(gen, 1, d)
    sd[p + "scale_weight_attention.bias"] = _randn(gen, 1, std=0.1)
    # A few front-end tensors per branch (real widths: Whisper 1280, WavLM 768, adapters 1024/512, 2048 out).
    a = 8
    for branch, feat in (("audio_encoder", a), ("wavlm_encoder", a)):
        sd[f"{branch}.subsample.conv_layers.0.weight"] = _randn(gen, 2 * a, feat, 3, std=0.2)
        sd[f"{branch}.subsample.conv_layers.0.bias"] = _randn(gen, 2 * a, std=0.1)
        sd[f"{branch}.adapter.down_layer.weight"] = _linear_w(gen, a // 2, a)
        sd[f"{branch}.adapter.up_layer.weight"] = _linear_w(gen, a, a // 2)
        sd[f"{branch}.adapter.layer_norm.weight"] = _norm_w(gen, a)
        sd[f"{branch}.projector.weight"] = _linear_w(gen, 2 * a, a)
        sd[f"{branch}.projector.bias"] = _randn(gen, 2 * a, std=0.1)
    sd["audio_encoder.model.conv1.weight"] = _randn(gen, a, 4, 3, std=0.2)
    sd["audio_encoder.model.layers.0.self_attn.q_proj.weight"] = _linear_w(gen, a, a)
    sd["wavlm_encoder.model.feature_extractor.conv_layers.0.conv.weight"] = _randn(gen, a, 1, 10, std=0.2)
    sd["wavlm_encoder.output_weights"] = torch.ones(13)
    sd["wavlm_audio_proj.weight"], sd["wavlm_audio_proj.bias"] = _linear_w(gen, d, 4 * a), _randn(gen, d, std=0.1)
    sd["audio_proj.weight"], sd["audio_proj.bias"] = _linear_w(gen, d, 2 * a), _randn(gen, d, std=0.1)
    return sd


def qwen_audio_synthetic_state_dict(num_layers: int, hidden: int, heads: int, intermediate: int, vocab: int,
                                    seed: int = 0) -> dict[str, Tensor]:
    """A random fp32 Qwen-Audio v1 state dict with the released key names. ``intermediate`` is the MLP width
    (the width of w1/w2, i.e. v1's ``config.intermediate_size // 2``). Includes a tiny ``transformer.audio``
    encoder (2 blocks) so the audio routing is exercised."""
    if hidden % heads or (hidden // heads) % 2:
        raise ValueError(f"hidden {hidden} is not heads {heads} x an even head_dim")
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, Tensor] = {"transformer.wte.weight": _randn(gen, vocab, hidden)}
    for i in range(num_layers):
        h = f"transformer.h.{i}."
        sd[h + "ln_1.weight"] = _norm_w(gen, hidden)
        sd[h + "attn.c_attn.weight"] = _linear_w(gen, 3 * hidden, hidden)
        sd[h + "attn.c_attn.bias"] = _randn(gen, 3 * hidden, std=0.1)
        sd[h + "attn.c_proj.weight"] = _linear_w(gen, hidden, hidden)
        sd[h + "ln_2.weight"] = _norm_w(gen, hidden)
        sd[h + "mlp.w1.weight"] = _linear_w(gen, intermediate, hidden)
        sd[h + "mlp.w2.weight"] = _linear_w(gen, intermediate, hidden)
        sd[h + "mlp.c_proj.weight"] = _linear_w(gen, hidden, intermediate)
    sd["transformer.ln_f.weight"] = _norm_w(gen, hidden)
    sd["lm_head.weight"] = _linear_w(gen, vocab, hidden)
    # Whisper-style audio encoder (real: n_mels 80, n_state 1280, 32 blocks, n_ctx 1500, output_dim 4096).
    a, mels, ctx = 16, 8, 20
    au = QWEN_AUDIO_PREFIX
    sd[au + "conv1.weight"], sd[au + "conv1.bias"] = _randn(gen, a, mels, 3, std=0.2), _randn(gen, a, std=0.1)
    sd[au + "conv2.weight"], sd[au + "conv2.bias"] = _randn(gen, a, a, 3, std=0.1), _randn(gen, a, std=0.1)
    sd[au + "positional_embedding"] = _randn(gen, ctx, a, std=0.5)
    for b in range(2):
        blk = f"{au}blocks.{b}."
        for n in ("query", "key", "value", "out"):
            sd[blk + f"attn.{n}.weight"] = _linear_w(gen, a, a)
            if n != "key":
                sd[blk + f"attn.{n}.bias"] = _randn(gen, a, std=0.1)
        for ln in ("attn_ln", "mlp_ln"):
            sd[blk + f"{ln}.weight"], sd[blk + f"{ln}.bias"] = _norm_w(gen, a), _randn(gen, a, std=0.1)
        sd[blk + "mlp.0.weight"], sd[blk + "mlp.0.bias"] = _linear_w(gen, 4 * a, a), _randn(gen, 4 * a, std=0.1)
        sd[blk + "mlp.2.weight"], sd[blk + "mlp.2.bias"] = _linear_w(gen, a, 4 * a), _randn(gen, a, std=0.1)
    sd[au + "ln_post.weight"], sd[au + "ln_post.bias"] = _norm_w(gen, a), _randn(gen, a, std=0.1)
    sd[au + "proj.weight"], sd[au + "proj.bias"] = _linear_w(gen, hidden, a), _randn(gen, hidden, std=0.1)
    sd[au + "audio_bos_eos_token.weight"] = _randn(gen, 2, hidden, std=0.5)
    return sd
