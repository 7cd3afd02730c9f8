"""What every model adapter exposes to the reduction, the exporter and the runtime."""

from __future__ import annotations

import torch
from torch import nn

from fastadasp.models.decoder import SpeechDecoder


class SpeechLM(nn.Module):
    """A speech-language model split at the audio span: an audio front-end producing embeddings [B, N, D]
    and a decoder whose prompt is prefix ids + audio embeddings + suffix ids.

    `hf_model` is the complete Hugging Face model the adapter wraps (used as the parity reference).
    """

    family = "decoder"
    needs_lora_scale = False

    def __init__(self, name: str, decoder: SpeechDecoder, hf_model: nn.Module | None = None):
        super().__init__()
        self.name = name
        self.decoder = decoder
        self.hf_model = hf_model

    @property
    def args(self):
        return self.decoder.args

    def encode_audio(self, *args, **kwargs) -> torch.Tensor:
        raise NotImplementedError(f"model {self.name!r} has no audio front-end; pass audio embeddings directly")

    def to_dtype(self, dtype: torch.dtype) -> "SpeechLM":
        self.to(dtype)
        return self
