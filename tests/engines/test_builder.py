"""Engine builder and engine cache.

Tests marked ``tensorrt`` parse and build real engines; they skip (printing why) when neither TensorRT nor
TensorRT-RTX loads. TensorRT-RTX builds ahead of time on a CPU, so on a machine with
``pip install tensorrt-rtx-cu13`` they run without a GPU. The cache and loader tests need neither.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from fastadasp.engines import builder as builder_mod  # noqa: E402
from fastadasp.engines.builder import (  # noqa: E402
    EngineBuildError,
    ShapeProfile,
    TensorRTUnavailable,
    ToolkitInfo,
    build_engine,
    load_tensorrt,
    normalize_compute_capability,
    parse_onnx,
)
from fastadasp.engines.cache import EngineCache  # noqa: E402

HIDDEN, TOP_K = 16, 4
PROFILE = ShapeProfile({"x": ((1, 1, HIDDEN), (2, 8, HIDDEN), (4, 64, HIDDEN))})


# ----------------------------------------------------------------------------------------- graphs


def _save(model: onnx.ModelProto, path: Path) -> Path:
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def topk_model(path: Path, dtype=np.float32) -> Path:
    """x[batch, seq, 16] -> softmax(x @ W + b) -> top-4 (values, indices); batch and seq are dynamic."""
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((HIDDEN, HIDDEN)).astype(dtype), "W"),
        numpy_helper.from_array(rng.standard_normal(HIDDEN).astype(dtype), "bias"),
        numpy_helper.from_array(np.array([TOP_K], np.int64), "k"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["proj"], name="proj"),
        helper.make_node("Add", ["proj", "bias"], ["logits"], name="add_bias"),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1, name="softmax"),
        helper.make_node("TopK", ["probs", "k"], ["values", "indices"], axis=-1, name="topk"),
    ]
    graph = helper.make_graph(
        nodes, "topk_head",
        [helper.make_tensor_value_info("x", elem, ["batch", "seq", HIDDEN])],
        [helper.make_tensor_value_info("values", elem, ["batch", "seq", TOP_K]),
         helper.make_tensor_value_info("indices", TensorProto.INT64, ["batch", "seq", TOP_K])],
        inits,
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def custom_op_model(path: Path) -> Path:
    """Relu followed by a node of a private domain that has neither a function body nor a plugin."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("MergeTokens", ["r"], ["y"], name="merge_tokens_custom", domain="ai.fastadasp.test"),
    ]
    graph = helper.make_graph(
        nodes, "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", HIDDEN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", HIDDEN])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("ai.fastadasp.test", 1)])
    model.ir_version = 8
    onnx.save(model, str(path))  # the checker would reject the unknown domain; the parser must too
    return path


@pytest.fixture
def trt_flavor():
    try:
        _, flavor = load_tensorrt()
    except TensorRTUnavailable as exc:
        pytest.skip(str(exc))
    return flavor


def _target(flavor: str) -> str | None:
    """SM86 where the toolkit can cross-build (TensorRT-RTX); TensorRT builds for its local GPU."""
    return "8.6" if flavor == "tensorrt-rtx" else None


# ----------------------------------------------------------------------------------------- parsing


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


# ----------------------------------------------------------------------------------------- building


@pytest.mark.tensorrt
def test_build_fp32_engine_for_sm86(tmp_path, trt_flavor, capsys):
    onnx_path = topk_model(tmp_path / "head.onnx")
    out_dir = tmp_path / "engines"
    engine = out_dir / "head.engine"
    t0 = time.perf_counter()
    report = build_engine(onnx_path, engine, PROFILE, precision="fp32", compute_capability=_target(trt_flavor))
    wall = time.perf_counter() - t0
    print(f"built {report.bytes} bytes in {report.seconds:.2f}s (wall {wall:.2f}s) with {report.flavor}")
    assert engine.is_file() and engine.stat().st_size > 0
    assert report.engine_path == engine and report.bytes == engine.stat().st_size
    assert report.precision == "fp32" and report.flavor == trt_flavor
    if trt_flavor == "tensorrt-rtx":
        assert report.compute_capability == "8.6"
    assert sorted(p.name for p in out_dir.iterdir()) == ["head.engine"], "temp files left behind"
    err = capsys.readouterr().err
    assert "head.engine" in err and "wrote" in err  # start/end progress lines with elapsed seconds


@pytest.mark.tensorrt
def test_build_fp16_graph(tmp_path, trt_flavor):
    onnx_path = topk_model(tmp_path / "head16.onnx", dtype=np.float16)
    engine = tmp_path / "head16.engine"
    report = build_engine(onnx_path, engine, PROFILE, precision="fp16", compute_capability=_target(trt_flavor),
                          workspace_bytes=64 << 20, progress=False)
    assert report.precision == "fp16" and engine.stat().st_size > 0


@pytest.mark.tensorrt
def test_failed_build_leaves_nothing_behind(tmp_path, trt_flavor):
    onnx_path = topk_model(tmp_path / "head.onnx")
    out_dir = tmp_path / "engines"
    out_dir.mkdir()
    bad = ShapeProfile({"x": ((1, 1, HIDDEN + 1), (2, 8, HIDDEN + 1), (4, 64, HIDDEN + 1))})  # hidden is 16
    with pytest.raises(EngineBuildError) as info:
        build_engine(onnx_path, out_dir / "head.engine", bad, compute_capability=_target(trt_flavor), progress=False)
    msg = str(info.value)
    assert "head.engine" in msg and "x" in msg and str(HIDDEN + 1) in msg, msg  # the builder's own error
    assert list(out_dir.iterdir()) == []


@pytest.mark.tensorrt
def test_failed_build_keeps_previous_engine(tmp_path, trt_flavor):
    onnx_path = custom_op_model(tmp_path / "custom.onnx")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"previous engine")
    profile = ShapeProfile({"x": ((1, HIDDEN), (2, HIDDEN), (4, HIDDEN))})
    with pytest.raises(EngineBuildError, match="merge_tokens_custom"):
        build_engine(onnx_path, engine, profile, compute_capability=_target(trt_flavor), progress=False)
    assert engine.read_bytes() == b"previous engine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["custom.onnx", "model.engine"]


