"""build_engine: real engines from small graphs (TensorRT / TensorRT-RTX), and with a fake TensorRT-RTX the
paths around the native build: cancellation, errors inside it, and that nothing temporary survives."""

from __future__ import annotations

import errno
import os
import signal

import numpy as np
import pytest

from fastadasp.core import interrupts
from fastadasp.core.errors import UserError
from fastadasp.engines.builder import build_engine
from fastadasp.engines.profile import ShapeProfile
from fastadasp.engines.toolkit import EngineBuildError, load_tensorrt
from fake_tensorrt_builder import ENGINE_BYTES, make_fake_tensorrt
from onnx_graphs import HIDDEN, PROFILE, custom_op_model, topk_model

# ----------------------------------------------------------------------------------------- real builds


@pytest.mark.tensorrt
def test_build_fp32_engine_for_sm86(tmp_path, trt_flavor, trt_target, capsys):
    onnx_path = topk_model(tmp_path / "head.onnx")
    out_dir = tmp_path / "engines"
    engine = out_dir / "head.engine"
    report = build_engine(onnx_path, engine, PROFILE, precision="fp32", compute_capability=trt_target)
    assert engine.is_file() and engine.stat().st_size > 0
    assert report.engine_path == engine and report.bytes == engine.stat().st_size
    assert report.precision == "fp32" and report.flavor == trt_flavor
    if trt_flavor == "tensorrt-rtx":
        assert report.compute_capability == "8.6"
    assert sorted(p.name for p in out_dir.iterdir()) == ["head.engine"], "temp files left behind"
    err = capsys.readouterr().err
    assert "[engine] head.engine: building from head.onnx" in err and "wrote" in err  # start/end lines
    assert "Building engine" in err  # the monitor's outermost phase


@pytest.mark.tensorrt
def test_build_fp16_graph(tmp_path, trt_target):
    onnx_path = topk_model(tmp_path / "head16.onnx", dtype=np.float16)
    engine = tmp_path / "head16.engine"
    report = build_engine(onnx_path, engine, PROFILE, precision="fp16", compute_capability=trt_target,
                          workspace_bytes=64 << 20, progress=False)
    assert report.precision == "fp16" and engine.stat().st_size > 0


@pytest.mark.tensorrt
def test_failed_build_leaves_nothing_behind(tmp_path, trt_target):
    onnx_path = topk_model(tmp_path / "head.onnx")
    out_dir = tmp_path / "engines"
    out_dir.mkdir()
    bad = ShapeProfile({"x": ((1, 1, HIDDEN + 1), (2, 8, HIDDEN + 1), (4, 64, HIDDEN + 1))})  # hidden is 16
    with pytest.raises(EngineBuildError) as info:
        build_engine(onnx_path, out_dir / "head.engine", bad, compute_capability=trt_target, progress=False)
    msg = str(info.value)
    assert "head.engine" in msg and "x" in msg and str(HIDDEN + 1) in msg, msg  # the builder's own error
    assert "\n" not in msg
    assert list(out_dir.iterdir()) == []


@pytest.mark.tensorrt
def test_failed_build_keeps_previous_engine(tmp_path, trt_target):
    onnx_path = custom_op_model(tmp_path / "custom.onnx")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"previous engine")
    profile = ShapeProfile({"x": ((1, HIDDEN), (2, HIDDEN), (4, HIDDEN))})
    with pytest.raises(EngineBuildError, match="merge_tokens_custom"):
        build_engine(onnx_path, engine, profile, compute_capability=trt_target, progress=False)
    assert engine.read_bytes() == b"previous engine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["custom.onnx", "model.engine"]


@pytest.mark.tensorrt
def test_profile_must_name_graph_inputs(tmp_path, trt_target):
    onnx_path = topk_model(tmp_path / "head.onnx")
    profile = ShapeProfile({"x": PROFILE.inputs["x"], "audio": ((1,), (1,), (1,))})
    with pytest.raises(EngineBuildError, match="audio"):
        build_engine(onnx_path, tmp_path / "e.engine", profile, compute_capability=trt_target, progress=False)
    assert not (tmp_path / "e.engine").exists()


