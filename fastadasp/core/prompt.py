"""What a request hands the decoder: text before the audio, audio embeddings, text after, LoRA scale."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class PromptInputs:
    """prefix_ids [B, P], audio_embeds [B, N, D], suffix_ids [B, S], lora_scale [B, D] (WavLLM) or None."""

    prefix_ids: torch.Tensor
    audio_embeds: torch.Tensor
    suffix_ids: torch.Tensor
    lora_scale: torch.Tensor | None = None

    def __post_init__(self):
        b = self.audio_embeds.shape[0]
        for name in ("prefix_ids", "suffix_ids"):
            t = getattr(self, name)
            if t.dim() != 2 or t.shape[0] != b:
                raise ValueError(f"{name} must be [B, L] with B = {b} (audio_embeds' batch), got {tuple(t.shape)}")
        if self.audio_embeds.dim() != 3 or self.audio_embeds.shape[1] < 1:
            raise ValueError(f"audio_embeds must be [B, N, D] with N >= 1, got {tuple(self.audio_embeds.shape)}")

    @property
    def batch_size(self) -> int:
        return self.audio_embeds.shape[0]

    @property
    def audio_start(self) -> int:
        return self.prefix_ids.shape[1]

    @property
    def audio_length(self) -> int:
        return self.audio_embeds.shape[1]

    @property
    def text_length(self) -> int:
        return self.prefix_ids.shape[1] + self.suffix_ids.shape[1]

    @property
    def total_length(self) -> int:
        return self.text_length + self.audio_length

    def embeds(self, embed_tokens: Callable[[torch.Tensor], torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        """[B, P + N + S, D] in dtype."""
        return torch.cat(
            [embed_tokens(self.prefix_ids).to(dtype), self.audio_embeds.to(dtype), embed_tokens(self.suffix_ids).to(dtype)],
            dim=1,
        )


def synthetic_token_ids(vocab_size: int, batch_size: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """Reproducible random text ids [B, length] (the last id is kept free, often EOS/pad in tiny vocabularies)."""
    return torch.randint(0, vocab_size - 1, (batch_size, length), generator=generator)
