"""`fastadasp generate --export-dir D --audio X.wav --prompt TEXT`: JSON with text, tokens and stats on an export
of every tiny preset, the text alone on stdout otherwise, the PyTorch check only behind --compare-torch, and
every bad audio file or request refused in one line with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "exporter"))
from export_checks import shared_export  # noqa: E402

from fastadasp.cli import commands, main  # noqa: E402
from support import TINY_PRESETS  # noqa: E402

PROMPT = "Transcribe the audio."
STATS = {"audio_seconds", "chunking", "audio_tokens", "audio_tokens_per_layer", "prefill_ms", "decode_ms",
         "tokens_per_second", "real_time_factor", "flops_cut", "kv_bytes", "kv_bytes_full"}


@pytest.fixture(scope="module")
def export_dir(preset_cache, tmp_path_factory):
    return lambda name: shared_export(preset_cache, tmp_path_factory, name).directory


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    """1.5 s of a gliding tone with noise at 22.05 kHz stereo: resampled and mixed down on the way in."""
    path = tmp_path_factory.mktemp("audio") / "speech.wav"
    t = np.arange(int(22050 * 1.5)) / 22050
    x = 0.3 * np.sin(2 * np.pi * (200 + 100 * t) * t) + 0.02 * np.random.default_rng(0).standard_normal(len(t))
    soundfile.write(path, np.stack([x, x * 0.8], axis=1), 22050)
    return path


@pytest.fixture
def no_pytorch_model(monkeypatch):
    """A normal run uses the export alone: building the PyTorch model fails the test."""
    from fastadasp.models import registry

    def refuse(*_args, **_kw):
        raise AssertionError("generate built the PyTorch model without --compare-torch")

    monkeypatch.setattr(registry, "build_model", refuse)
    monkeypatch.setattr(commands, "load_model", refuse)


def _one_line_error(capsys, code: int, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize("name", TINY_PRESETS)
def test_json_on_every_tiny_preset(export_dir, speech, tmp_path, capsys, no_pytorch_model, name):
    if name == "tiny-llama":  # a plain decoder: no audio encoder, so audio embeddings stand in for audio
        embeds = tmp_path / "embeds.npy"
        np.save(embeds, np.random.default_rng(0).standard_normal((24, 72)).astype(np.float32) * 0.02)
        audio = ["--audio-embeds", str(embeds)]
    else:
        audio = ["--audio", str(speech)]
    code = main(["generate", "--export-dir", str(export_dir(name)), *audio, "--prompt", PROMPT, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    assert set(report) == {"text", "tokens", "stats"}
    assert isinstance(report["text"], str) and report["tokens"] and all(isinstance(t, int) for t in report["tokens"])
    assert STATS <= set(report["stats"]) and report["stats"]["backend"] == "onnxruntime"
    assert report["stats"]["kv_bytes"] < report["stats"]["kv_bytes_full"]
    assert captured.err == ""  # --json: nothing but the object, progress included, unless asked


def test_console_command_prints_the_text_then_stats_on_stderr(export_dir, speech):
    out = subprocess.run([sys.executable, "-m", "fastadasp.cli", "generate", "--export-dir",
                          str(export_dir("tiny-wavllm")), "--audio", str(speech), "--prompt", PROMPT,
                          "--max-new-tokens", "12"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() and "[generate]" not in out.stdout
    assert "audio tokens per layer" in out.stderr and "real-time factor" in out.stderr and "KV cache" in out.stderr
    assert "one clip of 1.50 s" in out.stderr and "onnxruntime" in out.stderr


def test_compare_torch_runs_the_reference_beside_the_export(export_dir, speech, capsys):
    code = main(["generate", "--export-dir", str(export_dir("tiny-qwen2-audio")), "--audio", str(speech),
                 "--max-new-tokens", "8", "--num-beams", "2", "--compare-torch", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["torch_reference"]["identical"] is True
    assert report["torch_reference"]["tokens"] == report["tokens"]


def _write(kind: str, path: Path) -> Path:
    if kind == "empty":
        soundfile.write(path, np.zeros(0, np.float32), 16000)
    elif kind == "nan":
        x = np.zeros(16000, np.float32)
        x[4000] = np.nan
        soundfile.write(path, x, 16000, subtype="FLOAT")
    elif kind == "not audio":
        path.write_text("RIFF? no: just text\n")
    elif kind == "too long":
        soundfile.write(path, 0.1 * np.random.default_rng(0).standard_normal(16000 * 12).astype(np.float32), 16000)
    elif kind == "directory":
        path.mkdir()
    return path


@pytest.mark.parametrize("kind,needles", [
    ("empty", ["holds no audio samples"]),
    ("nan", ["NaN or infinite samples", "0.250 s"]),
    ("not audio", ["not audio that libsndfile can read", "pass a WAV"]),
    ("too long", ["is 12.00 s long", "at most 10.26 s", "--audio-tokens-range MAX"]),
    ("directory", ["is a directory"]),
    ("missing", ["no such file"]),
])
def test_bad_audio_is_one_line_exit_2(export_dir, tmp_path, capsys, no_pytorch_model, kind, needles):
    path = _write(kind, tmp_path / "input.wav")
    code = main(["generate", "--export-dir", str(export_dir("tiny-wavllm")), "--audio", str(path)])
    _one_line_error(capsys, code, f"--audio {path}", *needles)


@pytest.mark.parametrize("name,argv,needles", [
    ("tiny-wavllm", [], ["pass the audio: --audio FILE"]),
    ("tiny-llama", ["--audio", "speech.wav"], ["no audio encoder", "--audio-embeds"]),
    ("tiny-llama", ["--audio-embeds", "missing.npy"], ["--audio-embeds missing.npy: no such file"]),
    ("tiny-wavllm", ["--audio", "speech.wav", "--audio-embeds", "e.npy"], ["--audio-embeds: not allowed with argument --audio"]),
    ("tiny-wavllm", ["--audio-embeds", "e.npy"], ["has an audio encoder", "--audio FILE"]),
    ("tiny-wavllm", ["--audio", "speech.wav", "--backend", "torch", "--compare-torch"], ["--compare-torch"]),
    ("tiny-wavllm", ["--audio", "speech.wav", "--backend", "trt"], ["argument --backend: invalid choice"]),
    ("tiny-wavllm", ["--audio", "speech.wav", "--prompt", "word " * 600], ["--prompt", "--max-text-tokens"]),
    ("tiny-wavllm", ["--audio", "speech.wav", "--max-new-tokens", "300"], ["--max-new-tokens 300", "decode budget of 256"]),
])
def test_bad_requests_are_one_line_exit_2(export_dir, speech, tmp_path, capsys, monkeypatch, no_pytorch_model, name,
                                          argv, needles):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "speech.wav").write_bytes(speech.read_bytes())
    np.save(tmp_path / "e.npy", np.zeros((4, 64), np.float32))
    _one_line_error(capsys, main(["generate", "--export-dir", str(export_dir(name)), *argv]), *needles)


def test_progress_is_shown_without_json_and_hidden_with_quiet(export_dir, speech, capsys, no_pytorch_model):
    argv = ["generate", "--export-dir", str(export_dir("tiny-qwen2-audio")), "--audio", str(speech),
            "--max-new-tokens", "8"]
    assert main(argv) == 0
    assert "[generate] decoding [" in capsys.readouterr().err
    assert main([*argv, "--quiet"]) == 0
    assert "[generate] decoding" not in capsys.readouterr().err
