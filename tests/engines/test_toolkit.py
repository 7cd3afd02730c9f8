"""Loading TensorRT / TensorRT-RTX, describing it, and the compute capabilities it can target."""

from __future__ import annotations

import pytest

from fastadasp.core.errors import InvalidOption, UserError
from fastadasp.engines import toolkit
from fastadasp.engines.toolkit import (
    EngineBuildError,
    TensorRTUnavailable,
    check_target,
    describe_toolkit,
    load_tensorrt,
    normalize_compute_capability,
    rtx_targets,
    trt_compute_capability,
)


def _nothing_installed(name):
    raise ImportError(f"simulated: {name} is not installed")


@pytest.mark.parametrize("text,want", [("8.6", "8.6"), ("86", "8.6"), ("sm_89", "8.9"), ("SM120", "12.0"),
                                       (8.0, "8.0"), ("current", "current"), (None, None)])
def test_normalize_compute_capability(text, want):
    assert normalize_compute_capability(text) == want


def test_malformed_compute_capability_names_the_option():
    with pytest.raises(InvalidOption, match=r"^--compute-capability 'ampere' is not like '8.6' or 'sm86'$"):
        normalize_compute_capability("ampere", "--compute-capability")


def test_unavailable_message_is_one_line(monkeypatch):
    def broken(name):
        if name == "tensorrt":
            raise ModuleNotFoundError("No module named 'tensorrt'")
        raise OSError("libtensorrt_rtx.so.1: cannot open shared object file:\nNo such file or directory")

    monkeypatch.setattr(toolkit, "_import_module", broken)
    monkeypatch.delenv(toolkit.FLAVOR_ENV, raising=False)
    with pytest.raises(TensorRTUnavailable) as info:
        load_tensorrt()
    msg = str(info.value)
    assert "\n" not in msg
    assert "tensorrt:" in msg and "tensorrt_rtx: OSError" in msg and "libtensorrt_rtx.so.1" in msg
    assert "pip install tensorrt-rtx-cu13" in msg
    assert isinstance(info.value, UserError)  # the CLI prints it as one line


def test_loader_falls_through_broken_tensorrt(monkeypatch):
    class FakeRTX:
        Builder = OnnxParser = Logger = object
        __version__ = "9.9"

    def importer(name):
        if name == "tensorrt":
            raise RuntimeError("bindings imported but libnvinfer.so.10 failed to load")
        return FakeRTX

    monkeypatch.setattr(toolkit, "_import_module", importer)
    monkeypatch.delenv(toolkit.FLAVOR_ENV, raising=False)
    assert load_tensorrt() == (FakeRTX, "tensorrt-rtx")
    monkeypatch.setattr(toolkit, "_import_module", lambda name: FakeRTX)
    assert load_tensorrt()[1] == "tensorrt"  # real TensorRT is preferred when both load
    assert load_tensorrt("tensorrt-rtx")[1] == "tensorrt-rtx"


def test_flavor_from_environment_restricts_and_is_named(monkeypatch):
    monkeypatch.setattr(toolkit, "_import_module", _nothing_installed)
    monkeypatch.setenv(toolkit.FLAVOR_ENV, "tensorrt")
    with pytest.raises(TensorRTUnavailable, match=f"restricted by {toolkit.FLAVOR_ENV}=tensorrt"):
        load_tensorrt()
    monkeypatch.setenv(toolkit.FLAVOR_ENV, "tensorflow")
    with pytest.raises(InvalidOption, match=f"unknown TensorRT flavor 'tensorflow' \\(from {toolkit.FLAVOR_ENV}\\)"):
        load_tensorrt()


def test_describe_toolkit_for_rtx_is_ahead_of_time(fake_trt):
    assert describe_toolkit() == toolkit.ToolkitInfo("tensorrt-rtx", "0.0.fake", "aot")


def test_rtx_targets_are_sorted_numerically(fake_trt):
    assert rtx_targets(fake_trt) == ["7.5", "8.0", "8.6", "8.9", "12.0"]


def _assert_unsupported_target_message(msg: str, targets: list[str]) -> None:
    assert "\n" not in msg
    assert "9.9 is not a TensorRT-RTX" in msg
    for cc in targets:
        assert f"{cc} (" in msg, (cc, msg)  # each valid target, with the GPUs known by it
    assert "8.6 (RTX 30, A10, A40)" in msg
    assert "H100/H200 (9.0) need TensorRT, not TensorRT-RTX" in msg


def test_unsupported_target_lists_valid_ones_and_points_h100_to_tensorrt(fake_trt):
    with pytest.raises(EngineBuildError) as info:
        check_target("9.9", what="--compute-capability")
    msg = str(info.value)
    _assert_unsupported_target_message(msg, ["7.5", "8.0", "8.6", "8.9", "12.0"])
    assert msg.startswith("--compute-capability 9.9 ")
    assert isinstance(info.value, UserError)
    assert check_target("sm86") == "8.6"


def test_no_toolkit_means_nothing_to_check_a_target_against(monkeypatch):
    monkeypatch.setattr(toolkit, "_import_module", _nothing_installed)
    monkeypatch.delenv(toolkit.FLAVOR_ENV, raising=False)
    assert check_target("9.9") == "9.9"


@pytest.mark.tensorrt
def test_real_rtx_rejects_9_9(rtx_flavor):
    trt, _ = load_tensorrt("tensorrt-rtx")
    assert "8.6" in rtx_targets(trt) and "9.0" not in rtx_targets(trt)
    with pytest.raises(EngineBuildError) as info:
        trt_compute_capability(trt, "9.9")
    _assert_unsupported_target_message(str(info.value), rtx_targets(trt))
    assert trt_compute_capability(trt, "8.6") == trt.ComputeCapability.SM86
