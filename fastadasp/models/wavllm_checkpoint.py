"""WavLLM checkpoint keys: the released fairseq state dict <-> Hugging Face ``LlamaForCausalLM`` + our groups.

Pure state-dict functions (torch + stdlib only). Every input key ends up in exactly one output group; keys
the converter does not recognise land in ``"unused"`` and are never dropped. Tensors are moved, transposed or
row-permuted only, so every conversion is bit-exact and has an exact inverse. The decoder's dimensions are a
``DecoderArgs`` (fastadasp/core/shapes.py); the prompt-aware LoRA rank is passed beside it.

Sources the key names were read from (public code; nothing here is copied from it)
----------------------------------------------------------------------------------
WavLLM -- repository ``microsoft/SpeechT5``, folder ``WavLLM/``:

WavLLM -- repository ``microsoft/SpeechT5``, folder ``WavLLM/``:

* ``WavLLM/wavllm/models/speechllm_model.py``: ``SpeechLLMModel`` (fairseq; the checkpoint is a fairseq
  ``checkpoint*.pt`` whose weights sit under ``state["model"]``) owns ``audio_encoder`` (Whisper branch),
  ``wavlm_encoder`` (WavLM branch), ``wavlm_audio_proj = nn.Linear(4096, 4096)``,
  ``audio_proj = nn.Linear(2048, 4096)`` (built, not used by inference) and ``gpt_model`` (``LLaMADecoder``),
  whose LLaMA is the attribute ``model_llama``. Decoder keys are therefore ``gpt_model.model_llama.*``.
* ``WavLLM/wavllm/models/llama.py``: Meta's original LLaMA layout -- ``tok_embeddings``,
  ``layers.{i}.attention.{wq,wk,wv,wo}.weight`` (no bias), ``layers.{i}.feed_forward.{w1,w2,w3}.weight``
  with ``w2(silu(w1(x)) * w3(x))``, ``layers.{i}.attention_norm`` / ``ffn_norm`` (RMSNorm, ``norm_eps``
  default 1e-6, which LLaMADecoder never overrides), ``norm``, ``output``; interleaved (complex-pair) RoPE
  (``view_as_complex(x.reshape(..., -1, 2))``), theta 10000.
  Prompt-aware LoRA (``Attention_LoRA``) stores bare parameters, no ``.weight`` suffix:
  ``layers.{i}.attention.w{q,k,v,o}_lora_A`` of shape ``(dim, r)`` and ``..._lora_B`` of shape ``(r, dim)``;
  the forward is ``wq(x) + (x @ wq_lora_A @ wq_lora_B) * s.unsqueeze(1)`` (likewise k, v; for o the input is
  the attention output), with ``s = pooled_scale_output`` of shape ``(B, 4096)``. In that (inference) path
  the LoRA ``scaling = alpha / r`` is NOT applied. The scale network lives on ``LLAMA`` itself:
  ``scale_fc_1 = Linear(4096, 1024)``, ``scale_fc_2 = Linear(1024, 4096)``,
  ``scale_weight_attention = Linear(4096, 1)``; ``h`` = the last layer's output of a LoRA-free pass over the
  prompt (before the final ``norm``), ``o = scale_fc_2(gelu(scale_fc_1(h)))``,
  ``w = softmax(scale_weight_attention(o), dim=1)`` (one weight per prompt position),
  ``s = clamp(relu((o * w).sum(1)), max=3)``.
* ``WavLLM/wavllm/models/whisper_encoder.py``: ``audio_encoder.model.*`` (a transformers ``WhisperEncoder``),
  ``audio_encoder.adapter.{down_layer,up_layer,layer_norm}.*``, ``audio_encoder.projector.*`` (1024->2048),
  ``audio_encoder.subsample.conv_layers.{0,1}.*`` (GLU conv subsampler).
* ``WavLLM/wavllm/models/wavlm.py``: ``wavlm_encoder.model.*`` (a transformers ``WavLMModel``),
  ``wavlm_encoder.{adapter,projector,subsample}.*`` as above, ``wavlm_encoder.output_weights`` (13 layer
  weights). ``WavLLM/wavllm/inference/sequence_generator.py``: the two 2048-d streams are concatenated and
  passed through ``wavlm_audio_proj``.
  Activation-checkpoint / FSDP wrappers can insert ``_checkpoint_wrapped_module.`` / ``_fsdp_wrapped_module.``
  segments; they are removed before matching.
  UNVERIFIED: no released ``.pt`` was inspected (none is reachable offline); the key names above are derived
  from the module tree of the released code, not from a listing of the checkpoint file.

Meta -> Hugging Face LLaMA (fastadasp/models/checkpoint.py has the permutation): ``w1 -> gate_proj``,
``w2 -> down_proj``, ``w3 -> up_proj``, ``tok_embeddings -> model.embed_tokens``, ``norm -> model.norm``,
``output -> lm_head``; wq / wk rows permuted to the half-split RoPE order. The LoRA B of q/k gets the same row
permutation. Consequence for the per-request scale: ``s`` multiplies LoRA output channels, so in the HF layout
the scale used for q must be ``permute_rotary(s, n_heads, dim=-1)`` and for k
``permute_rotary(s, n_kv_heads, dim=-1)``; v and o use ``s`` as is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor

from fastadasp.core.shapes import DecoderArgs
from fastadasp.models.checkpoint import (
    check_shapes,
    missing_keys_error,
    normalize_keys,
    permute_rotary,
    unpermute_rotary,
    unwrap_checkpoint,
)

__all__ = [
    "WAVLLM_DECODER_PREFIX",
    "WAVLLM_AUDIO_PREFIXES",
    "convert_wavllm_state_dict",
    "wavllm_state_dict_from_hf",
    "infer_wavllm_shape",
    "decoder_key_map",
    "lora_key_map",
]

# Where SpeechLLMModel keeps its LLaMA (gpt_model = LLaMADecoder, .model_llama = LLAMA).
WAVLLM_DECODER_PREFIX = "gpt_model.model_llama."
# Also accepted: the LLaMADecoder or the bare Meta LLaMA state dict.
_WAVLLM_PREFIX_CANDIDATES = (WAVLLM_DECODER_PREFIX, "model_llama.", "")
# Top-level audio front-end modules of SpeechLLMModel. They share no wrapper prefix, so the "audio" group keeps
# these names (audio_encoder.* is the Whisper branch, wavlm_encoder.* the WavLM branch).
WAVLLM_AUDIO_PREFIXES = ("audio_encoder.", "wavlm_encoder.", "wavlm_audio_proj.", "audio_proj.")
# WavLLM scale network names -> ours.
_SCALE_NAMES = {"scale_fc_1": "fc1", "scale_fc_2": "fc2", "scale_weight_attention": "pool"}


def _validate(args: DecoderArgs, lora_rank: int) -> None:
    args.validate()
    if lora_rank < 0:
        raise ValueError(f"lora_rank must be >= 0, got {lora_rank}")


_WAVLLM_LAYOUT = "WavLLM fairseq (gpt_model.model_llama.* in Meta LLaMA layout: layers.{i}.attention.wq.weight, ...)"


def _layer_map(args: DecoderArgs, i: int):
    """(meta suffix, hf key, expected shape, heads for the rotary permutation or None)."""
    d, q, kv, f = args.hidden_size, args.q_dim, args.kv_dim, args.intermediate_size
    m, h = f"layers.{i}.", f"model.layers.{i}."
    return [
        (m + "attention.wq.weight", h + "self_attn.q_proj.weight", (q, d), args.num_heads),
        (m + "attention.wk.weight", h + "self_attn.k_proj.weight", (kv, d), args.num_kv_heads),
        (m + "attention.wv.weight", h + "self_attn.v_proj.weight", (kv, d), None),
        (m + "attention.wo.weight", h + "self_attn.o_proj.weight", (d, q), None),
        (m + "feed_forward.w1.weight", h + "mlp.gate_proj.weight", (f, d), None),
        (m + "feed_forward.w2.weight", h + "mlp.down_proj.weight", (d, f), None),
        (m + "feed_forward.w3.weight", h + "mlp.up_proj.weight", (f, d), None),
        (m + "attention_norm.weight", h + "input_layernorm.weight", (d,), None),
        (m + "ffn_norm.weight", h + "post_attention_layernorm.weight", (d,), None),
    ]


def decoder_key_map(args: DecoderArgs):
    """(Meta key suffix, HF key, expected shape, heads for the rotary permutation or None) for every decoder
    tensor, in checkpoint order."""
    d, v = args.hidden_size, args.vocab_size
    entries = [("tok_embeddings.weight", "model.embed_tokens.weight", (v, d), None)]
    for i in range(args.num_layers):
        entries += _layer_map(args, i)
    entries += [
        ("norm.weight", "model.norm.weight", (d,), None),
        ("output.weight", "lm_head.weight", (v, d), None),
    ]
    return entries


def _lora_dims(args: DecoderArgs) -> dict[str, tuple[int, int, int | None]]:
    """projection -> (in, out, heads for the rotary permutation of B's rows or None)."""
    d, q, kv = args.hidden_size, args.q_dim, args.kv_dim
    return {"q": (d, q, args.num_heads), "k": (d, kv, args.num_kv_heads), "v": (d, kv, None), "o": (q, d, None)}


def lora_key_map(args: DecoderArgs):
    """(Meta A key suffix, Meta B key suffix, our key stem, in, out, heads) for every LoRA pair."""
    entries = []
    for i in range(args.num_layers):
        for p, (n_in, n_out, heads) in _lora_dims(args).items():
            base = f"layers.{i}.attention.w{p}_lora_"
            entries.append((base + "A", base + "B", f"layers.{i}.{p}", n_in, n_out, heads))
    return entries


def _find_wavllm_prefix(keys) -> str:
    for prefix in _WAVLLM_PREFIX_CANDIDATES:
        if f"{prefix}tok_embeddings.weight" in keys or f"{prefix}layers.0.attention.wq.weight" in keys:
            return prefix
    return WAVLLM_DECODER_PREFIX


def convert_wavllm_state_dict(sd: Mapping[str, Tensor], args: DecoderArgs, lora_rank: int,
                              ) -> dict[str, dict[str, Tensor]]:
    """A WavLLM fairseq state dict (or the whole checkpoint with its "model" entry) -> groups:

    * ``"decoder"``: ``LlamaForCausalLM`` keys (q/k rows permuted to HF's half-split RoPE order);
    * ``"lora"``: ``layers.{i}.{q,k,v,o}.lora_a`` ``[rank, in]`` and ``.lora_b`` ``[out, rank]``, so the LoRA
      output is ``F.linear(F.linear(x, lora_a), lora_b)`` (q/k ``lora_b`` rows permuted like q/k); empty when
      ``lora_rank == 0``;
    * ``"prompt_scale"``: ``fc1.*`` / ``fc2.*`` / ``pool.*`` (``scale_fc_1`` / ``scale_fc_2`` /
      ``scale_weight_attention``), empty when the checkpoint has no scale network;
    * ``"audio"``: the front-end keys (``audio_encoder.*``, ``wavlm_encoder.*``, ``wavlm_audio_proj.*``,
      ``audio_proj.*``), tensors unchanged;
    * ``"unused"``: every other key, unchanged.

    The LoRA scale s stays in the checkpoint's channel order: use ``permute_rotary(s, n_heads, dim=-1)`` for q
    and ``permute_rotary(s, n_kv_heads, dim=-1)`` for k.
    """
    _validate(args, lora_rank)
    rest = normalize_keys(unwrap_checkpoint(sd))
    prefix = _find_wavllm_prefix(rest)
    groups: dict[str, dict[str, Tensor]] = {g: {} for g in ("decoder", "lora", "prompt_scale", "audio", "unused")}

    entries = decoder_key_map(args)
    missing = [prefix + src for src, *_ in entries if prefix + src not in rest]
    if missing:
        raise missing_keys_error(missing, _WAVLLM_LAYOUT)
    bad = []
    for src, dst, expected, heads in entries:
        t = rest.pop(prefix + src)
        if tuple(t.shape) != expected:
            bad.append(f"{prefix + src} {tuple(t.shape)} != {expected}")
            continue
        groups["decoder"][dst] = permute_rotary(t, heads) if heads else t
    check_shapes(bad, _WAVLLM_LAYOUT)

    lora_entries = lora_key_map(args)
    present = [e for e in lora_entries if prefix + e[0] in rest or prefix + e[1] in rest]
    if lora_rank > 0 or present:
        if lora_rank == 0:
            raise ValueError(f"checkpoint has LoRA weights (e.g. {prefix + present[0][0]}) but lora_rank is 0")
        missing = [prefix + k for a, b, *_ in lora_entries for k in (a, b) if prefix + k not in rest]
        if missing:
            raise missing_keys_error(missing, _WAVLLM_LAYOUT + " with prompt-aware LoRA (layers.{i}.attention.wq_lora_A)")
        r = lora_rank
        for a_key, b_key, stem, n_in, n_out, heads in lora_entries:
            a, b = rest.pop(prefix + a_key), rest.pop(prefix + b_key)
            if tuple(a.shape) != (n_in, r):
                bad.append(f"{prefix + a_key} {tuple(a.shape)} != {(n_in, r)}")
            if tuple(b.shape) != (r, n_out):
                bad.append(f"{prefix + b_key} {tuple(b.shape)} != {(r, n_out)}")
            if bad:
                continue
            lora_b = b.t().contiguous()
            groups["lora"][stem + ".lora_a"] = a.t().contiguous()
            groups["lora"][stem + ".lora_b"] = permute_rotary(lora_b, heads) if heads else lora_b
        check_shapes(bad, _WAVLLM_LAYOUT)

    scale_keys = [f"{prefix}{src}.{p}" for src in _SCALE_NAMES for p in ("weight", "bias")]
    if any(k in rest for k in scale_keys):
        missing = [k for k in scale_keys if k not in rest]
        if missing:
            raise missing_keys_error(missing, _WAVLLM_LAYOUT + " with the prompt scale network (scale_fc_1/2)")
        for src, dst in _SCALE_NAMES.items():
            for p in ("weight", "bias"):
                groups["prompt_scale"][f"{dst}.{p}"] = rest.pop(f"{prefix}{src}.{p}")

    for key in list(rest):
        group = "audio" if key.startswith(WAVLLM_AUDIO_PREFIXES) else "unused"
        groups[group][key] = rest.pop(key)
    return groups


def wavllm_state_dict_from_hf(groups: Mapping[str, Mapping[str, Tensor]], args: DecoderArgs,
                              prefix: str = WAVLLM_DECODER_PREFIX) -> dict[str, Tensor]:
    """The exact inverse of ``convert_wavllm_state_dict`` (keys in the released layout under ``prefix``; the
    LoRA rank is the groups' own)."""
    args.validate()
    out: dict[str, Tensor] = {}
    dec = groups["decoder"]
    missing = [dst for _, dst, _, _ in decoder_key_map(args) if dst not in dec]
    if missing:
        raise missing_keys_error(missing, "Hugging Face LlamaForCausalLM")
    for src, dst, _, heads in decoder_key_map(args):
        t = dec[dst]
        out[prefix + src] = unpermute_rotary(t, heads) if heads else t
    extra = set(dec) - {dst for _, dst, _, _ in decoder_key_map(args)}
    if extra:
        raise ValueError(f"unexpected decoder keys: {sorted(extra)[:6]}")
    lora = groups.get("lora", {})
    if lora:
        for a_key, b_key, stem, _, _, heads in lora_key_map(args):
            a, b = lora[stem + ".lora_a"], lora[stem + ".lora_b"]
            out[prefix + a_key] = a.t().contiguous()
            out[prefix + b_key] = (unpermute_rotary(b, heads) if heads else b).t().contiguous()
    scale = groups.get("prompt_scale", {})
    if scale:
        for src, dst in _SCALE_NAMES.items():
            for p in ("weight", "bias"):
                out[f"{prefix}{src}.{p}"] = scale[f"{dst}.{p}"]
    for group in ("audio", "unused"):
        for key, t in groups.get(group, {}).items():
            if key in out:
                raise ValueError(f"key {key!r} appears twice")
            out[key] = t
    return out


def infer_wavllm_shape(sd: Mapping[str, Tensor], head_dim: int = 128) -> tuple[DecoderArgs, int]:
    """Read (decoder dimensions, LoRA rank) off a WavLLM state dict. Head counts are not recoverable from
    shapes, so they are rows // head_dim (LLaMA-2: head_dim 128); the LoRA rank is 0 without LoRA weights."""
    rest = normalize_keys(unwrap_checkpoint(sd))
    p = _find_wavllm_prefix(rest)
    need = [p + "tok_embeddings.weight", p + "layers.0.attention.wq.weight", p + "layers.0.attention.wk.weight",
            p + "layers.0.feed_forward.w1.weight"]
    missing = [k for k in need if k not in rest]
    if missing:
        raise missing_keys_error(missing, _WAVLLM_LAYOUT)
    vocab, hidden = rest[need[0]].shape
    layer_ids = {int(m.group(1)) for k in rest if (m := re.match(re.escape(p) + r"layers\.(\d+)\.", k))}
    num_layers = max(layer_ids) + 1
    if hidden % head_dim:
        raise ValueError(f"hidden_size {hidden} is not a multiple of head_dim {head_dim}")
    lora_a = rest.get(p + "layers.0.attention.wq_lora_A")
    args = DecoderArgs(
        vocab_size=int(vocab), hidden_size=int(hidden), num_layers=num_layers,
        num_heads=int(rest[need[1]].shape[0]) // head_dim, num_kv_heads=int(rest[need[2]].shape[0]) // head_dim,
        head_dim=head_dim, intermediate_size=int(rest[need[3]].shape[0]),
    )
    return args, int(lora_a.shape[1]) if lora_a is not None else 0

