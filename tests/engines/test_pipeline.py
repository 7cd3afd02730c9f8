"""TensorRT(-RTX) parses and builds our exported standard-op graphs (skipped where it cannot load)."""

import pytest

from fastadasp.cli import export_engine_main
from fastadasp.core.manifest import Manifest


@pytest.mark.tensorrt
def test_export_engine_builds_engines_for_every_graph(tmp_path, capsys):
    from fastadasp.engines.builder import TensorRTUnavailable, load_tensorrt

    try:
        _, flavor = load_tensorrt()
    except TensorRTUnavailable as exc:
        pytest.skip(str(exc))
    if flavor != "tensorrt-rtx":
        pytest.skip("this check builds for SM86 on a CPU, which needs TensorRT-RTX")
    out = tmp_path / "exp"
    code = export_engine_main([
        "--model", "tiny-wavllm", "--schedule", "decay", "--start-layer", "1", "--ratio", "0.5",
        "--audio-tokens-range", "1:25:128", "--compute-capability", "8.6", "--max-batch", "2",
        "--max-text-tokens", "32", "--max-new-tokens", "16", "--out", str(out),
    ])
    assert code == 0, capsys.readouterr().err
    manifest = Manifest.load(out)
    (entry,) = manifest.engines.values()
    assert entry.compute_capability == "8.6"
    assert set(entry.graphs) == {"prefill", "decode", "audio_encoder"}
    for graph in entry.graphs.values():
        assert (out / graph.file).stat().st_size == graph.bytes > 1000
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left behind


@pytest.mark.tensorrt
def test_bf16_graphs_parse_and_onnxruntime_refuses_them_clearly(tmp_path, tiny):
    from fastadasp.engines.builder import TensorRTUnavailable, parse_onnx
    from fastadasp.core.manifest import AudioTokenRange
    from fastadasp.exporter.export import ExportConfig, export_model
    from fastadasp.reduction.schedule import make_schedule
    from fastadasp.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

    lm = tiny("tiny-llama")
    export_model(lm, make_schedule("constant", lm.args.num_layers, 1, 0.3), tmp_path,
                 ExportConfig(dtype="bf16", audio_tokens=AudioTokenRange(1, 48, 128)), progress=lambda _: None)
    with pytest.raises(ValueError, match="bf16 graphs"):
        OnnxRuntimeBackend.from_export(tmp_path)
    try:
        reports = [parse_onnx(tmp_path / f) for f in ("prefill.onnx", "decode.onnx")]
    except TensorRTUnavailable as exc:
        pytest.skip(str(exc))
    assert all(r.ok for r in reports), [r.errors for r in reports]
    assert reports[0].outputs["present.0.key"][1].lower().startswith("bf")
