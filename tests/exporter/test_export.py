"""export-engine end to end: files, manifest contract, atomicity, errors, external data."""

import json

import onnx
import pytest
import torch

from fastadasp.cli import export_engine_main
from fastadasp.exporter import export as export_module
from fastadasp.core.manifest import AudioTokenRange, Manifest, ManifestError
from fastadasp.exporter.export import ExportConfig, export_model
from fastadasp.reduction.schedule import make_schedule
from fastadasp.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from fastadasp.runtime.backends.torch_backend import TorchBackend
from fastadasp.runtime.generate import GenerationConfig, generate


def _export(lm, out, **kw):
    schedule = make_schedule("decay", lm.args.num_layers, 1, 0.5)
    config = ExportConfig(audio_tokens=AudioTokenRange(1, 30, 128), **kw)
    manifest = export_model(lm, schedule, out, config, progress=lambda _: None)
    return schedule, manifest


def test_cli_writes_graphs_and_manifest_and_explains_missing_engines(tmp_path, capsys, monkeypatch):
    from fastadasp.engines import builder

    def no_toolkit(name):  # this machine has no TensorRT and no TensorRT-RTX, whatever is installed
        raise ImportError(f"simulated: {name} is not installed")

    monkeypatch.setattr(builder, "_import_module", no_toolkit)
    out = tmp_path / "exp"
    code = export_engine_main(["--model", "tiny-qwen2-audio", "--schedule", "decay", "--start-layer", "1",
                               "--flops-target", "0.3", "--audio-tokens-range", "1:300:512", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().err
    engine_lines = [line for line in printed.splitlines() if line.startswith("[engines]")]
    assert len(engine_lines) == 1 and "not built" in engine_lines[0]
    manifest = Manifest.load(out)
    assert {"prefill", "decode", "audio_encoder"} <= set(manifest.graphs)
    assert manifest.schedule.flops_target == 0.3
    assert len(manifest.schedule.ratio_numerators) == 6
    assert manifest.plugin.op == "WeightedMerge" and manifest.plugin.plugin_namespace == "fastadasp"
    prefill = onnx.load(out / "prefill.onnx", load_external_data=False)
    merge_nodes = [n for n in prefill.graph.node if n.op_type == "WeightedMerge"]
    assert merge_nodes and all(n.domain == "fastadasp" for n in merge_nodes)
    attrs = {a.name for a in merge_nodes[0].attribute}
    assert {"ratio_numerator", "plugin_version", "plugin_namespace"} <= attrs
    assert [f.name for f in prefill.functions] == ["WeightedMerge"]


def test_runtime_from_export_matches_torch(tmp_path, tiny):
    lm = tiny("tiny-wavllm")
    schedule, manifest = _export(lm, tmp_path)
    assert manifest.graphs["prefill"].inputs["lora_scale"].shape == ["batch", lm.args.hidden_size]
    backend = OnnxRuntimeBackend.from_export(tmp_path)
    inputs = lm.synthetic_prompt(batch_size=2, seed=9)
    config = GenerationConfig(max_new_tokens=16, num_beams=3)
    assert generate(backend, inputs, config).sequences.tolist() == \
        generate(TorchBackend(lm.decoder, schedule), inputs, config).sequences.tolist()


def test_manifest_mismatch_is_refused(tmp_path, tiny):
    _export(tiny("tiny-llama"), tmp_path)
    path = tmp_path / "manifest.json"
    data = json.loads(path.read_text())
    data["version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="version 99"):
        OnnxRuntimeBackend.from_export(tmp_path)
    data["version"] = 2
    path.write_text(json.dumps(data))
    with open(tmp_path / "decode.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ManifestError, match="decode.onnx does not match"):
        Manifest.load(tmp_path)


def test_failed_export_leaves_previous_export_intact(tmp_path, tiny, monkeypatch):
    lm = tiny("tiny-llama")
    _export(lm, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def broken(*_args, **_kw):
        raise RuntimeError("simulated failure while building decode")

    monkeypatch.setattr(export_module, "build_decode", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        _export(lm, tmp_path, position_policy="first")
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before  # no staging folder, no half-written graph, old manifest untouched


def test_large_models_use_external_data(tmp_path, tiny, monkeypatch):
    monkeypatch.setattr(export_module, "EXTERNAL_DATA_THRESHOLD", 0)
    lm = tiny("tiny-llama")
    schedule, manifest = _export(lm, tmp_path, include_audio_encoder=False)
    assert manifest.graphs["prefill"].files == ["prefill.onnx", "prefill.onnx.data"]
    assert set(manifest.graphs["prefill"].sha256) == {"prefill.onnx", "prefill.onnx.data"}
    backend = OnnxRuntimeBackend.from_export(tmp_path)
    inputs = lm.synthetic_prompt(seed=1)
    torch.testing.assert_close(backend.prefill(inputs, 1).logits,
                               TorchBackend(lm.decoder, schedule).prefill(inputs, 1).logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--audio-tokens-range", "30:1:5"], "MIN <= OPT <= MAX"),
        (["--audio-tokens-range", "big"], "MIN:OPT:MAX"),
        (["--opset", "13"], "--opset 13 is outside the supported 17..21"),
        (["--ratio", "1.2"], "ratio must be in [0, 1)"),
    ],
)
def test_bad_export_arguments_give_one_line(tmp_path, capsys, argv, message):
    code = export_engine_main(["--model", "tiny-llama", "--out", str(tmp_path / "x"), "--skip-engines", *argv])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
