"""Stand-ins for TensorRT, so the paths around the native build run on every machine.

`make_fake_tensorrt()`: just enough of the `tensorrt_rtx` module's builder API for `build_engine` to run its
steps (progress, cancellation, temp files); `on_build(monitor, writer)` plays the native build and returns
what `build_serialized_network_to_stream` would. `FakeBuilder`: a whole `build_engine` replacement for the
engine cache, writing b"ENGINE:<precision>".
"""

from __future__ import annotations

import enum
import os
import threading
import time
import types
from pathlib import Path
from typing import Callable

from fastadasp.engines.toolkit import EngineBuildError

ENGINE_BYTES = b"FAKE-ENGINE"


def default_build(monitor, writer) -> bool:
    monitor.phase_start("Building engine", None, 2)
    for step in range(2):
        if not monitor.step_complete("Building engine", step):
            monitor.phase_finish("Building engine")
            return False
    writer.write(ENGINE_BYTES)
    monitor.phase_finish("Building engine")
    return True


def make_fake_tensorrt(on_build: Callable = default_build, hidden: int = 16) -> types.SimpleNamespace:
    trt = types.SimpleNamespace(__version__="0.0.fake", __file__="fake_tensorrt_builder.py")

    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    class ILogger:
        pass

    ILogger.Severity = Severity

    class IProgressMonitor:
        def __init__(self):
            pass

    class IStreamWriter:
        def __init__(self):
            pass

    dtype = types.SimpleNamespace(name="FLOAT")
    tensor = types.SimpleNamespace(name="x", shape=(-1, -1, hidden), dtype=dtype, is_shape_tensor=False)
    layer = types.SimpleNamespace(num_outputs=1, get_output=lambda j: tensor)

    class Network:
        num_inputs = num_outputs = num_layers = 1

        def get_input(self, i):
            return tensor

        def get_output(self, i):
            return tensor

        def get_layer(self, i):
            return layer

        def get_flag(self, flag):
            return True

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            return os.path.isfile(path)

    class Profile:
        def set_shape(self, name, mn, opt, mx):
            pass

    class IBuilderConfig:
        progress_monitor = None
        num_compute_capabilities = 0

        def set_compute_capability(self, cc, index):
            return True

        def add_optimization_profile(self, profile):
            return 0

        def set_memory_pool_limit(self, pool, size):
            pass

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags):
            return Network()

        def create_builder_config(self):
            return IBuilderConfig()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network_to_stream(self, network, config, writer):
            return on_build(config.progress_monitor, writer)

    trt.ILogger = trt.Logger = ILogger
    trt.IProgressMonitor, trt.IStreamWriter = IProgressMonitor, IStreamWriter
    trt.IBuilderConfig, trt.Builder, trt.OnnxParser = IBuilderConfig, Builder, OnnxParser
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 0})
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", {"DEBUG": 0})  # no FP16 flag: strongly typed only, as in RTX
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0})
    trt.ComputeCapability = enum.IntEnum("ComputeCapability", {"NONE": 0, "CURRENT": 1, "SM75": 2, "SM80": 3,
                                                               "SM86": 4, "SM89": 5, "SM120": 6})
    trt.get_plugin_registry = lambda: types.SimpleNamespace(load_library=lambda path: None)
    return trt


def importer_for(module) -> Callable:
    """A replacement for fastadasp.engines.toolkit._import_module under which only `module` (as tensorrt_rtx)
    is installed."""

    def importer(name):
        if name == "tensorrt_rtx":
            return module
        raise ImportError(f"simulated: {name} is not installed")

    return importer


class FakeBuilder:
    """Records each call's keywords; can wait (to overlap with other threads) or fail after a partial write."""

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
