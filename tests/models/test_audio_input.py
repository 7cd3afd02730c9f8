"""Audio in: files of several formats, rates and channel counts read, mixed and resampled; Whisper log-mel
features equal to transformers' WhisperFeatureExtractor; long audio cut the way each model does it; and every
bad input refused in one line naming it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile

from fastadasp.core.errors import UserError
from fastadasp.core.manifest import AudioTokenBranch
from fastadasp.models.audio_front_end import whisper_audio_spec
from fastadasp.models.audio_input import (
    AudioError,
    encoder_inputs,
    load_waveform,
    max_seconds,
    mel_filters,
    plan_clips,
    tokens_for_frames,
    whisper_log_mel,
)

RATE = 16_000
WHISPER = [[3, 1, 1], [3, 2, 1]]


def tone(seconds: float, rate: int, channels: int = 1, freq: float = 440.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * np.random.default_rng(seed).standard_normal(len(t))
    return np.stack([x * (1 - 0.3 * c) for c in range(channels)], axis=1) if channels > 1 else x


def spec(long_audio="chunk", clip_frames=200, mel_bins=16, extra_tokens=0):
    return whisper_audio_spec(mel_bins, clip_frames, [AudioTokenBranch("frames", WHISPER)], long_audio=long_audio,
                              extra_tokens=extra_tokens)


@pytest.mark.parametrize("rate,channels,subtype,fmt", [
    (16000, 1, "PCM_16", "WAV"), (44100, 2, "PCM_24", "WAV"), (8000, 1, "FLOAT", "WAV"), (22050, 2, "PCM_16", "FLAC"),
])
def test_files_are_read_mixed_and_resampled(tmp_path, rate, channels, subtype, fmt):
    path = tmp_path / f"clip.{fmt.lower()}"
    data = tone(0.75, rate, channels)
    soundfile.write(path, data, rate, subtype=subtype, format=fmt)
    wave = load_waveform(path, None, RATE)
    assert wave.sample_rate == RATE and wave.original_rate == rate and wave.original_channels == channels
    assert wave.samples.dtype == np.float32 and wave.samples.ndim == 1
    assert abs(len(wave.samples) - 0.75 * RATE) <= 2
    # The tone survives the mix-down and the resampler: the spectrum peaks at 440 Hz.
    spectrum = np.abs(np.fft.rfft(wave.samples))
    assert abs(np.argmax(spectrum) * RATE / len(wave.samples) - 440) < 3
    mono = data.mean(axis=1) if channels > 1 else data  # channels averaged, level kept
    assert float(np.sqrt(np.mean(wave.samples ** 2))) == pytest.approx(float(np.sqrt(np.mean(mono ** 2))), rel=0.03)


def test_arrays_take_a_rate_and_either_channel_layout():
    x = tone(0.5, 48000, 2).astype(np.float32)
    a = load_waveform(x, 48000, RATE)
    b = load_waveform(x.T.copy(), 48000, RATE)  # [channels, samples] as torch audio libraries give it
    np.testing.assert_array_equal(a.samples, b.samples)
    pcm = (tone(0.5, RATE) * 32767).astype(np.int16)
    np.testing.assert_allclose(load_waveform(pcm, RATE, RATE).samples, pcm / 32768.0, atol=1e-6)
    same = tone(0.5, RATE).astype(np.float32)
    np.testing.assert_array_equal(load_waveform(same, RATE, RATE).samples, same)  # no resampling at the model rate


@pytest.mark.parametrize("seconds", [0.05, 0.73, 2.0])
def test_log_mel_equals_the_whisper_feature_extractor(seconds):
    from transformers import WhisperFeatureExtractor
    from transformers.audio_utils import mel_filter_bank

    for bins in (16, 80):
        expected = mel_filter_bank(num_frequency_bins=201, num_mel_filters=bins, min_frequency=0.0,
                                   max_frequency=8000.0, sampling_rate=RATE, norm="slaney", mel_scale="slaney")
        np.testing.assert_allclose(mel_filters(bins, 400, RATE), expected, rtol=1e-9, atol=1e-12)
    x = tone(seconds, RATE).astype(np.float32)
    want = WhisperFeatureExtractor(feature_size=16)(x, sampling_rate=RATE, padding="longest",
                                                    return_tensors="np").input_features[0]
    got = whisper_log_mel(x, spec())
    assert got.shape == want.shape == (16, len(x) // 160)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_encoder_inputs_follow_the_recipe():
    s = whisper_audio_spec(16, 200, [AudioTokenBranch("frames", WHISPER)], waveform=True, long_audio="chunk")
    clip = tone(0.5, RATE).astype(np.float32)
    inputs = encoder_inputs(clip, s)
    assert list(inputs) == ["input_features", "waveform"]
    assert inputs["input_features"].shape == (1, 16, 50) and inputs["waveform"].shape == (1, 8000)


def test_long_audio_is_chunked_or_truncated_as_the_model_does():
    wave = load_waveform(tone(5.3, RATE), RATE, RATE)  # clips of 2 s: 2 + 2 + 1.3
    chunked = plan_clips(wave, spec("chunk"), "wavllm")
    assert chunked.frames == [200, 200, 130] and [len(c) for c in chunked.clips] == [32000, 32000, 20800]
    assert chunked.tokens == 100 + 100 + 65 == tokens_for_frames(530, spec("chunk"))
    assert "3 clips of up to 2 s" in chunked.note and "concatenated" in chunked.note
    assert chunked.used_seconds == pytest.approx(5.3)
    np.testing.assert_array_equal(np.concatenate(chunked.clips)[:len(wave.samples)], wave.samples)

    truncated = plan_clips(wave, spec("truncate", extra_tokens=2), "qwen2-audio")
    assert truncated.frames == [200] and truncated.tokens == 102
    assert "truncated to the first 2 s of 5.30 s" in truncated.note
    assert truncated.used_seconds == pytest.approx(2.0)

    short = plan_clips(load_waveform(tone(0.001, RATE), RATE, RATE), spec(), "wavllm")
    assert short.frames == [spec().min_frames] and "padded with silence" in short.note


def test_longest_audio_for_a_token_budget():
    s = spec("chunk")  # 100 tokens per 2 s clip
    assert max_seconds(s, 250) == pytest.approx(5.0, abs=0.011)
    assert tokens_for_frames(round(max_seconds(s, 250) * 100), s) <= 250 < tokens_for_frames(round(max_seconds(s, 250) * 100) + 1, s)
    assert max_seconds(spec("truncate"), 100) == math.inf  # one window never passes the budget
    assert max_seconds(spec("truncate"), 40) == pytest.approx(0.8, abs=0.011)


@pytest.mark.parametrize("make,needles", [
    (lambda p: (soundfile.write(p, np.zeros(0, np.float32), RATE), p)[1], ["holds no audio samples"]),
    (lambda p: (soundfile.write(p, np.array([0.0, np.nan, 0.0] * 400), RATE, subtype="FLOAT"), p)[1],
     ["NaN or infinite", "at 0.000 s"]),
    (lambda p: (p.write_text("not audio"), p)[1], ["not audio that libsndfile can read", "WAV"]),
    (lambda p: p.parent / "missing.wav", ["no such file"]),
    (lambda p: p.parent, ["is a directory"]),
])
def test_bad_files_are_one_line_naming_the_file(tmp_path, make, needles):
    path = make(tmp_path / "bad.wav")
    with pytest.raises(UserError) as info:
        load_waveform(path, None, RATE, what="--audio")
    message = str(info.value)
    assert "\n" not in message and "--audio" in message and str(path) in message
    for needle in needles:
        assert needle in message


@pytest.mark.parametrize("audio,rate,needle", [
    (np.zeros(100, np.float32), None, "without its sample rate"),
    (np.zeros(100, np.float32), 0, "sample_rate must be a positive integer"),
    (np.array([1 + 2j] * 100), RATE, "samples of type complex128"),
    (np.array([0.1, np.inf]), RATE, "NaN or infinite"),
    (np.zeros((3, 4, 5), np.float32), RATE, "has shape (3, 4, 5)"),
    (12345, RATE, "not int"),
    ({"audio": 1}, RATE, "not dict"),
])
def test_bad_arrays_and_types(audio, rate, needle):
    with pytest.raises(AudioError) as info:
        load_waveform(audio, rate, RATE)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_a_file_with_a_sample_rate_is_refused(tmp_path):
    soundfile.write(tmp_path / "a.wav", tone(0.1, RATE), RATE)
    with pytest.raises(AudioError, match="a file carries its own rate"):
        load_waveform(tmp_path / "a.wav", 8000, RATE)