@pytest.mark.tensorrt
def test_strongly_typed_precision_mismatch_is_refused(tmp_path, trt_target):
    trt, _ = load_tensorrt()
    if "FP16" in trt.BuilderFlag.__members__:
        pytest.skip("this TensorRT still builds weakly typed fp16 networks from an fp32 graph")
    onnx_path = topk_model(tmp_path / "head.onnx")
    with pytest.raises(EngineBuildError, match="strongly typed") as info:
        build_engine(onnx_path, tmp_path / "e.engine", PROFILE, precision="fp16",
                     compute_capability=trt_target, progress=False)
    assert "requested fp16 but the graph computes in fp32" in str(info.value)
    assert isinstance(info.value, UserError)  # the CLI prints it as one line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["head.onnx"]


@pytest.mark.tensorrt
def test_bad_plugin_library_fails_cleanly(tmp_path, trt_target):
    onnx_path = topk_model(tmp_path / "head.onnx")
    junk = tmp_path / "libnot_a_plugin.so"
    junk.write_bytes(b"not an ELF file")
    out = tmp_path / "out"
    with pytest.raises(EngineBuildError, match="libnot_a_plugin.so"):
        build_engine(onnx_path, out / "e.engine", PROFILE, compute_capability=trt_target,
                     plugin_libraries=[junk], progress=False)
    with pytest.raises(EngineBuildError, match="plugin library not found"):
        build_engine(onnx_path, out / "e.engine", PROFILE, compute_capability=trt_target,
                     plugin_libraries=[tmp_path / "missing.so"], progress=False)
    assert not out.exists() or list(out.iterdir()) == []


def _native_objects_in_tracebacks(exc: BaseException) -> list[str]:
    found, pending = [], [exc]
    while pending:
        err = pending.pop()
        if err is None:
            continue
        tb = err.__traceback__
        while tb is not None:
            found += [f"{tb.tb_frame.f_code.co_name}: {name}" for name, value in tb.tb_frame.f_locals.items()
                      if type(value).__module__.startswith("tensorrt")]
            tb = tb.tb_next
        pending += [err.__cause__, err.__context__]
    return found


@pytest.mark.tensorrt
def test_a_kept_failure_holds_no_tensorrt_objects(tmp_path, trt_target):
    """Objects a kept traceback holds are freed by the cycle collector at a random later moment; for a TensorRT
    builder that can be inside another TensorRT call, which deadlocks (see engines/network.py)."""
    junk = tmp_path / "libnot_a_plugin.so"
    junk.write_bytes(b"not an ELF file")
    with pytest.raises(EngineBuildError) as info:
        build_engine(topk_model(tmp_path / "head.onnx"), tmp_path / "e.engine", PROFILE, plugin_libraries=[junk],
                     compute_capability=trt_target, progress=False)
    assert _native_objects_in_tracebacks(info.value) == []
    with pytest.raises(EngineBuildError) as info:
        build_engine(topk_model(tmp_path / "head.onnx"), tmp_path / "e.engine",
                     ShapeProfile({"x": ((1, 1, 17), (1, 1, 17), (1, 1, 17))}), compute_capability=trt_target,
                     progress=False)
    assert _native_objects_in_tracebacks(info.value) == []


@pytest.mark.tensorrt
def test_unsupported_compute_capability(tmp_path, rtx_flavor):
    with pytest.raises(EngineBuildError, match="compute capability 6.1") as info:
        build_engine(topk_model(tmp_path / "head.onnx"), tmp_path / "e.engine", PROFILE,
                     compute_capability="6.1", progress=False)
    assert "H100/H200 (9.0) need TensorRT, not TensorRT-RTX" in str(info.value)


