"""What an adapter hands the exporter for its audio front-end: the module to export and its inputs.

Every front-end here is built for one full-length clip (Whisper-style encoders are trained on fixed 30 s
windows), so each input has a fixed shape apart from the batch and the exported graph's token count N is
known when the manifest is written. `SpeechLM.audio_front_end()` returns an `AudioFrontEnd`; the exporter
(exporter/audio_encoder.py) writes `module` to ONNX without knowing which model it came from.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

SAMPLE_RATE = 16_000
# Mel features use a 10 ms hop: 160 waveform samples per mel frame at 16 kHz.
MEL_HOP_SAMPLES = SAMPLE_RATE // 100


def whisper_frames(config) -> int:
    """Mel frames a Whisper-style encoder is built for: its stride-2 conv stem halves them into
    max_source_positions positions (3000 frames = 30 s for Whisper)."""
    return 2 * config.max_source_positions


def waveform_samples(mel_frames: int) -> int:
    """16 kHz waveform samples that cover `mel_frames` mel frames."""
    return mel_frames * MEL_HOP_SAMPLES


@dataclass(frozen=True)
class AudioInput:
    """One front-end input: its shape without the batch dimension, and the standard deviation of the random
    draws that stand in for real audio (waveforms are drawn at speech-like amplitude, mel features at 1)."""

    shape: tuple[int, ...]
    synthetic_std: float = 1.0


@dataclass(frozen=True)
class AudioFrontEnd:
    """`module(*inputs)` equals the adapter's `encode_audio(*inputs)` for full-length clips; its forward takes
    the inputs by these names, in this order (the exported graph's input names).

    dynamo_min_opset: the lowest ONNX opset the torch.export-based exporter can write this module at; below it
    the exporter goes straight to the TorchScript exporter (None: no limit).
    """

    module: nn.Module
    inputs: dict[str, AudioInput]
    dynamo_min_opset: int | None = None

    def synthetic_inputs(self, batch_size: int, gen: torch.Generator,
                         dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """Random inputs for `batch_size` clips, drawn from `gen` in input order."""
        return {
            name: (torch.randn(batch_size, *spec.shape, generator=gen) * spec.synthetic_std).to(dtype)
            for name, spec in self.inputs.items()
        }


def no_front_end(lm, why: str) -> ValueError:
    """The one error for a model whose audio embeddings must come from outside the exported graphs."""
    return ValueError(
        f"model {lm.name!r} (family {lm.family!r}) has no audio front-end: {why}; "
        f"pass audio embeddings directly (they must come from outside the exported graphs)"
    )
