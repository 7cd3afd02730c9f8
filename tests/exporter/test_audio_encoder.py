"""The audio front-end ONNX graph: one graph for every clip length (dynamic "frames" axis) that matches
encode_audio under ONNX Runtime at several lengths, a valid graph, a manifest IO description and audio entry that
match the graph, quiet exporters, and clean failures (a graph that freezes the length is one)."""

from __future__ import annotations

import logging
import os
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto

import fastadasp.exporter.audio_encoder as ae
from export_checks import AUDIO_ENCODER_LOGGER, collect_logs
from fastadasp.exporter.audio_encoder import export_audio_encoder, run_audio_encoder_onnx

AUDIO_PRESETS = ["tiny-qwen2-audio", "tiny-qwen-audio", "tiny-wavllm"]
# Input shapes (without the batch): mel bins x a dynamic frame count and, for WavLLM, 160 waveform samples per
# frame; a full clip is 2 x max_source_positions frames (fastadasp/models/audio_front_end.py).
EXPECTED_INPUTS = {
    "tiny-qwen2-audio": {"input_features": [16, "frames"]},
    "tiny-qwen-audio": {"input_features": [16, "frames"]},
    "tiny-wavllm": {"input_features": [16, "frames"], "waveform": ["samples"]},
}
CLIP_FRAMES = {"tiny-qwen2-audio": 120, "tiny-qwen-audio": 120, "tiny-wavllm": 200}
FP32_TOL = 1e-4


@pytest.fixture
def exported(exports):
    """preset -> (lm, path, manifest entry) of the session's opset-17 export; .manifest(preset) its manifest."""

    def get(name):
        run = exports(name)
        entry = run.manifest.graphs["audio_encoder"]
        return run.lm, run.directory / entry.file, entry

    get.manifest = lambda name: exports(name).manifest
    return get


def random_inputs(io, batch: int, seed: int, frames: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, desc in io.inputs.items():
        shape = [frames if d == "frames" else 160 * frames if d == "samples" else d for d in desc.shape[1:]]
        x = rng.standard_normal((batch, *shape)).astype(np.float32)
        out[name] = x * 0.1 if name == "waveform" else x
    return out


def reference(lm, inputs: dict[str, np.ndarray]) -> np.ndarray:
    return lm.encode_audio(*(torch.from_numpy(inputs[name]) for name in lm.audio_front_end().inputs)).numpy()


def dims(value_info) -> list:
    return [d.dim_param if d.dim_param else d.dim_value for d in value_info.type.tensor_type.shape.dim]


@pytest.mark.parametrize("name", AUDIO_PRESETS)
def test_one_graph_matches_encode_audio_at_every_length(exported, name):
    """The dynamic graph against the PyTorch front-end: the shortest clip, odd and even lengths, the full window;
    batches of one and two; token counts as the manifest's length rule says."""
    lm, path, io = exported(name)
    spec = exported.manifest(name).audio
    clip = CLIP_FRAMES[name]
    assert (spec.min_frames, spec.clip_frames) == (3, clip)
    for frames, batch in [(spec.min_frames, 1), (spec.min_frames + 1, 2), (37, 1), (clip // 2, 2), (clip - 1, 1),
                          (clip, 2)]:
        inputs = random_inputs(io, batch, seed=frames, frames=frames)
        want = reference(lm, inputs)
        got = run_audio_encoder_onnx(path, **inputs)
        assert got.shape == want.shape == (batch, spec.clip_tokens(frames), lm.args.hidden_size), frames
        assert got.dtype == np.float32 and np.isfinite(got).all()
        err = float(np.abs(got - want).max())
        assert err <= FP32_TOL, f"{name} {frames} frames, batch {batch}: max-abs {err:.3g}"
    # Not a constant graph: another clip gives other embeddings.
    inputs = random_inputs(io, 1, seed=1, frames=clip)
    other = run_audio_encoder_onnx(path, **random_inputs(io, 1, seed=2, frames=clip))
    assert np.abs(other - run_audio_encoder_onnx(path, **inputs)).max() > 1e-3


@pytest.mark.parametrize("name", AUDIO_PRESETS)
def test_graph_is_valid_and_io_dict_matches(exported, name):
    lm, path, io = exported(name)
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path))
    assert io.file == "audio_encoder.onnx" == os.path.basename(path)
    assert io.files == ["audio_encoder.onnx"]  # small weights stay inside the graph
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]

    graph_inputs = {v.name: v for v in model.graph.input}
    graph_outputs = {v.name: v for v in model.graph.output}
    assert list(graph_inputs) == list(io.inputs) == list(EXPECTED_INPUTS[name])
    assert list(graph_outputs) == list(io.outputs) == ["audio_embeds"]
    for name_, desc in {**io.inputs, **io.outputs}.items():
        vi = graph_inputs.get(name_) or graph_outputs[name_]
        assert desc.dtype == "float32"
        assert vi.type.tensor_type.elem_type == TensorProto.FLOAT
        assert dims(vi) == desc.shape
        assert desc.shape[0] == "batch"
    for name_, shape in EXPECTED_INPUTS[name].items():
        assert io.inputs[name_].shape == ["batch", *shape]

    assert io.outputs["audio_embeds"].shape == ["batch", "audio_tokens", lm.args.hidden_size]
    # audio_tokens is the adapter's own count for a full clip, and the manifest's length rule agrees.
    gen = torch.Generator().manual_seed(0)
    assert lm._synthetic_audio(1, 0, gen).shape[1] == io.audio_tokens
    spec = exported.manifest(name).audio
    assert spec == lm.audio_front_end().spec
    assert spec.clip_tokens(spec.clip_frames) == io.audio_tokens
    assert spec.dims["frames"] == [spec.min_frames, spec.clip_frames, spec.clip_frames]

    # ONNX Runtime sees the same IO.
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert {i.name: i.shape for i in sess.get_inputs()} == {k: v.shape for k, v in io.inputs.items()}
    assert [o.shape for o in sess.get_outputs()] == [io.outputs["audio_embeds"].shape]


