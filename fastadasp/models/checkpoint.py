"""Helpers every checkpoint converter shares: the Meta -> Hugging Face rotary permutation, key normalisation
(checkpoint wrappers, activation-checkpoint / FSDP segments) and the converters' error messages.

Meta -> Hugging Face LLaMA -- ``huggingface/transformers``,
``src/transformers/models/llama/convert_llama_weights_to_hf.py``: ``permute(w, n_heads, dim1, dim2) =
w.view(n_heads, dim1 // n_heads // 2, 2, dim2).transpose(1, 2).reshape(dim1, dim2)``, applied to wq
(``n_heads``) and wk (``num_key_value_heads``): Meta's interleaved (complex-pair) RoPE channel order becomes
Hugging Face's half-split order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor

__all__ = ["permute_rotary", "unpermute_rotary", "unwrap_checkpoint", "normalize_keys", "missing_keys_error",
           "check_shapes"]

# Activation-checkpoint / FSDP wrappers insert these segments into parameter names.
_WRAPPER_SEGMENTS = re.compile(r"(?:^|(?<=\.))(?:_checkpoint_wrapped_module|_fsdp_wrapped_module)\.")


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


def unwrap_checkpoint(sd: Mapping) -> Mapping:
    """A fairseq checkpoint keeps the weights under "model"; accept either form."""
    if "model" in sd and isinstance(sd["model"], Mapping):
        return sd["model"]
    return sd


def normalize_keys(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Keys without wrapper segments (``_checkpoint_wrapped_module.``, ``_fsdp_wrapped_module.``) or a leading
    ``module.``; every value must be a tensor and no two keys may collapse onto one."""
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


def missing_keys_error(missing: list[str], layout: str) -> ValueError:
    """One line naming the first missing keys and the layout the converter expected."""
    shown = ", ".join(missing[:6])
    more = f" (and {len(missing) - 6} more)" if len(missing) > 6 else ""
    return ValueError(f"{len(missing)} required key(s) missing for the {layout} layout: {shown}{more}")


def check_shapes(bad: list[str], layout: str) -> None:
    """Raise one ValueError listing the first tensors of unexpected shape, if any."""
    if bad:
        shown = "; ".join(bad[:6])
        more = f" (and {len(bad) - 6} more)" if len(bad) > 6 else ""
        raise ValueError(f"{len(bad)} tensor(s) have unexpected shapes for the {layout} layout: {shown}{more}")

