"""Parsing ONNX graphs into TensorRT networks: reports, errors by node, our exported graphs."""

from __future__ import annotations

import pytest

from fastadasp.engines.network import parse_onnx
from fastadasp.engines.toolkit import TensorRTUnavailable
from onnx_graphs import HIDDEN, custom_op_model, topk_model


@pytest.mark.tensorrt
def test_parse_supported_graph(tmp_path, trt_flavor):
    report = parse_onnx(topk_model(tmp_path / "head.onnx"))
    assert report.ok, report.errors
    assert report.errors == []
    assert report.num_layers >= 4
    assert report.flavor == trt_flavor
    assert report.inputs["x"][0] == (-1, -1, HIDDEN)
    assert set(report.outputs) == {"values", "indices"}


@pytest.mark.tensorrt
def test_parse_reports_unsupported_node_by_name(tmp_path, trt_flavor):
    report = parse_onnx(custom_op_model(tmp_path / "custom.onnx"))
    assert not report.ok
    assert report.errors, "a failed parse must say why"
    assert any("merge_tokens_custom" in e and "MergeTokens" in e for e in report.errors), report.errors


@pytest.mark.tensorrt
def test_parse_missing_file_is_an_error_not_a_crash(tmp_path, trt_flavor):
    report = parse_onnx(tmp_path / "nope.onnx")
    assert not report.ok and report.errors


@pytest.mark.tensorrt
def test_bf16_graphs_parse_and_onnxruntime_refuses_them_clearly(tmp_path, tiny):
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