def test_models_without_front_end_raise(tiny, tmp_path):
    from fastadasp.models.qwen_audio import QwenAudioLM
    from fastadasp.models.wavllm import WavLLMLM

    qa, wl = tiny("tiny-qwen-audio"), tiny("tiny-wavllm")
    no_front_end = [
        tiny("tiny-llama"),
        QwenAudioLM(qa.hf_model, None, name="qwen-audio-no-encoder"),
        WavLLMLM(wl.hf_model, wl.decoder.lora, wl.scale_net, None, name="wavllm-no-front-end"),
    ]
    for lm in no_front_end:
        with pytest.raises(ValueError, match="no audio front-end"):
            export_audio_encoder(lm, tmp_path / f"{lm.name}.onnx")
    assert os.listdir(tmp_path) == []


def test_failed_export_leaves_nothing_behind(tiny, tmp_path, monkeypatch):
    target = tmp_path / "audio_encoder.onnx"
    target.write_bytes(b"previous graph")

    def half_written(module, args, names, path, opset):
        with open(path, "wb") as f:
            f.write(b"\x08half")
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(ae, "_export_dynamo", half_written)
    monkeypatch.setattr(ae, "_export_torchscript", half_written)
    with pytest.raises(RuntimeError, match="exporter crashed"):
        export_audio_encoder(tiny("tiny-qwen-audio"), target)
    assert os.listdir(tmp_path) == ["audio_encoder.onnx"]
    assert target.read_bytes() == b"previous graph"


