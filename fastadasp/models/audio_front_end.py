"""What an adapter hands the exporter for its audio front-end: the module to export, its inputs, and how audio
becomes those inputs and how many tokens they make.

Whisper-style encoders are trained on fixed 30 s windows (a clip), and Hugging Face refuses any other input
length; `whisper_encoder_forward` runs the same modules on any frame count up to the window, so one exported
graph serves every clip length (a dynamic "frames" axis) and short audio costs proportionally less. For a full
window it is the Hugging Face forward exactly. `SpeechLM.audio_front_end()` returns an `AudioFrontEnd`; the
exporter (exporter/audio_encoder.py) writes `module` to ONNX without knowing which model it came from, and
`spec` (a manifest `AudioEntry`) tells every runtime how to make the inputs from a waveform.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fastadasp.core.manifest import AudioEntry, AudioTokenBranch

SAMPLE_RATE = 16_000
# Mel features use a 10 ms hop (160 waveform samples per frame at 16 kHz) and a 25 ms window, as Whisper's.
MEL_HOP_SAMPLES = SAMPLE_RATE // 100
MEL_N_FFT = 400
# Dynamic dims of the audio encoder's inputs (the exported graph's dim names).
FRAMES, SAMPLES = "frames", "samples"


def whisper_frames(config) -> int:
    """Mel frames of one clip (the encoder's window): its stride-2 conv stem halves them into
    max_source_positions positions (3000 frames = 30 s for Whisper)."""
    return 2 * config.max_source_positions


def waveform_samples(mel_frames: int) -> int:
    """16 kHz waveform samples that cover `mel_frames` mel frames."""
    return mel_frames * MEL_HOP_SAMPLES


def conv_stage(conv: nn.Module) -> list[int]:
    """[kernel, stride, padding] of a Conv1d / AvgPool1d: the length rule of one stage."""
    def first(v):
        return int(v[0] if isinstance(v, (tuple, list)) else v)

    return [first(conv.kernel_size), first(conv.stride), first(conv.padding)]


def whisper_encoder_stages(encoder: nn.Module) -> list[list[int]]:
    """Length-changing stages of a Whisper-style encoder: conv1, conv2 and (Qwen2-Audio) the average pool."""
    stages = [conv_stage(encoder.conv1), conv_stage(encoder.conv2)]
    pooler = getattr(encoder, "avg_pooler", None)
    if pooler is not None:
        stages.append(conv_stage(pooler))
    return stages


def whisper_encoder_forward(encoder: nn.Module, mel: torch.Tensor) -> torch.Tensor:
    """A Hugging Face Whisper-style encoder (WhisperEncoder, Qwen2AudioEncoder) on mel [B, mel_bins, F] for any F up
    to its window -> last hidden state [B, T, C]. Its own forward insists on the full window; the layers are the
    same, the positional table is read for the first T positions. Inference only (no dropout / layer drop)."""
    x = F.gelu(encoder.conv1(mel))
    x = F.gelu(encoder.conv2(x)).permute(0, 2, 1)
    x = x + encoder.embed_positions.weight[: x.shape[1]]
    for layer in encoder.layers:
        x = layer(x, None)
        if isinstance(x, tuple):
            x = x[0]
    pooler = getattr(encoder, "avg_pooler", None)
    if pooler is not None:
        x = pooler(x.permute(0, 2, 1)).permute(0, 2, 1)
    return encoder.layer_norm(x)


@dataclass(frozen=True)
class AudioInput:
    """One front-end input: its shape without the batch dimension (FRAMES / SAMPLES name the dynamic dims), and
    the standard deviation of the random draws that stand in for real audio (waveforms at speech-like amplitude,
    mel features at 1)."""

    shape: tuple[int | str, ...]
    synthetic_std: float = 1.0

    def concrete(self, frames: int, hop: int) -> tuple[int, ...]:
        return tuple(frames if d == FRAMES else frames * hop if d == SAMPLES else int(d) for d in self.shape)


@dataclass(frozen=True)
class AudioFrontEnd:
    """`module(*inputs)` equals the adapter's `encode_audio(*inputs)` for every clip length in
    [spec.min_frames, spec.clip_frames]; its forward takes the inputs by these names, in this order (the exported
    graph's input names).

    dynamo_min_opset: the lowest ONNX opset the torch.export-based exporter can write this module at; below it
    the exporter goes straight to the TorchScript exporter (None: no limit).
    """

    module: nn.Module
    inputs: dict[str, AudioInput]
    spec: AudioEntry
    dynamo_min_opset: int | None = None

    def synthetic_inputs(self, batch_size: int, gen: torch.Generator, dtype: torch.dtype = torch.float32,
                         frames: int | None = None) -> dict[str, torch.Tensor]:
        """Random inputs for `batch_size` clips of `frames` frames (default: a full clip), drawn from `gen` in
        input order."""
        frames = self.spec.clip_frames if frames is None else frames
        return {
            name: (torch.randn(batch_size, *spec.concrete(frames, self.spec.hop_length), generator=gen)
                   * spec.synthetic_std).to(dtype)
            for name, spec in self.inputs.items()
        }


def whisper_audio_spec(mel_bins: int, clip_frames: int, token_branches: list[AudioTokenBranch], *,
                       waveform: bool = False, long_audio: str, extra_tokens: int = 0) -> AudioEntry:
    """The AudioEntry of a front-end fed Whisper log-mel features (and, for WavLLM, the 16 kHz waveform)."""
    inputs = {"input_features": "log_mel"}
    if waveform:
        inputs["waveform"] = "waveform"
    probe = AudioEntry(SAMPLE_RATE, "whisper_log_mel", mel_bins, MEL_N_FFT, MEL_HOP_SAMPLES, inputs, {}, 1,
                       clip_frames, long_audio, token_branches, extra_tokens)
    # Shortest clip every branch turns into a token; Whisper's centred STFT also needs more than n_fft / 2
    # samples to reflect-pad.
    min_frames = MEL_N_FFT // (2 * MEL_HOP_SAMPLES) + 1
    while min_frames < clip_frames and probe.clip_tokens(min_frames) - extra_tokens < 1:
        min_frames += 1
    opt = clip_frames
    dims = {FRAMES: [min_frames, opt, clip_frames]}
    if waveform:
        dims[SAMPLES] = [min_frames * MEL_HOP_SAMPLES, opt * MEL_HOP_SAMPLES, clip_frames * MEL_HOP_SAMPLES]
    return AudioEntry(SAMPLE_RATE, "whisper_log_mel", mel_bins, MEL_N_FFT, MEL_HOP_SAMPLES, inputs, dims, min_frames,
                      clip_frames, long_audio, token_branches, extra_tokens)


def no_front_end(lm, why: str) -> ValueError:
    """The one error for a model whose audio embeddings must come from outside the exported graphs."""
    return ValueError(
        f"model {lm.name!r} (family {lm.family!r}) has no audio front-end: {why}; "
        f"pass audio embeddings directly (they must come from outside the exported graphs)"
    )
