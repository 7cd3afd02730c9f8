"""The compacted KV cache: one preallocated buffer per decoder layer, each with its own length.

After a FastAdaSP prefill every layer holds a different number of tokens (layers above a merge layer see
the shortened audio span), so a single [layers, B, H, T, d] tensor does not fit. Each layer gets its own
buffer sized for its prefill length plus the decode budget; decode steps write in place at the layer's
current length. The same manager serves every backend (torch reference, ONNX Runtime, TensorRT).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastadasp.core.errors import UserError


class CacheCapacityError(UserError, RuntimeError):
    """A write past a layer's preallocated capacity; the message names the setting to raise."""


@dataclass
class LayerKV:
    key: torch.Tensor  # [B, Hkv, capacity, head_dim]
    value: torch.Tensor  # [B, Hkv, capacity, head_dim]
    length: int  # valid entries: key[:, :, :length]

    @property
    def capacity(self) -> int:
        return self.key.shape[2]


class CompactedKVCache:
    """Per-layer preallocated KV buffers with per-layer valid lengths (same length across the batch)."""

    def __init__(
        self,
        prefill_lengths: list[int],
        batch_size: int,
        num_kv_heads: int,
        head_dim: int,
        max_new_tokens: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ):
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        self.batch_size = batch_size
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.layers: list[LayerKV] = []
        for length in prefill_lengths:
            shape = (batch_size, num_kv_heads, length + max_new_tokens, head_dim)
            self.layers.append(
                LayerKV(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device), 0)
            )

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def lengths(self) -> list[int]:
        return [layer.length for layer in self.layers]

    def write_prefill(self, layer_idx: int, key: torch.Tensor, value: torch.Tensor) -> None:
        """Store a layer's prefill keys/values [B, Hkv, T, d] at the start of its buffer."""
        layer = self.layers[layer_idx]
        length = key.shape[2]
        if length > layer.capacity:
            raise CacheCapacityError(
                f"layer {layer_idx}: prefill of {length} tokens exceeds its capacity {layer.capacity}; "
                "the cache was sized for a different schedule or input length"
            )
        layer.key[:, :, :length] = key
        layer.value[:, :, :length] = value
        layer.length = length

    @property
    def device(self) -> torch.device:
        return self.layers[0].key.device

    def check_room(self, steps: int = 1) -> None:
        """Raise CacheCapacityError unless every layer can take `steps` more entries."""
        for i, layer in enumerate(self.layers):
            if layer.length + steps > layer.capacity:
                raise CacheCapacityError(
                    f"layer {i}'s KV cache is full ({layer.length} of {layer.capacity} entries): the cache was sized "
                    f"for fewer new tokens; raise max_new_tokens (--max-new-tokens) when starting the request"
                )

    def advance(self, steps: int = 1) -> None:
        """Count `steps` entries that a backend wrote in place at every layer's current length (e.g. an
        ONNX Runtime / TensorRT decode step bound to these buffers)."""
        self.check_room(steps)
        for layer in self.layers:
            layer.length += steps

    def append(self, layer_idx: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write one step's key/value [B, Hkv, 1, d] in place; return views of the valid prefix."""
        layer = self.layers[layer_idx]
        if layer.length + key.shape[2] > layer.capacity:
            raise CacheCapacityError(
                f"layer {layer_idx}'s KV cache is full ({layer.length} of {layer.capacity} entries): the cache was "
                "sized for fewer new tokens; raise max_new_tokens (--max-new-tokens) when starting the request"
            )
        end = layer.length + key.shape[2]
        layer.key[:, :, layer.length : end] = key
        layer.value[:, :, layer.length : end] = value
        layer.length = end
        return layer.key[:, :, :end], layer.value[:, :, :end]

    def view(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        layer = self.layers[layer_idx]
        return layer.key[:, :, : layer.length], layer.value[:, :, : layer.length]

    def replace(self, layer_idx: int, key: torch.Tensor, value: torch.Tensor) -> None:
        """Overwrite a layer's valid entries with a shorter set (KV eviction, e.g. H2O)."""
        layer = self.layers[layer_idx]
        length = key.shape[2]
        layer.key[:, :, :length] = key
        layer.value[:, :, :length] = value
        layer.length = length

    def reorder(self, batch_index: torch.Tensor) -> None:
        """Gather batch rows (beam search): row i becomes old row batch_index[i], for every layer."""
        for layer in self.layers:
            layer.key = layer.key.index_select(0, batch_index)
            layer.value = layer.value.index_select(0, batch_index)
        self.batch_size = int(batch_index.shape[0])

    def expansion_index(self, repeats: int) -> torch.Tensor:
        """The reorder index that turns every row into `repeats` consecutive copies (prefill once, then beams)."""
        return torch.arange(self.batch_size, device=self.device).repeat_interleave(repeats)

    def valid_nbytes(self) -> int:
        """Bytes held by valid entries (keys + values), the quantity decode has to read per step."""
        return sum(2 * layer.key[:, :, : layer.length].numel() * layer.key.element_size() for layer in self.layers)
