"""Audio in: read a file (or take an array), check it, mix it to mono, resample it to the model's rate, cut it
into the clips the audio encoder takes, and compute the encoder's features the way the model's own feature
extractor does.

- Reading: `soundfile` (libsndfile: WAV, FLAC, OGG/Vorbis, Opus, MP3, AIFF, ...); samples as float32 in [-1, 1].
- Resampling: `soxr` (the SoX resampler, high quality), only when the rate differs.
- Features: Whisper's log-mel spectrogram (transformers' WhisperFeatureExtractor, numpy only): centred 25 ms Hann
  STFT with a 10 ms hop, power, Slaney mel filters up to 8 kHz, log10, clamped to 8 below the clip's maximum,
  then (x + 4) / 4; the last STFT frame is dropped, so a clip of F * 160 samples gives F frames.
- Long audio, per model (`AudioEntry.long_audio`): WavLLM cuts it into consecutive 30 s clips and concatenates
  their embeddings ("chunk"); Qwen2-Audio and Qwen-Audio take one 30 s window per clip and drop the rest
  ("truncate", as their processors do). What happened is stated in `AudioPlan.note`.

Every problem with the audio itself is a one-line UserError naming the file (or array) and the fix.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from fastadasp.core.errors import UserError
from fastadasp.core.manifest import AudioEntry

# Arrays given directly: the shorter axis of a 2-D array is the channel axis when it has at most this many.
MAX_CHANNELS = 16


class AudioError(UserError, ValueError):
    """Audio that cannot be used; the message is one line naming the file or array and the fix."""


@dataclass(frozen=True)
class Waveform:
    """Mono float32 samples at `sample_rate`, and what they came from."""

    samples: np.ndarray
    sample_rate: int
    source: str  # the file path, or "audio array" / "audio array #i"
    original_rate: int
    original_channels: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate


def _describe(audio) -> str:
    return f"{type(audio).__module__}.{type(audio).__qualname__}".removeprefix("builtins.")


def _as_float(samples: np.ndarray, source: str) -> np.ndarray:
    if samples.dtype.kind == "f":
        return samples.astype(np.float32, copy=False)
    if samples.dtype.kind in "iu":  # integer PCM: scale to [-1, 1)
        info = np.iinfo(samples.dtype)
        scaled = (samples.astype(np.float64) - (info.max + info.min + 1) / 2) / ((info.max - info.min + 1) / 2)
        return scaled.astype(np.float32)
    raise AudioError(f"{source} has samples of type {samples.dtype}; pass float or integer PCM samples")


def _to_mono(samples: np.ndarray, source: str, *, channels_last: bool) -> tuple[np.ndarray, int]:
    if samples.ndim == 1:
        return samples, 1
    if samples.ndim != 2:
        raise AudioError(f"{source} has shape {samples.shape}; pass samples [N] or [N, channels]")
    if not channels_last:  # an array: the shorter axis holds the channels
        if samples.shape[0] <= MAX_CHANNELS < samples.shape[1] or samples.shape[0] < samples.shape[1]:
            samples = samples.T
        if samples.shape[1] > MAX_CHANNELS:
            raise AudioError(f"{source} has shape {samples.shape}: which axis holds the channels is unclear; "
                             "pass samples [N] or [N, channels]")
    return samples.mean(axis=1, dtype=np.float64).astype(np.float32), samples.shape[1]


def read_audio_file(path, what: str = "audio file", label: str | None = None) -> tuple[np.ndarray, int, int]:
    """(float32 samples [N, channels], sample rate, channels) of an audio file (a path, or an open binary file /
    the file's bytes as a service receives an upload); AudioError for anything unreadable."""
    import io

    import soundfile

    if isinstance(path, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(path))
    elif hasattr(path, "read"):
        source = path
    else:
        source = path = os.fspath(path)
        label = f"{what} {path}"
        if not os.path.exists(path):
            raise AudioError(f"{label}: no such file; pass the path of a WAV/FLAC/OGG/MP3 file")
        if os.path.isdir(path):
            raise AudioError(f"{label} is a directory; pass the path of an audio file")
    try:
        samples, rate = soundfile.read(source, dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - libsndfile's errors differ by format and version; all mean "unreadable"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise AudioError(f"{label or what} is not audio that libsndfile can read ({first}); pass a WAV, FLAC, OGG or "
                         "MP3 file")
    return samples, int(rate), samples.shape[1]


def load_waveform(audio, sample_rate: int | None, target_rate: int, *, source: str | None = None,
                  what: str = "audio file") -> Waveform:
    """A file path, an encoded file (bytes or a binary file object), or a numpy array (+ its sample rate) ->
    checked mono float32 at `target_rate`."""
    if isinstance(audio, (str, os.PathLike)):
        if sample_rate is not None:
            raise AudioError(f"sample_rate={sample_rate} was given for the file {os.fspath(audio)}; a file carries its "
                             "own rate: pass sample_rate only with an array")
        samples, rate, channels = read_audio_file(audio, what)
        label = f"{what} {os.fspath(audio)}"
        mono, _ = _to_mono(samples, label, channels_last=True)
    elif isinstance(audio, (bytes, bytearray, memoryview)) or hasattr(audio, "read"):
        label = source or ("audio bytes" if isinstance(audio, (bytes, bytearray, memoryview)) else "audio file object")
        if sample_rate is not None:
            raise AudioError(f"sample_rate={sample_rate} was given for {label}; an encoded file carries its own rate: "
                             "pass sample_rate only with an array of samples")
        samples, rate, channels = read_audio_file(audio, what, label)
        mono, _ = _to_mono(samples, label, channels_last=True)
    elif isinstance(audio, np.ndarray) or type(audio).__name__ == "Tensor":
        label = source or "audio array"
        array = np.asarray(audio.detach().cpu().numpy() if hasattr(audio, "detach") else audio)
        if sample_rate is None:
            raise AudioError(f"{label} came without its sample rate; pass sample_rate= (e.g. 16000) with the array")
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
            raise AudioError(f"{label}: sample_rate must be a positive integer, got {sample_rate!r}")
        rate = int(sample_rate)
        mono, channels = _to_mono(_as_float(array, label), label, channels_last=False)
    else:
        raise AudioError(f"audio must be a file path, an encoded file's bytes, or a numpy array of samples (with "
                         f"sample_rate), not {_describe(audio)}")
    if mono.size == 0:
        raise AudioError(f"{label} holds no audio samples; pass a recording with sound in it")
    finite = np.isfinite(mono)
    if not finite.all():
        at = int(np.argmin(finite)) / rate
        raise AudioError(f"{label} has NaN or infinite samples (the first at {at:.3f} s); pass finite samples")
    if rate != target_rate:
        import soxr

        mono = soxr.resample(mono, rate, target_rate, quality="HQ").astype(np.float32, copy=False)
    return Waveform(np.ascontiguousarray(mono), target_rate, label, rate, channels)


# --------------------------------------------------------------------------------------------- features


def _hz_to_mel_slaney(freq):
    freq = np.asarray(freq, dtype=np.float64)
    mels = 3.0 * freq / 200.0
    log_region = freq >= 1000.0
    logstep = 27.0 / np.log(6.4)
    return np.where(log_region, 15.0 + np.log(np.maximum(freq, 1e-10) / 1000.0) * logstep, mels)


def _mel_to_hz_slaney(mels):
    mels = np.asarray(mels, dtype=np.float64)
    freq = 200.0 * mels / 3.0
    logstep = np.log(6.4) / 27.0
    return np.where(mels >= 15.0, 1000.0 * np.exp(logstep * (mels - 15.0)), freq)


_FILTER_CACHE: dict[tuple, np.ndarray] = {}


def mel_filters(mel_bins: int, n_fft: int, sample_rate: int) -> np.ndarray:
    """Slaney-scale, Slaney-normalised triangular filters from 0 Hz to 8 kHz: [n_fft // 2 + 1, mel_bins]
    (transformers.audio_utils.mel_filter_bank as WhisperFeatureExtractor calls it)."""
    key = (mel_bins, n_fft, sample_rate)
    if key not in _FILTER_CACHE:
        fft_freqs = np.linspace(0, sample_rate // 2, n_fft // 2 + 1)
        mel_points = np.linspace(_hz_to_mel_slaney(0.0), _hz_to_mel_slaney(8000.0), mel_bins + 2)
        filter_freqs = _mel_to_hz_slaney(mel_points)
        diff = np.diff(filter_freqs)
        slopes = filter_freqs[None, :] - fft_freqs[:, None]
        down = -slopes[:, :-2] / diff[:-1]
        up = slopes[:, 2:] / diff[1:]
        filters = np.maximum(0.0, np.minimum(down, up))
        filters *= 2.0 / (filter_freqs[2:mel_bins + 2] - filter_freqs[:mel_bins])
        _FILTER_CACHE[key] = filters
    return _FILTER_CACHE[key]


def whisper_log_mel(samples: np.ndarray, spec: AudioEntry) -> np.ndarray:
    """Whisper log-mel features [mel_bins, len(samples) // hop] of one clip (float32)."""
    n_fft, hop = spec.n_fft, spec.hop_length
    x = np.asarray(samples, dtype=np.float64)
    if len(x) <= n_fft // 2:
        raise AudioError(f"a clip of {len(x)} samples is too short for a {n_fft}-sample window")
    padded = np.pad(x, n_fft // 2, mode="reflect")
    count = 1 + (len(padded) - n_fft) // hop
    frames = np.lib.stride_tricks.as_strided(padded, (count, n_fft), (padded.strides[0] * hop, padded.strides[0]))
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2  # [count, n_fft // 2 + 1]
    mel = mel_filters(spec.mel_bins, n_fft, spec.sample_rate).T @ power.T  # [mel_bins, count]
    log_spec = np.log10(np.maximum(mel, 1e-10))[:, :-1]
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


def encoder_inputs(clip: np.ndarray, spec: AudioEntry) -> dict[str, np.ndarray]:
    """One clip (a whole number of hops) -> the audio encoder's inputs, each [1, ...]."""
    out = {}
    for name, kind in spec.inputs.items():
        if kind == "log_mel":
            out[name] = whisper_log_mel(clip, spec)[None]
        elif kind == "waveform":
            out[name] = np.asarray(clip, dtype=np.float32)[None]
        else:
            raise ValueError(f"unknown audio encoder input kind {kind!r} for {name!r}")
    return out


# --------------------------------------------------------------------------------------------- clips


@dataclass(frozen=True)
class AudioPlan:
    """A waveform cut into the clips the encoder takes, and what that means for the request."""

    clips: list[np.ndarray]  # each a whole number of hops, min_frames..clip_frames frames
    frames: list[int]
    tokens: int  # audio tokens of all clips together (the prefill's N)
    seconds: float  # length of the audio given
    used_seconds: float  # length of the audio encoded
    note: str  # how the audio was cut, in words


def tokens_for_frames(total_frames: int, spec: AudioEntry) -> int:
    """Audio tokens of `total_frames` frames of audio after this model's long-audio handling."""
    if total_frames <= 0:
        return 0
    if spec.long_audio == "truncate":
        return spec.clip_tokens(max(min(total_frames, spec.clip_frames), spec.min_frames))
    full, rest = divmod(total_frames, spec.clip_frames)
    tokens = full * spec.clip_tokens(spec.clip_frames)
    if rest:
        tokens += spec.clip_tokens(max(rest, spec.min_frames))
    return tokens


def max_seconds(spec: AudioEntry, max_tokens: int) -> float:
    """The longest audio whose tokens stay within `max_tokens` (in whole hops)."""
    if spec.long_audio == "truncate" and tokens_for_frames(spec.clip_frames, spec) <= max_tokens:
        return math.inf
    lo, hi = 0, spec.clip_frames
    while tokens_for_frames(hi, spec) <= max_tokens:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # tokens are non-decreasing in frames: the last frame count within the budget
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if tokens_for_frames(mid, spec) <= max_tokens else (lo, mid)
    return lo * spec.hop_length / spec.sample_rate


def plan_clips(wave: Waveform, spec: AudioEntry, family: str = "") -> AudioPlan:
    """Cut a waveform into encoder clips per spec.long_audio; every clip is padded with silence to a whole
    number of hops and to at least spec.min_frames frames."""
    hop = spec.hop_length
    samples = wave.samples
    total_frames = -(-len(samples) // hop)
    clip_samples = spec.clip_frames * hop
    seconds = wave.seconds
    model = family or "the model"
    if spec.long_audio == "truncate" and len(samples) > clip_samples:
        pieces = [samples[:clip_samples]]
        note = (f"truncated to the first {spec.clip_seconds:g} s of {seconds:.2f} s: {model} takes one "
                f"{spec.clip_seconds:g} s window per clip, as its processor does")
    elif len(samples) > clip_samples:
        pieces = [samples[i:i + clip_samples] for i in range(0, len(samples), clip_samples)]
        note = (f"{len(pieces)} clips of up to {spec.clip_seconds:g} s, each encoded on its own and the embeddings "
                f"concatenated, as {model} does")
    else:
        pieces = [samples]
        note = f"one clip of {seconds:.2f} s"
    clips, frames = [], []
    for piece in pieces:
        count = max(-(-len(piece) // hop), spec.min_frames)
        padded = np.zeros(count * hop, dtype=np.float32)
        padded[:len(piece)] = piece
        clips.append(padded)
        frames.append(count)
    if total_frames < spec.min_frames:
        note += f"; padded with silence to {spec.min_frames * hop / spec.sample_rate:g} s, the shortest clip the encoder takes"
    tokens = sum(spec.clip_tokens(f) for f in frames)
    used = min(len(samples), sum(len(p) for p in pieces)) / spec.sample_rate
    return AudioPlan(clips, frames, tokens, seconds, used, note)