@pytest.mark.tensorrt
def test_profile_must_name_graph_inputs(tmp_path, trt_flavor):
    onnx_path = topk_model(tmp_path / "head.onnx")
    profile = ShapeProfile({"x": PROFILE.inputs["x"], "audio": ((1,), (1,), (1,))})
    with pytest.raises(EngineBuildError, match="audio"):
        build_engine(onnx_path, tmp_path / "e.engine", profile, compute_capability=_target(trt_flavor), progress=False)
    assert not (tmp_path / "e.engine").exists()


@pytest.mark.tensorrt
def test_strongly_typed_precision_mismatch_is_refused(tmp_path, trt_flavor):
    trt, _ = load_tensorrt()
    if "FP16" in trt.BuilderFlag.__members__:
        pytest.skip("this TensorRT still builds weakly typed fp16 networks from an fp32 graph")
    onnx_path = topk_model(tmp_path / "head.onnx")
    with pytest.raises(EngineBuildError, match="strongly typed"):
        build_engine(onnx_path, tmp_path / "e.engine", PROFILE, precision="fp16",
                     compute_capability=_target(trt_flavor), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["head.onnx"]


@pytest.mark.tensorrt
def test_bad_plugin_library_fails_cleanly(tmp_path, trt_flavor):
    onnx_path = topk_model(tmp_path / "head.onnx")
    junk = tmp_path / "libnot_a_plugin.so"
    junk.write_bytes(b"not an ELF file")
    out = tmp_path / "out"
    with pytest.raises(EngineBuildError, match="libnot_a_plugin.so"):
        build_engine(onnx_path, out / "e.engine", PROFILE, compute_capability=_target(trt_flavor),
                     plugin_libraries=[junk], progress=False)
    with pytest.raises(EngineBuildError, match="plugin library not found"):
        build_engine(onnx_path, out / "e.engine", PROFILE, compute_capability=_target(trt_flavor),
                     plugin_libraries=[tmp_path / "missing.so"], progress=False)
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.tensorrt
def test_unsupported_compute_capability(tmp_path, trt_flavor):
    if trt_flavor != "tensorrt-rtx":
        pytest.skip("only TensorRT-RTX targets other compute capabilities")
    with pytest.raises(EngineBuildError, match="compute capability 6.1"):
        build_engine(topk_model(tmp_path / "head.onnx"), tmp_path / "e.engine", PROFILE,
                     compute_capability="6.1", progress=False)


@pytest.mark.tensorrt
def test_cache_with_real_builder(tmp_path, trt_flavor):
    onnx_path = topk_model(tmp_path / "head.onnx")
    cache = EngineCache(tmp_path / "cache")
    calls = []

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return build_engine(*args, **kwargs)

    first = cache.get_or_build(onnx_path, PROFILE, "fp32", _target(trt_flavor), builder=counting)
    second = cache.get_or_build(onnx_path, PROFILE, "fp32", _target(trt_flavor), builder=counting)
    assert first == second and first.stat().st_size > 0 and len(calls) == 1
    entry = cache.entries()[first.stem]
    assert entry["flavor"] == trt_flavor and entry["bytes"] == first.stat().st_size


# ----------------------------------------------------------------------------------------- pure-Python parts


def test_shape_profile_validation():
    with pytest.raises(ValueError, match="min <= opt <= max"):
        ShapeProfile({"x": ((4, 1), (2, 1), (1, 1))})
    with pytest.raises(ValueError, match="ranks differ"):
        ShapeProfile({"x": ((1,), (1, 2), (1, 2))})
    assert ShapeProfile({"x": ([1, 2], [2, 2], [3, 2])}).inputs["x"] == ((1, 2), (2, 2), (3, 2))


@pytest.mark.parametrize("text,want", [("8.6", "8.6"), ("86", "8.6"), ("sm_89", "8.9"), ("SM120", "12.0"),
                                       (8.0, "8.0"), ("current", "current"), (None, None)])
def test_normalize_compute_capability(text, want):
    assert normalize_compute_capability(text) == want


def test_unavailable_message_is_one_line(monkeypatch):
    def broken(name):
        if name == "tensorrt":
            raise ModuleNotFoundError("No module named 'tensorrt'")
        raise OSError("libtensorrt_rtx.so.1: cannot open shared object file:\nNo such file or directory")

    monkeypatch.setattr(builder_mod, "_import_module", broken)
    monkeypatch.delenv(builder_mod.FLAVOR_ENV, raising=False)
    with pytest.raises(TensorRTUnavailable) as info:
        load_tensorrt()
    msg = str(info.value)
    print(msg)
    assert "\n" not in msg
    assert "tensorrt:" in msg and "tensorrt_rtx: OSError" in msg and "libtensorrt_rtx.so.1" in msg
    assert "pip install tensorrt-rtx-cu13" in msg


def test_loader_falls_through_broken_tensorrt(monkeypatch):
    class FakeRTX:
        Builder = OnnxParser = Logger = object
        __version__ = "9.9"

    def importer(name):
        if name == "tensorrt":
            raise RuntimeError("bindings imported but libnvinfer.so.10 failed to load")
        return FakeRTX

    monkeypatch.setattr(builder_mod, "_import_module", importer)
    monkeypatch.delenv(builder_mod.FLAVOR_ENV, raising=False)
    assert load_tensorrt() == (FakeRTX, "tensorrt-rtx")
    monkeypatch.setattr(builder_mod, "_import_module", lambda name: FakeRTX)
    assert load_tensorrt()[1] == "tensorrt"  # real TensorRT is preferred when both load
    assert load_tensorrt("tensorrt-rtx")[1] == "tensorrt-rtx"


FAKE_TOOLKIT = ToolkitInfo("fake", "1.0", "aot")


class FakeBuilder:
    def __init__(self, delay: float = 0.0, fail: bool = False):
        self.calls, self.delay, self.fail = [], delay, fail
        self._lock = threading.Lock()

    def __call__(self, onnx_path, engine_path, profile, **kw):
        with self._lock:
            self.calls.append(kw)
        time.sleep(self.delay)
        Path(engine_path).write_bytes(b"partial")
        if self.fail:
            raise EngineBuildError("fake builder failed")
        Path(engine_path).write_bytes(b"ENGINE:" + kw["precision"].encode())


def _onnx_file(tmp_path) -> Path:
    return topk_model(tmp_path / "head.onnx")


def test_cache_hit_does_not_rebuild(tmp_path):
    onnx_path = _onnx_file(tmp_path)
    cache, fake = EngineCache(tmp_path / "cache", toolkit=FAKE_TOOLKIT), FakeBuilder()
    first = cache.get_or_build(onnx_path, PROFILE, "fp32", "8.6", builder=fake)
    second = cache.get_or_build(onnx_path, PROFILE, "fp32", "sm86", builder=fake)  # same target, other spelling
    assert first == second and first.read_bytes() == b"ENGINE:fp32"
    assert len(fake.calls) == 1
    assert fake.calls[0]["compute_capability"] == "8.6" and fake.calls[0]["flavor"] == "fake"
    # a fresh cache object (another process) finds it through the file system too
    assert EngineCache(tmp_path / "cache", toolkit=FAKE_TOOLKIT).get_or_build(
        onnx_path, PROFILE, "fp32", "8.6", builder=fake) == first
    assert len(fake.calls) == 1


def test_cache_key_covers_what_shapes_the_engine(tmp_path):
    onnx_path = _onnx_file(tmp_path)
    cache, fake = EngineCache(tmp_path / "cache", toolkit=FAKE_TOOLKIT), FakeBuilder()
    base = cache.get_or_build(onnx_path, PROFILE, "fp32", "8.6", builder=fake)
    fp16 = cache.get_or_build(onnx_path, PROFILE, "fp16", "8.6", builder=fake)
    assert fp16 != base and fp16.read_bytes() == b"ENGINE:fp16" and len(fake.calls) == 2

    k = cache.key_for(onnx_path, PROFILE, "fp32", "8.6")
    assert base.name == f"{k}.engine"
    wider = ShapeProfile({"x": ((1, 1, HIDDEN), (2, 8, HIDDEN), (8, 64, HIDDEN))})
    assert cache.key_for(onnx_path, wider, "fp32", "8.6") != k
    assert cache.key_for(onnx_path, PROFILE, "fp32", "8.9") != k
    assert cache.key_for(onnx_path, PROFILE, "fp32", None) != k
    assert EngineCache(tmp_path / "cache", toolkit=ToolkitInfo("fake", "1.1", "aot")).key_for(
        onnx_path, PROFILE, "fp32", "8.6") != k
    plugin = tmp_path / "libplugin.so"
    plugin.write_bytes(b"v1")
    with_plugin = cache.key_for(onnx_path, PROFILE, "fp32", "8.6", plugin_libraries=[plugin])
    assert with_plugin != k
    plugin.write_bytes(b"v2-changed")
    os.utime(plugin, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert cache.key_for(onnx_path, PROFILE, "fp32", "8.6", plugin_libraries=[plugin]) != with_plugin
    # editing the graph changes the key
    other = topk_model(tmp_path / "head.onnx", dtype=np.float16)
    assert cache.key_for(other, PROFILE, "fp32", "8.6") != k


def test_cache_key_covers_external_data(tmp_path):
    model = onnx.load(str(_onnx_file(tmp_path)))
    path = tmp_path / "ext" / "head.onnx"
    path.parent.mkdir()
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="head.weights", size_threshold=0)
    cache = EngineCache(tmp_path / "cache", toolkit=FAKE_TOOLKIT)
    before = cache.key_for(path, PROFILE, "fp32", "8.6")
    weights = path.parent / "head.weights"
    data = bytearray(weights.read_bytes())
    data[0] ^= 0xFF
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert cache.key_for(path, PROFILE, "fp32", "8.6") != before


def test_cache_index_records_metadata(tmp_path):
    onnx_path = _onnx_file(tmp_path)
    cache = EngineCache(tmp_path / "cache", toolkit=FAKE_TOOLKIT)
    engine = cache.get_or_build(onnx_path, PROFILE, "bf16", "8.9", builder=FakeBuilder())
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    entry = index["engines"][engine.stem]
    assert entry["engine"] == engine.name and entry["precision"] == "bf16"
    assert entry["compute_capability"] == "8.9" and entry["flavor"] == "fake" and entry["flavor_version"] == "1.0"
    assert entry["profile"] == {"x": [[1, 1, HIDDEN], [2, 8, HIDDEN], [4, 64, HIDDEN]]}
    assert entry["bytes"] == engine.stat().st_size and entry["onnx_path"] == str(onnx_path.resolve())
    # nothing but engines, the index and the lock folder
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted([".locks", "index.json", engine.name])


def test_cache_failed_build_leaves_nothing(tmp_path):
    onnx_path = _onnx_file(tmp_path)
    cache = EngineCache(tmp_path / "cache", toolkit=FAKE_TOOLKIT)
    with pytest.raises(EngineBuildError, match="fake builder failed"):
        cache.get_or_build(onnx_path, PROFILE, "fp32", "8.6", builder=FakeBuilder(fail=True))
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".locks"]
    assert cache.entries() == {}
    ok = FakeBuilder()  # and the next attempt builds normally
    assert cache.get_or_build(onnx_path, PROFILE, "fp32", "8.6", builder=ok).read_bytes() == b"ENGINE:fp32"


def test_cache_concurrent_requests_build_once(tmp_path):
    """flock locks per open file, so two threads contend exactly like two processes would."""
    onnx_path = _onnx_file(tmp_path)
    fake, results, errors = FakeBuilder(delay=0.3), [], []

    def worker():
        try:
            cache = EngineCache(tmp_path / "cache", toolkit=FAKE_TOOLKIT)
            results.append(cache.get_or_build(onnx_path, PROFILE, "fp32", "8.6", builder=fake, progress=False))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    assert len(results) == 3 and len(set(results)) == 1
    assert len(fake.calls) == 1


def test_cache_rebuilds_truncated_engine(tmp_path):
    onnx_path = _onnx_file(tmp_path)
    cache, fake = EngineCache(tmp_path / "cache", toolkit=FAKE_TOOLKIT), FakeBuilder()
    engine = cache.get_or_build(onnx_path, PROFILE, "fp32", "8.6", builder=fake)
    engine.write_bytes(b"EN")  # size no longer matches the index
    assert cache.get_or_build(onnx_path, PROFILE, "fp32", "8.6", builder=fake).read_bytes() == b"ENGINE:fp32"
    assert len(fake.calls) == 2
