"""Checkpoint key converters: released WavLLM / Qwen-Audio (v1) state dicts -> Hugging Face layouts, and back.

Pure state-dict functions (torch + stdlib only). Every input key ends up in exactly one output group; keys
the converter does not recognise land in ``"unused"`` and are never dropped. Tensors are moved, transposed or
row-permuted only, so every conversion is bit-exact and has an exact inverse.

Sources the key names were read from (public code; nothing here is copied from it)
----------------------------------------------------------------------------------
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

Meta -> Hugging Face LLaMA -- ``huggingface/transformers``,
``src/transformers/models/llama/convert_llama_weights_to_hf.py``: ``permute(w, n_heads, dim1, dim2) =
w.view(n_heads, dim1 // n_heads // 2, 2, dim2).transpose(1, 2).reshape(dim1, dim2)`` on wq (``n_heads``)
and wk (``num_key_value_heads``); ``w1 -> gate_proj``, ``w2 -> down_proj``, ``w3 -> up_proj``,
``tok_embeddings -> model.embed_tokens``, ``norm -> model.norm``, ``output -> lm_head``. The LoRA B of q/k
gets the same row permutation. Consequence for the per-request scale: ``s`` multiplies LoRA output channels,
so in the HF layout the scale used for q must be ``permute_rotary(s, n_heads, dim=-1)`` and for k
``permute_rotary(s, n_kv_heads, dim=-1)``; v and o use ``s`` as is.

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

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "WAVLLM_DECODER_PREFIX",
    "WAVLLM_AUDIO_PREFIXES",
    "QWEN_AUDIO_PREFIX",
    "WavLLMDecoderShape",
    "permute_rotary",
    "unpermute_rotary",
    "convert_wavllm_state_dict",
    "wavllm_state_dict_from_hf",
    "infer_wavllm_shape",
    "wavllm_synthetic_state_dict",
    "convert_qwen_audio_state_dict",
    "qwen_audio_state_dict_from_hf",
    "qwen_audio_synthetic_state_dict",
]

# Where SpeechLLMModel keeps its LLaMA (gpt_model = LLaMADecoder, .model_llama = LLAMA).
WAVLLM_DECODER_PREFIX = "gpt_model.model_llama."
# Also accepted: the LLaMADecoder or the bare Meta LLaMA state dict.
_WAVLLM_PREFIX_CANDIDATES = (WAVLLM_DECODER_PREFIX, "model_llama.", "")
# Top-level audio front-end modules of SpeechLLMModel. They share no wrapper prefix, so the "audio" group keeps
# these names (audio_encoder.* is the Whisper branch, wavlm_encoder.* the WavLM branch).
WAVLLM_AUDIO_PREFIXES = ("audio_encoder.", "wavlm_encoder.", "wavlm_audio_proj.", "audio_proj.")
QWEN_AUDIO_PREFIX = "transformer.audio."

_WRAPPER_SEGMENTS = re.compile(r"(?:^|(?<=\.))(?:_checkpoint_wrapped_module|_fsdp_wrapped_module)\.")
_LORA_PROJ = ("q", "k", "v", "o")
# WavLLM scale network names -> ours.
_SCALE_NAMES = {"scale_fc_1": "fc1", "scale_fc_2": "fc2", "scale_weight_attention": "pool"}


# --------------------------------------------------------------------------------------------------------------
# Rotary permutation


def _rotary_view(w: Tensor, n_heads: int, dim: int) -> tuple[Tensor, int, int]:
    if n_heads <= 0:
        raise ValueError(f"n_heads must be positive, got {n_heads}")
    w = w.movedim(dim, 0)
    rows = w.shape[0]
    if rows % n_heads or (rows // n_heads) % 2:
        raise ValueError(f"rotary permutation needs {rows} rows = n_heads ({n_heads}) x an even head_dim")
    return w, rows, rows // n_heads


def permute_rotary(w: Tensor, n_heads: int, dim: int = 0) -> Tensor:
    """Meta (interleaved pairs) -> HF (half-split) channel order along ``dim``.

    For a weight ``[n_heads*head_dim, in]`` this is transformers' ``permute``:
    ``w.view(n_heads, head_dim//2, 2, in).transpose(1, 2).reshape(n_heads*head_dim, in)``. Works for biases
    ``[out]`` and, with ``dim=-1``, for activations / per-channel scales ``[..., out]``.
    """
    w0, rows, head_dim = _rotary_view(w, n_heads, dim)
    rest = w0.shape[1:]
    out = w0.reshape(n_heads, head_dim // 2, 2, *rest).transpose(1, 2).reshape(rows, *rest)
    return out.movedim(0, dim).contiguous()


def unpermute_rotary(w: Tensor, n_heads: int, dim: int = 0) -> Tensor:
    """HF (half-split) -> Meta (interleaved pairs) channel order; the exact inverse of ``permute_rotary``."""
    w0, rows, head_dim = _rotary_view(w, n_heads, dim)
    rest = w0.shape[1:]
    out = w0.reshape(n_heads, 2, head_dim // 2, *rest).transpose(1, 2).reshape(rows, *rest)
    return out.movedim(0, dim).contiguous()


# --------------------------------------------------------------------------------------------------------------
# Shared helpers


def _unwrap_checkpoint(sd: Mapping) -> Mapping:
    """A fairseq checkpoint keeps the weights under "model"; accept either form."""
    if "model" in sd and isinstance(sd["model"], Mapping):
        return sd["model"]
    return sd


def _normalize_keys(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        if not isinstance(value, Tensor):
            raise ValueError(f"state dict entry {key!r} is a {type(value).__name__}, not a tensor")
        norm = _WRAPPER_SEGMENTS.sub("", key)
        if norm.startswith("module."):
            norm = norm[len("module."):]
        if norm in out:
            raise ValueError(f"two state dict keys normalise to {norm!r} (wrapper prefixes removed)")
        out[norm] = value
    return out


def _missing_error(missing: list[str], layout: str) -> ValueError:
    shown = ", ".join(missing[:6])
    more = f" (and {len(missing) - 6} more)" if len(missing) > 6 else ""
    return ValueError(f"{len(missing)} required key(s) missing for the {layout} layout: {shown}{more}")


def _check_shapes(bad: list[str], layout: str) -> None:
    if bad:
        shown = "; ".join(bad[:6])
        more = f" (and {len(bad) - 6} more)" if len(bad) > 6 else ""
        raise ValueError(f"{len(bad)} tensor(s) have unexpected shapes for the {layout} layout: {shown}{more}")


# --------------------------------------------------------------------------------------------------------------
# WavLLM


@dataclass(frozen=True)
class WavLLMDecoderShape:
    """The decoder dimensions a WavLLM checkpoint is converted with (LLaMA-2-7B: 32, 4096, 32, 32, 11008,
    32000; WavLLM's released LoRA rank is read from the checkpoint, see ``infer_wavllm_shape``)."""

    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    lora_rank: int

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    def validate(self) -> None:
        if self.hidden_size % self.num_heads or self.head_dim % 2:
            raise ValueError(f"hidden_size {self.hidden_size} is not num_heads {self.num_heads} x an even head_dim")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")


_WAVLLM_LAYOUT = "WavLLM fairseq (gpt_model.model_llama.* in Meta LLaMA layout: layers.{i}.attention.wq.weight, ...)"


def _wavllm_layer_map(shape: WavLLMDecoderShape, i: int):
    """(meta suffix, hf key, expected shape, heads for the rotary permutation or None)."""
    d, q, kv, f = shape.hidden_size, shape.q_dim, shape.kv_dim, shape.intermediate_size
    m, h = f"layers.{i}.", f"model.layers.{i}."
    return [
        (m + "attention.wq.weight", h + "self_attn.q_proj.weight", (q, d), shape.num_heads),
        (m + "attention.wk.weight", h + "self_attn.k_proj.weight", (kv, d), shape.num_kv_heads),
        (m + "attention.wv.weight", h + "self_attn.v_proj.weight", (kv, d), None),
        (m + "attention.wo.weight", h + "self_attn.o_proj.weight", (d, q), None),
        (m + "feed_forward.w1.weight", h + "mlp.gate_proj.weight", (f, d), None),
        (m + "feed_forward.w2.weight", h + "mlp.down_proj.weight", (d, f), None),
        (m + "feed_forward.w3.weight", h + "mlp.up_proj.weight", (f, d), None),
        (m + "attention_norm.weight", h + "input_layernorm.weight", (d,), None),
        (m + "ffn_norm.weight", h + "post_attention_layernorm.weight", (d,), None),
    ]


def _wavllm_decoder_map(shape: WavLLMDecoderShape):
    d, v = shape.hidden_size, shape.vocab_size
    entries = [("tok_embeddings.weight", "model.embed_tokens.weight", (v, d), None)]
    for i in range(shape.num_layers):
        entries += _wavllm_layer_map(shape, i)
    entries += [
        ("norm.weight", "model.norm.weight", (d,), None),
        ("output.weight", "lm_head.weight", (v, d), None),
    ]
    return entries


def _wavllm_lora_dims(shape: WavLLMDecoderShape) -> dict[str, tuple[int, int, int | None]]:
    """projection -> (in, out, heads for the rotary permutation of B's rows or None)."""
    d, q, kv = shape.hidden_size, shape.q_dim, shape.kv_dim
    return {"q": (d, q, shape.num_heads), "k": (d, kv, shape.num_kv_heads), "v": (d, kv, None), "o": (q, d, None)}


def _wavllm_lora_map(shape: WavLLMDecoderShape):
    """(meta A suffix, meta B suffix, our key stem, in, out, heads)."""
    entries = []
    for i in range(shape.num_layers):
        for p, (n_in, n_out, heads) in _wavllm_lora_dims(shape).items():
            base = f"layers.{i}.attention.w{p}_lora_"
            entries.append((base + "A", base + "B", f"layers.{i}.{p}", n_in, n_out, heads))
    return entries


def _find_wavllm_prefix(keys) -> str:
    for prefix in _WAVLLM_PREFIX_CANDIDATES:
        if f"{prefix}tok_embeddings.weight" in keys or f"{prefix}layers.0.attention.wq.weight" in keys:
            return prefix
    return WAVLLM_DECODER_PREFIX


def convert_wavllm_state_dict(sd: Mapping[str, Tensor], shape: WavLLMDecoderShape) -> dict[str, dict[str, Tensor]]:
    """A WavLLM fairseq state dict (or the whole checkpoint with its "model" entry) -> groups:

    * ``"decoder"``: ``LlamaForCausalLM`` keys (q/k rows permuted to HF's half-split RoPE order);
    * ``"lora"``: ``layers.{i}.{q,k,v,o}.lora_a`` ``[rank, in]`` and ``.lora_b`` ``[out, rank]``, so the LoRA
      output is ``F.linear(F.linear(x, lora_a), lora_b)`` (q/k ``lora_b`` rows permuted like q/k); empty when
      ``shape.lora_rank == 0``;
    * ``"prompt_scale"``: ``fc1.*`` / ``fc2.*`` / ``pool.*`` (``scale_fc_1`` / ``scale_fc_2`` /
      ``scale_weight_attention``), empty when the checkpoint has no scale network;
    * ``"audio"``: the front-end keys (``audio_encoder.*``, ``wavlm_encoder.*``, ``wavlm_audio_proj.*``,
      ``audio_proj.*``), tensors unchanged;
    * ``"unused"``: every other key, unchanged.

    The LoRA scale s stays in the checkpoint's channel order: use ``permute_rotary(s, n_heads, dim=-1)`` for q
    and ``permute_rotary(s, n_kv_heads, dim=-1)`` for k.
    """
    shape.validate()
    rest = _normalize_keys(_unwrap_checkpoint(sd))
    prefix = _find_wavllm_prefix(rest)
    groups: dict[str, dict[str, Tensor]] = {g: {} for g in ("decoder", "lora", "prompt_scale", "audio", "unused")}

    entries = _wavllm_decoder_map(shape)
    missing = [prefix + src for src, *_ in entries if prefix + src not in rest]
    if missing:
        raise _missing_error(missing, _WAVLLM_LAYOUT)
    bad = []
    for src, dst, expected, heads in entries:
        t = rest.pop(prefix + src)
        if tuple(t.shape) != expected:
            bad.append(f"{prefix + src} {tuple(t.shape)} != {expected}")
            continue
        groups["decoder"][dst] = permute_rotary(t, heads) if heads else t
    _check_shapes(bad, _WAVLLM_LAYOUT)

    lora_entries = _wavllm_lora_map(shape)
    present = [e for e in lora_entries if prefix + e[0] in rest or prefix + e[1] in rest]
    if shape.lora_rank > 0 or present:
        if shape.lora_rank == 0:
            raise ValueError(f"checkpoint has LoRA weights (e.g. {prefix + present[0][0]}) but lora_rank is 0")
        missing = [prefix + k for a, b, *_ in lora_entries for k in (a, b) if prefix + k not in rest]
        if missing:
            raise _missing_error(missing, _WAVLLM_LAYOUT + " with prompt-aware LoRA (layers.{i}.attention.wq_lora_A)")
        r = shape.lora_rank
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
        _check_shapes(bad, _WAVLLM_LAYOUT)

    scale_keys = [f"{prefix}{src}.{p}" for src in _SCALE_NAMES for p in ("weight", "bias")]
    if any(k in rest for k in scale_keys):
        missing = [k for k in scale_keys if k not in rest]
        if missing:
            raise _missing_error(missing, _WAVLLM_LAYOUT + " with the prompt scale network (scale_fc_1/2)")
        for src, dst in _SCALE_NAMES.items():
            for p in ("weight", "bias"):
                groups["prompt_scale"][f"{dst}.{p}"] = rest.pop(f"{prefix}{src}.{p}")

    for key in list(rest):
        group = "audio" if key.startswith(WAVLLM_AUDIO_PREFIXES) else "unused"
        groups[group][key] = rest.pop(key)
    return groups


def wavllm_state_dict_from_hf(groups: Mapping[str, Mapping[str, Tensor]], shape: WavLLMDecoderShape,
                              prefix: str = WAVLLM_DECODER_PREFIX) -> dict[str, Tensor]:
    """The exact inverse of ``convert_wavllm_state_dict`` (keys in the released layout under ``prefix``)."""
    shape.validate()
    out: dict[str, Tensor] = {}
    dec = groups["decoder"]
    missing = [dst for _, dst, _, _ in _wavllm_decoder_map(shape) if dst not in dec]
    if missing:
        raise _missing_error(missing, "Hugging Face LlamaForCausalLM")
    for src, dst, _, heads in _wavllm_decoder_map(shape):
        t = dec[dst]
        out[prefix + src] = unpermute_rotary(t, heads) if heads else t
    extra = set(dec) - {dst for _, dst, _, _ in _wavllm_decoder_map(shape)}
    if extra:
        raise ValueError(f"unexpected decoder keys: {sorted(extra)[:6]}")
    lora = groups.get("lora", {})
    if lora:
        for a_key, b_key, stem, _, _, heads in _wavllm_lora_map(shape):
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


def infer_wavllm_shape(sd: Mapping[str, Tensor], head_dim: int = 128) -> WavLLMDecoderShape:
    """Read the decoder dimensions off a WavLLM state dict. Head count is not recoverable from shapes, so it is
    ``hidden_size // head_dim`` (LLaMA-2: head_dim 128)."""
    rest = _normalize_keys(_unwrap_checkpoint(sd))
    p = _find_wavllm_prefix(rest)
    need = [p + "tok_embeddings.weight", p + "layers.0.attention.wq.weight", p + "layers.0.attention.wk.weight",
            p + "layers.0.feed_forward.w1.weight"]
    missing = [k for k in need if k not in rest]
    if missing:
        raise _missing_error(missing, _WAVLLM_LAYOUT)
    vocab, hidden = rest[need[0]].shape
    layer_ids = {int(m.group(1)) for k in rest if (m := re.match(re.escape(p) + r"layers\.(\d+)\.", k))}
    num_layers = max(layer_ids) + 1
    if hidden % head_dim:
        raise ValueError(f"hidden_size {hidden} is not a multiple of head_dim {head_dim}")
    lora_a = rest.get(p + "layers.0.attention.wq_lora_A")
    return WavLLMDecoderShape(
        num_layers=num_layers, hidden_size=int(hidden), num_heads=int(rest[need[1]].shape[0]) // head_dim,
        num_kv_heads=int(rest[need[2]].shape[0]) // head_dim, intermediate_size=int(rest[need[3]].shape[0]),
        vocab_size=int(vocab), lora_rank=int(lora_a.shape[1]) if lora_a is not None else 0,
    )


def _randn(gen: torch.Generator, *size: int, std: float = 1.0) -> Tensor:
    return torch.randn(*size, generator=gen) * std


def _linear_w(gen: torch.Generator, out_f: int, in_f: int) -> Tensor:
    return _randn(gen, out_f, in_f, std=in_f ** -0.5)


def _norm_w(gen: torch.Generator, n: int) -> Tensor:
    return 1.0 + _randn(gen, n, std=0.1)


def wavllm_synthetic_state_dict(shape: WavLLMDecoderShape, seed: int = 0, scale_inner: int | None = None,
                                ) -> dict[str, Tensor]:
    """A random fp32 WavLLM state dict with the released key names: Meta-layout decoder under
    ``gpt_model.model_llama.``, prompt-aware LoRA (non-zero B, so it matters), the prompt scale network (inner
    width ``scale_inner``, default ``hidden_size // 4`` as 4096 -> 1024 in the release) and a few audio
    front-end keys of each branch (tiny shapes)."""
    shape.validate()
    gen = torch.Generator().manual_seed(seed)
    p, d = WAVLLM_DECODER_PREFIX, shape.hidden_size
    sd: dict[str, Tensor] = {p + "tok_embeddings.weight": _randn(gen, shape.vocab_size, d)}
    for src, _, expected, _ in _wavllm_decoder_map(shape)[1:]:
        sd[p + src] = _norm_w(gen, expected[0]) if len(expected) == 1 else _linear_w(gen, *expected)
    if shape.lora_rank:
        r = shape.lora_rank
        for a_key, b_key, _, n_in, n_out, _ in _wavllm_lora_map(shape):
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


# --------------------------------------------------------------------------------------------------------------
# Qwen-Audio (v1)

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
    rest = _normalize_keys(sd)
    groups: dict[str, dict[str, Tensor]] = {g: {} for g in ("decoder", "audio", "unused")}
    required = [src for src, _ in _qwen_plain_map(num_layers)] + [src for src, _ in _qwen_fused(num_layers)]
    missing = [k for k in required if k not in rest]
    if missing:
        raise _missing_error(missing, _QWEN_LAYOUT)
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
    _check_shapes(bad, _QWEN_LAYOUT)
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
        raise _missing_error(missing, "Hugging Face Qwen2ForCausalLM")
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