def test_falls_back_when_first_exporter_fails(tiny, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("dynamo unavailable")

    monkeypatch.setattr(ae, "_export_dynamo", broken)
    lm = tiny("tiny-qwen-audio")
    path = tmp_path / "enc.onnx"
    io = export_audio_encoder(lm, path)
    assert os.listdir(tmp_path) == ["enc.onnx"]
    assert io.external_data is None
    for frames in (5, 120):  # the TorchScript graph follows the length too
        inputs = random_inputs(io, 2, seed=3, frames=frames)
        assert np.abs(run_audio_encoder_onnx(path, **inputs) - reference(lm, inputs)).max() <= FP32_TOL


def test_a_graph_that_freezes_the_clip_length_is_a_failed_export(tiny, tmp_path, monkeypatch):
    """An exporter that bakes the example's length into the graph is caught by the length check after export."""

    def static(module, args, front_end, path, opset):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's warnings about exactly this
            torch.onnx.export(module, args, path, dynamo=False, input_names=list(front_end.inputs),
                              output_names=["audio_embeds"], opset_version=opset)

    monkeypatch.setattr(ae, "_export_dynamo", static)
    monkeypatch.setattr(ae, "_export_torchscript", static)
    with pytest.raises(RuntimeError, match="(?s)could not export .*does not take a 3-frame clip"):
        export_audio_encoder(tiny("tiny-qwen-audio"), tmp_path / "enc.onnx")
    assert os.listdir(tmp_path) == []


def test_run_rejects_wrong_inputs(exported):
    _, path, io = exported("tiny-wavllm")
    inputs = random_inputs(io, 1, seed=0, frames=50)
    del inputs["waveform"]
    with pytest.raises(ValueError, match="waveform"):
        run_audio_encoder_onnx(path, **inputs)


def test_exporters_expected_notices_go_to_debug(exports):
    """A dynamo export below opset 18 makes torch announce opset 18 and skip torchvision operators; none of it
    reaches the exporters' handlers (the user's terminal), all of it is kept at DEBUG."""
    run = exports("tiny-qwen-audio")  # dynamo, opset 17
    assert [r.getMessage() for r in run.shown] == []
    demoted = " ".join(r.getMessage() for r in run.debug if r.levelno == logging.DEBUG)
    assert "Setting ONNX exporter to use operator set version 18" in demoted
    assert "torchvision is not installed" in demoted


def test_exporter_errors_and_unexpected_warnings_are_passed_on():
    compat = logging.getLogger("torch.onnx._internal.exporter._compat")
    converter = logging.getLogger("onnxscript.version_converter")
    with collect_logs() as (shown, debug), ae._exporter_notices_to_debug():
        compat.warning("Setting ONNX exporter to use operator set version 18 because ...")
        compat.warning("an unexpected warning")
        compat.error("a real error")
        converter.warning("Skipping version conversion for node Split")
        converter.error("a real converter error")
    assert [(r.levelname, r.getMessage()) for r in shown] == [
        ("WARNING", "an unexpected warning"), ("ERROR", "a real error"), ("ERROR", "a real converter error")]
    assert all(r.name == AUDIO_ENCODER_LOGGER and r.levelno == logging.DEBUG for r in debug)
    assert len(debug) == 2


def test_adapter_front_end_matches_encode_audio(tiny):
    """The module each adapter hands the exporter computes encode_audio for a full clip and a short one, and
    makes as many tokens as its length rule says."""
    for name in AUDIO_PRESETS:
        lm = tiny(name)
        front_end = lm.audio_front_end()
        clip = CLIP_FRAMES[name]
        for frames in (clip, 41):
            features = lm.synthetic_audio_features(2, torch.Generator().manual_seed(1), frames=frames)
            assert list(features) == list(front_end.inputs) == list(EXPECTED_INPUTS[name])
            expected = [frames if d == "frames" else 160 * frames if d == "samples" else d
                        for shapes in EXPECTED_INPUTS[name].values() for d in shapes]
            assert [d for v in features.values() for d in v.shape[1:]] == expected
            with torch.no_grad():
                out = front_end.module(*features.values())
            torch.testing.assert_close(out, lm.encode_audio(*features.values()))
            assert out.shape[1] == front_end.spec.clip_tokens(frames)


def test_full_window_equals_the_hugging_face_tower(tiny):
    """For a full window the variable-length Whisper-style forward is Hugging Face's own forward."""
    from fastadasp.models.audio_front_end import whisper_encoder_forward

    for name in AUDIO_PRESETS:
        lm = tiny(name)
        encoder = {"tiny-qwen2-audio": lambda: lm.hf_model.model.audio_tower,
                   "tiny-qwen-audio": lambda: lm.audio_encoder.encoder,
                   "tiny-wavllm": lambda: lm.front_end.whisper}[name]()
        mel = torch.randn(2, 16, CLIP_FRAMES[name], generator=torch.Generator().manual_seed(4))
        with torch.no_grad():
            torch.testing.assert_close(whisper_encoder_forward(encoder, mel), encoder(mel).last_hidden_state)