@pytest.mark.tensorrt
def test_interrupt_cancels_a_real_build(tmp_path, rtx_flavor, interrupt_handlers, capsys):
    """A signal recorded while native code runs makes the monitor tell TensorRT to stop; no engine, no temp."""
    onnx_path = topk_model(tmp_path / "head.onnx")
    out = tmp_path / "out"
    with pytest.raises(interrupts.Interrupted):
        with interrupts.native_section():
            os.kill(os.getpid(), signal.SIGINT)
            build_engine(onnx_path, out / "head.engine", PROFILE, compute_capability="8.6")
    err = capsys.readouterr().err
    assert "Building engine" in err and "interrupted: cancelling the build" in err, err
    assert list(out.iterdir()) == []


# ----------------------------------------------------------------------------------------- fake TensorRT-RTX


def test_fake_build_writes_the_engine(tmp_path, fake_trt):
    onnx_path = topk_model(tmp_path / "head.onnx")
    report = build_engine(onnx_path, tmp_path / "out" / "head.engine", PROFILE, compute_capability="8.6",
                          progress=False)
    assert report.engine_path.read_bytes() == ENGINE_BYTES and report.flavor == "tensorrt-rtx"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["head.engine"]


def test_signal_during_the_build_cancels_it_and_leaves_nothing(tmp_path, fake_trt, interrupt_handlers, capsys):
    answers = []

    def build_then_signal(monitor, writer):
        monitor.phase_start("Building engine", None, 3)
        writer.write(b"half an engine")
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the native build runs
        answers.append(monitor.step_complete("Building engine", 0))
        return False  # TensorRT stops when told to

    fake_trt.install(make_fake_tensorrt(build_then_signal))
    out = tmp_path / "out"
    out.mkdir()
    (out / "head.engine").write_bytes(b"previous engine")
    with pytest.raises(interrupts.Interrupted) as info:
        build_engine(topk_model(tmp_path / "head.onnx"), out / "head.engine", PROFILE, label="prefill")
    assert info.value.signum == signal.SIGTERM
    assert answers == [False]
    assert sorted(p.name for p in out.iterdir()) == ["head.engine"]  # no temp file
    assert (out / "head.engine").read_bytes() == b"previous engine"
    err = capsys.readouterr().err
    assert "[engine] prefill: interrupted: cancelling the build" in err
    assert "[engine] prefill: stopped after" in err and "nothing written" in err


def test_keyboard_interrupt_in_a_callback_is_raised_after_the_build(tmp_path, fake_trt, monkeypatch):
    """Without core.interrupts installed, Ctrl-C is a KeyboardInterrupt inside TensorRT's callback: kept,
    the build cancelled, and raised once TensorRT has returned."""

    def ctrl_c():
        raise KeyboardInterrupt

    monkeypatch.setattr(interrupts, "requested", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        build_engine(topk_model(tmp_path / "head.onnx"), tmp_path / "out" / "head.engine", PROFILE, progress=False)
    assert list((tmp_path / "out").iterdir()) == []


def test_builder_producing_nothing_is_an_error(tmp_path, fake_trt):
    fake_trt.install(make_fake_tensorrt(lambda monitor, writer: True))  # "succeeds" without writing
    with pytest.raises(EngineBuildError, match="head.engine: the builder produced no engine"):
        build_engine(topk_model(tmp_path / "head.onnx"), tmp_path / "out" / "head.engine", PROFILE, progress=False)
    assert list((tmp_path / "out").iterdir()) == []


def test_failed_write_is_reported_and_cleaned(tmp_path, fake_trt, monkeypatch):
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, fh):
            self.fh = fh

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode)))
    out = tmp_path / "out"
    with pytest.raises(EngineBuildError, match="head.engine: OSError: .*No space left on device"):
        build_engine(topk_model(tmp_path / "head.onnx"), out / "head.engine", PROFILE, progress=False)
    assert list(out.iterdir()) == []


def test_missing_onnx_and_unknown_precision(tmp_path, fake_trt):
    with pytest.raises(EngineBuildError, match="ONNX file not found"):
        build_engine(tmp_path / "nope.onnx", tmp_path / "e.engine", PROFILE, progress=False)
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        build_engine(tmp_path / "nope.onnx", tmp_path / "e.engine", PROFILE, precision="int4", progress=False)
    assert list(tmp_path.iterdir()) == []
