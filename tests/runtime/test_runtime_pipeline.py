"""fastadasp.Pipeline: audio files and arrays + a prompt -> text through the exported graphs (ONNX Runtime), equal
to the same request through the PyTorch modules; batches, stats, stop tokens, and requests refused in one line.

The exports are the session's shared ones (tests/exporter/export_checks.py): each tiny preset exported once."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "exporter"))
from export_checks import shared_export  # noqa: E402

import fastadasp  # noqa: E402
from fastadasp.core.errors import InvalidOption, UserError  # noqa: E402
from fastadasp.runtime.backends import select as select_module  # noqa: E402
from fastadasp.runtime.pipeline import Pipeline  # noqa: E402

AUDIO_PRESETS = ["tiny-wavllm", "tiny-qwen2-audio", "tiny-qwen-audio"]
PROMPT = "Transcribe the audio."
# (rate, channels, seconds): telephone, CD stereo past one tiny clip (WavLLM chunks it, Qwen truncates it),
# a few hundred ms, and a clip shorter than the shortest window (padded with silence).
WAVS = [(16000, 1, 1.0), (44100, 2, 2.7), (8000, 1, 0.33), (22050, 2, 0.01)]


def write_wav(path: Path, rate: int, channels: int, seconds: float, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(rate * seconds))) / rate
    voice = 0.3 * np.sin(2 * np.pi * (180 + 40 * np.sin(2 * np.pi * 3 * t)) * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))
    x = voice + 0.03 * rng.standard_normal(len(t))
    data = np.stack([x, 0.7 * x + 0.01 * rng.standard_normal(len(t))], axis=1) if channels == 2 else x
    soundfile.write(path, data, rate, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def export_of(preset_cache, tmp_path_factory):
    return lambda name: shared_export(preset_cache, tmp_path_factory, name)


@pytest.fixture(scope="module")
def pipelines(export_of):
    """(preset, backend) -> Pipeline over the shared export; "torch" reuses the preset already in memory."""
    cache = {}

    def get(name, backend="onnxruntime"):
        if (name, backend) not in cache:
            run = export_of(name)
            model = run.lm if backend == "torch" else None
            cache[name, backend] = Pipeline.from_export(run.directory, backend, model=model)
        return cache[name, backend]

    return get


@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wavs")
    return [write_wav(folder / f"{rate}-{ch}ch-{secs}s.wav", rate, ch, secs, seed=i)
            for i, (rate, ch, secs) in enumerate(WAVS)]


@pytest.mark.parametrize("name", AUDIO_PRESETS)
def test_wav_files_give_the_pytorch_tokens(pipelines, wavs, name):
    """Every file through the whole exported path (features, audio_encoder.onnx, prompt_scale.onnx for WavLLM,
    prefill / decode graphs) gives the tokens of the same request through the PyTorch modules."""
    ours, reference = pipelines(name), pipelines(name, "torch")
    assert (ours.backend, reference.backend) == ("onnxruntime", "torch")
    for wav in wavs:
        for beams in (1, 3) if wav == wavs[0] else (1,):
            got = ours.generate(wav, PROMPT, max_new_tokens=8, num_beams=beams)
            want = reference.generate(wav, PROMPT, max_new_tokens=8, num_beams=beams)
            assert got.tokens == want.tokens and got.text == want.text, (wav.name, beams)
            assert got.stats.audio_tokens == want.stats.audio_tokens
            assert got.stats.audio_tokens_per_layer == want.stats.audio_tokens_per_layer
            assert got.stats.kv_length_per_layer == want.stats.kv_length_per_layer


def test_long_audio_is_handled_per_model_and_said(pipelines, wavs):
    long = wavs[1]  # 2.7 s: past the tiny WavLLM's 2 s clip and the tiny Qwen encoders' 1.2 s window
    wavllm = pipelines("tiny-wavllm").generate(long, PROMPT, max_new_tokens=2).stats
    assert wavllm.audio_clips == 2 and "2 clips of up to 2 s" in wavllm.chunking
    assert wavllm.audio_tokens == 25 + 9 and wavllm.audio_used_seconds == pytest.approx(2.7, abs=1e-3)
    qwen = pipelines("tiny-qwen2-audio").generate(long, PROMPT, max_new_tokens=2).stats
    assert qwen.audio_clips == 1 and "truncated to the first 1.2 s of 2.70 s" in qwen.chunking
    assert qwen.audio_tokens == 30 and qwen.audio_used_seconds == pytest.approx(1.2)
    assert pipelines("tiny-wavllm").max_audio_seconds == pytest.approx(10.26)  # 5 clips + 0.26 s, 128 tokens
    assert pipelines("tiny-qwen2-audio").max_audio_seconds == float("inf")  # truncated: any length fits
    short = pipelines("tiny-qwen-audio").generate(wavs[3], PROMPT, max_new_tokens=2).stats
    assert "padded with silence" in short.chunking and short.audio_tokens == 3  # 1 token + audio bos / eos


def test_arrays_batches_and_prompts(pipelines, wavs):
    pipe = pipelines("tiny-wavllm")
    samples, rate = soundfile.read(wavs[0], dtype="float32")
    single = pipe.generate(wavs[0], PROMPT, max_new_tokens=6)
    assert pipe.generate(samples, PROMPT, sample_rate=rate, max_new_tokens=6).tokens == single.tokens
    assert pipe.generate((samples, rate), PROMPT, max_new_tokens=6).tokens == single.tokens
    other = pipe.generate(wavs[2], "Describe the sound.", max_new_tokens=6)
    batch = pipe.generate([wavs[0], (samples, rate), wavs[2]], [PROMPT, PROMPT, "Describe the sound."], max_new_tokens=6)
    assert [r.tokens for r in batch] == [single.tokens, single.tokens, other.tokens]
    # The two equal requests shared one prefill; the third ran on its own.
    assert [r.stats.batch_rows for r in batch] == [2, 2, 1]
    # The LoRA scale follows the prompt: another instruction, other tokens for the same audio.
    assert pipe.generate(wavs[0], "Describe the sound.", max_new_tokens=6).tokens != single.tokens


def test_stats_describe_the_request(pipelines, wavs):
    result = pipelines("tiny-qwen2-audio").generate(wavs[0], PROMPT, max_new_tokens=10, num_beams=2)
    s = result.stats
    data = json.loads(json.dumps(result.to_dict()))
    assert set(data) == {"text", "tokens", "stats"} and data["stats"]["audio_tokens"] == s.audio_tokens
    assert s.audio_seconds == pytest.approx(1.0) and s.audio_tokens == 25
    assert s.audio_tokens_per_layer[0] == 25 and s.audio_tokens_per_layer[-1] < 25  # merged as scheduled
    assert len(s.kv_length_per_layer) == 6 and s.kv_bytes < s.kv_bytes_full
    assert 0.0 < s.flops_cut < 1.0
    assert s.prefill_ms > 0 and s.decode_ms > 0 and s.encode_ms > 0 and s.tokens_per_second > 0
    assert s.total_ms == pytest.approx(s.encode_ms + s.prefill_ms + s.decode_ms, abs=0.01)
    assert s.real_time_factor == pytest.approx(s.total_ms / 1e3 / s.audio_seconds, rel=1e-3)
    assert s.new_tokens == len(result.tokens) <= 10 and s.batch_rows == 2
    assert s.prefix_tokens > 0 and s.suffix_tokens > 0 and s.backend == "onnxruntime"


def test_generation_stops_at_the_templates_stop_token(pipelines, wavs):
    pipe = pipelines("tiny-qwen-audio")
    free = pipe.generate(wavs[0], PROMPT, max_new_tokens=12)
    assert len(free.tokens) == 12 and free.stats.stopped == "max_new_tokens"
    stop_id = free.tokens[4]
    stopping = Pipeline(pipe.directory, pipe.manifest, pipe.runner)
    stopping.template = dataclasses.replace(pipe.template, stop=[pipe.tokenizer.tokenizer.id_to_token(stop_id)])
    result = stopping.generate(wavs[0], PROMPT, max_new_tokens=12)
    assert result.tokens == free.tokens[:free.tokens.index(stop_id)] and result.stats.stopped == "stop token"
    assert result.text == pipe.tokenizer.decode(result.tokens)


def test_plain_decoders_take_audio_embeddings(pipelines, export_of):
    export_of("tiny-llama")
    embeds = np.random.default_rng(3).standard_normal((20, 72)).astype(np.float32) * 0.02
    got = pipelines("tiny-llama").generate(audio_embeds=embeds, prompt=PROMPT, max_new_tokens=8)
    want = pipelines("tiny-llama", "torch").generate(audio_embeds=embeds, prompt=PROMPT, max_new_tokens=8)
    assert got.tokens == want.tokens and got.stats.audio_tokens == 20 and got.stats.chunking == "audio embeddings given"
    with pytest.raises(InvalidOption, match="no audio encoder in this export: pass audio embeddings"):
        pipelines("tiny-llama").generate("speech.wav", PROMPT)


@pytest.mark.parametrize("call,needles", [
    (lambda p, w: p.generate(w["long"], PROMPT), ["is 12.00 s long", "at most 10.26 s", "--audio-tokens-range MAX"]),
    (lambda p, w: p.generate(w["ok"], "word " * 600), ["tokens but this export serves at most 512", "--max-text-tokens"]),
    (lambda p, w: p.generate(w["ok"], PROMPT, num_beams=6), ["--num-beams 6", "at most 5", "--max-batch 6"]),
    (lambda p, w: p.generate(w["ok"], PROMPT, max_new_tokens=999), ["--max-new-tokens 999", "decode budget of 256"]),
    (lambda p, w: p.generate(w["ok"], [PROMPT, PROMPT]), ["2 prompts for 1 audios"]),
    (lambda p, w: p.generate(audio_embeds=np.zeros((4, 64), np.float32)), ["has an audio encoder"]),
    (lambda p, w: p.generate(None), ["pass the audio"]),
    (lambda p, w: p.generate({"path": "x.wav"}), ["a file path, an array with sample_rate", "got dict"]),
    (lambda p, w: p.generate(np.zeros(1000, np.float32)), ["without its sample rate"]),
])
def test_bad_requests_are_one_line(pipelines, wavs, tmp_path, call, needles):
    files = {"ok": wavs[0], "long": write_wav(tmp_path / "long.wav", 16000, 1, 12.0)}
    with pytest.raises(UserError) as info:
        call(pipelines("tiny-wavllm"), files)
    message = str(info.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, message


def test_auto_uses_onnx_runtime_and_falls_back_to_pytorch(export_of, monkeypatch):
    run = export_of("tiny-qwen-audio")
    assert Pipeline.from_export(run.directory).backend == "onnxruntime"

    def no_onnxruntime(*_args, **_kw):
        raise ImportError("No module named 'onnxruntime'")

    monkeypatch.setattr(select_module, "onnxruntime_providers", no_onnxruntime)
    pipe = Pipeline.from_export(run.directory, model=run.lm)
    assert pipe.backend == "torch" and "No module named 'onnxruntime'" in pipe.runner.reason
    assert pipe.runner.reason.startswith("PyTorch reference (TensorRT: ")  # why TensorRT did not run comes first
    with pytest.raises(InvalidOption, match="--backend 'tensorrt-llm'"):
        Pipeline.from_export(run.directory, backend="tensorrt-llm")


def test_pipeline_is_importable_from_the_package_lazily():
    assert fastadasp.Pipeline is Pipeline and "Pipeline" in dir(fastadasp)
    code = ("import sys, fastadasp.core.manifest, fastadasp; "
            "print(any(m.startswith('fastadasp.runtime') for m in sys.modules), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
    with pytest.raises(AttributeError, match="no attribute 'Pipelines'"):
        fastadasp.Pipelines  # noqa: B018


def test_uploaded_bytes_and_file_objects(pipelines, wavs):
    """A service hands over the uploaded file as it came: bytes or an open file give the path's tokens."""
    pipe = pipelines("tiny-qwen-audio")
    want = pipe.generate(wavs[2], PROMPT, max_new_tokens=6).tokens
    assert pipe.generate(wavs[2].read_bytes(), PROMPT, max_new_tokens=6).tokens == want
    with open(wavs[2], "rb") as f:
        assert pipe.generate(f, PROMPT, max_new_tokens=6).tokens == want
    with pytest.raises(UserError, match="audio bytes is not audio that libsndfile can read"):
        pipe.generate(b"not a wav", PROMPT)
