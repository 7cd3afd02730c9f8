"""What every backend provides, so one generation loop (runtime/generate.py) and one KV-cache manager
(runtime/kv_cache.py) serve the PyTorch reference, ONNX Runtime and TensorRT alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from fastadasp.core.prompt import PromptInputs


@dataclass
class PrefillResult:
    """logits [B, V] at the last position; span_lengths per layer (+ after the last);
    kept: per merge layer, the source index [B, n'] of each surviving audio token (selection report)."""

    logits: torch.Tensor
    span_lengths: list[int]
    total_length: int
    kept: dict[int, torch.Tensor] = field(default_factory=dict)
    final_audio_hidden: torch.Tensor | None = None  # [B, n_final, D] before the final norm


class Backend(Protocol):
    """prefill once per request, then one decode step per token; the cache lives behind the backend."""

    def prefill(self, inputs: PromptInputs, max_new_tokens: int) -> PrefillResult: ...

    def decode(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """input_ids [B, 1], position_ids [B, 1] -> logits [B, V] (fp32)."""

    def reorder(self, batch_index: torch.Tensor) -> None:
        """Row i of every per-request state becomes old row batch_index[i] (beam search)."""

    def expand(self, repeats: int) -> None:
        """Every request becomes `repeats` consecutive identical rows (prefill once, then beams)."""
