"""Fixtures for the engine tests.

Tests marked ``tensorrt`` parse and build real engines; they skip with the reason when neither TensorRT nor
TensorRT-RTX loads. TensorRT-RTX builds ahead of time on a CPU, so with ``pip install tensorrt-rtx-cu13``
they run without a GPU. The rest run everywhere: they use a fake TensorRT-RTX (fake_tensorrt_builder.py) or a fake
builder.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from fastadasp.core import interrupts
from fastadasp.engines import toolkit
from fastadasp.engines.pipeline import CACHE_ENV
from fake_tensorrt_builder import importer_for, make_fake_tensorrt


@pytest.fixture(autouse=True)
def _private_engine_cache(tmp_path, monkeypatch):
    """No test reads or writes the user's engine cache."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "engine-cache"))


@pytest.fixture(scope="session")
def trt_flavor() -> str:
    try:
        _, flavor = toolkit.load_tensorrt()
    except toolkit.TensorRTUnavailable as exc:
        pytest.skip(str(exc))
    return flavor


@pytest.fixture(scope="session")
def rtx_flavor(trt_flavor) -> str:
    if trt_flavor != "tensorrt-rtx":
        pytest.skip("this check builds for SM86 on a CPU, which needs TensorRT-RTX")
    return trt_flavor


@pytest.fixture
def trt_target(trt_flavor) -> str | None:
    """SM86 where the toolkit can cross-build (TensorRT-RTX); TensorRT builds for its local GPU."""
    return "8.6" if trt_flavor == "tensorrt-rtx" else None


@pytest.fixture
def fake_trt(monkeypatch):
    """Make a fake TensorRT-RTX the only toolkit; returns it. `fake_trt.install(other)` swaps in another."""
    monkeypatch.delenv(toolkit.FLAVOR_ENV, raising=False)

    def install(module):
        monkeypatch.setattr(toolkit, "_import_module", importer_for(module))
        module.install = install
        return module

    return install(make_fake_tensorrt())


@pytest.fixture
def interrupt_handlers():
    """SIGINT/SIGTERM routed through fastadasp.core.interrupts for one test, then put back as they were."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    interrupts.install()
    yield
    interrupts.install()  # forgets a request the test left
    for sig, handler in before.items():
        signal.signal(sig, handler)


@pytest.fixture(scope="session")
def tiny_llama_export(tmp_path_factory, preset_cache) -> Path:
    """prefill.onnx + decode.onnx + manifest.json of tiny-llama (decay from layer 1, audio 1:24:48).

    Read-only: tests that add engines copy it first.
    """
    from fastadasp.core.manifest import AudioTokenRange
    from fastadasp.exporter.export import ExportConfig, export_model
    from fastadasp.models.registry import build_model
    from fastadasp.reduction.schedule import make_schedule

    if "tiny-llama" not in preset_cache:
        preset_cache["tiny-llama"] = build_model("tiny-llama", seed=0)
    lm = preset_cache["tiny-llama"]
    out = tmp_path_factory.mktemp("tiny-llama-export")
    export_model(lm, make_schedule("decay", lm.args.num_layers, 1, 0.5), out,
                 ExportConfig(audio_tokens=AudioTokenRange(1, 24, 48)), progress=lambda _: None)
    return out
