"""The keyed engine cache: keys, reuse across cache objects and threads, the index, failures, interrupts and
leftovers of killed processes. A fake builder stands in for TensorRT except where marked ``tensorrt``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from fastadasp.core import interrupts
from fastadasp.engines.builder import build_engine
from fastadasp.engines.cache import EngineCache
from fastadasp.engines.profile import ShapeProfile
from fastadasp.engines.toolkit import EngineBuildError, ToolkitInfo
from fake_tensorrt_builder import FakeBuilder, make_fake_tensorrt
from onnx_graphs import HIDDEN, PROFILE, topk_model

FAKE_TOOLKIT = ToolkitInfo("fake", "1.0", "aot")


def _onnx_file(tmp_path) -> Path:
    return topk_model(tmp_path / "head.onnx")


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_cache_hit_does_not_rebuild(tmp_path):
    onnx_path = _onnx_file(tmp_path)
    cache, fake = EngineCache(tmp_path / "cache", toolkit=FAKE_TOOLKIT), FakeBuilder()
    first = cache.get_or_build(onnx_path, PROFILE, "fp32", "8.6", builder=fake)
    second = cache.get_or_build(onnx_path, PROFILE, "fp32", "sm86", builder=fake)  # same target, other spelling
    assert first.path == second.path and first.path.read_bytes() == b"ENGINE:fp32"
    assert (first.built, second.built) == (True, False) and first.key == second.key
    assert len(fake.calls) == 1
    assert fake.calls[0]["compute_capability"] == "8.6" and fake.calls[0]["flavor"] == "fake"
    # a fresh cache object (another process) finds it through the file system too
    third = EngineCache(tmp_path / "cache", toolkit=FAKE_TOOLKIT).get_or_build(onnx_path, PROFILE, "fp32", "8.6",
                                                                                builder=fake)
    assert third.path == first.path and not third.built
    assert len(fake.calls) == 1


def test_cache_builder_is_set_once_and_gets_the_label(tmp_path):
    fake = FakeBuilder()
    cache = EngineCache(tmp_path / "cache", toolkit=FAKE_TOOLKIT, builder=fake)
    engine = cache.get_or_build(_onnx_file(tmp_path), PROFILE, "fp16", label="prefill")
    assert engine.built and engine.path.read_bytes() == b"ENGINE:fp16"
    assert fake.calls[0]["label"] == "prefill" and fake.calls[0]["compute_capability"] is None


def test_cache_key_covers_what_shapes_the_engine(tmp_path):
    onnx_path = _onnx_file(tmp_path)
    cache, fake = EngineCache(tmp_path / "cache", toolkit=FAKE_TOOLKIT), FakeBuilder()
    base = cache.get_or_build(onnx_path, PROFILE, "fp32", "8.6", builder=fake).path
    fp16 = cache.get_or_build(onnx_path, PROFILE, "fp16", "8.6", builder=fake).path
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
    engine = cache.get_or_build(onnx_path, PROFILE, "bf16", "8.9", builder=FakeBuilder()).path
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    entry = index["engines"][engine.stem]
    assert entry["engine"] == engine.name and entry["precision"] == "bf16"
    assert entry["compute_capability"] == "8.9" and entry["flavor"] == "fake" and entry["flavor_version"] == "1.0"
    assert entry["profile"] == {"x": [[1, 1, HIDDEN], [2, 8, HIDDEN], [4, 64, HIDDEN]]}
    assert entry["bytes"] == engine.stat().st_size and entry["onnx_path"] == str(onnx_path.resolve())
    # nothing but engines, the index and the lock folder; the index is readable by others (not mkstemp's 0600)
    assert _names(tmp_path / "cache") == sorted([".locks", "index.json", engine.name])
    assert (tmp_path / "cache" / "index.json").stat().st_mode & 0o777 == 0o644


def test_cache_unknown_precision_is_one_line(tmp_path):
    cache = EngineCache(tmp_path / "cache", toolkit=FAKE_TOOLKIT)
    with pytest.raises(ValueError, match="^unknown precision 'int8'; choose one of fp32, fp16, bf16$"):
        cache.key_for(_onnx_file(tmp_path), PROFILE, "int8")


def test_cache_failed_build_leaves_nothing(tmp_path):
    onnx_path = _onnx_file(tmp_path)
    cache = EngineCache(tmp_path / "cache", toolkit=FAKE_TOOLKIT)
    with pytest.raises(EngineBuildError, match="fake builder failed"):
        cache.get_or_build(onnx_path, PROFILE, "fp32", "8.6", builder=FakeBuilder(fail=True))
    assert _names(tmp_path / "cache") == [".locks"]
    assert cache.entries() == {}
    ok = FakeBuilder()  # and the next attempt builds normally
    assert cache.get_or_build(onnx_path, PROFILE, "fp32", "8.6", builder=ok).path.read_bytes() == b"ENGINE:fp32"


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
    assert len(results) == 3 and len({r.path for r in results}) == 1
    assert sorted(r.built for r in results) == [False, False, True]  # the waiters report a reuse
    assert len(fake.calls) == 1


def test_cache_rebuilds_truncated_engine(tmp_path):
    onnx_path = _onnx_file(tmp_path)
    cache, fake = EngineCache(tmp_path / "cache", toolkit=FAKE_TOOLKIT), FakeBuilder()
    engine = cache.get_or_build(onnx_path, PROFILE, "fp32", "8.6", builder=fake).path
    engine.write_bytes(b"EN")  # size no longer matches the index
    rebuilt = cache.get_or_build(onnx_path, PROFILE, "fp32", "8.6", builder=fake)
    assert rebuilt.built and rebuilt.path.read_bytes() == b"ENGINE:fp32"
    assert len(fake.calls) == 2


def test_interrupted_build_leaves_no_building_folder(tmp_path, fake_trt, interrupt_handlers):
    """The real build_engine on a fake TensorRT-RTX, interrupted while 'native' code runs."""

    def build_then_signal(monitor, writer):
        writer.write(b"half an engine")
        os.kill(os.getpid(), signal.SIGINT)
        return monitor.step_complete("Building engine", 0)  # False: TensorRT stops

    fake_trt.install(make_fake_tensorrt(build_then_signal))
    cache = EngineCache(tmp_path / "cache")
    assert cache.toolkit.flavor == "tensorrt-rtx"
    with pytest.raises(interrupts.Interrupted):
        cache.get_or_build(_onnx_file(tmp_path), PROFILE, "fp32", "8.6", progress=False)
    assert _names(tmp_path / "cache") == [".locks"]
    assert [p for p in (tmp_path / "cache").rglob("*") if p.suffix in (".tmp", ".building")] == []
    assert cache.entries() == {}


def test_opening_the_cache_removes_what_killed_builds_left(tmp_path):
    root = tmp_path / "cache"
    root.mkdir()
    proc = subprocess.Popen(["true"])
    proc.wait()  # a pid that no longer runs, as after SIGKILL
    stale = root / f".a7ab72f61b414130.pid{proc.pid}.k2j3h4g5.building"
    stale.mkdir()
    (stale / "a7ab72f61b414130.engine").write_bytes(b"")
    (stale / f".a7ab72f61b414130.engine.pid{proc.pid}.x1y2z3w4.tmp").write_bytes(b"")
    running = root / f".b8bc83f72c525241.pid{os.getppid()}.abcdefgh.building"  # a build still in progress
    running.mkdir()
    EngineCache(root, toolkit=FAKE_TOOLKIT)
    assert _names(root) == [running.name]


@pytest.mark.tensorrt
def test_cache_with_real_builder(tmp_path, trt_flavor, trt_target):
    onnx_path = _onnx_file(tmp_path)
    cache = EngineCache(tmp_path / "cache")
    calls = []

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return build_engine(*args, **kwargs)

    first = cache.get_or_build(onnx_path, PROFILE, "fp32", trt_target, builder=counting, progress=False)
    second = cache.get_or_build(onnx_path, PROFILE, "fp32", trt_target, builder=counting, progress=False)
    assert first.path == second.path and first.path.stat().st_size > 0 and len(calls) == 1
    assert first.built and not second.built
    entry = cache.entries()[first.key]
    assert entry["flavor"] == trt_flavor and entry["bytes"] == first.path.stat().st_size
    assert _names(tmp_path / "cache") == sorted([".locks", "index.json", first.path.name])
