"""A TensorRT-shaped stand-in whose engines run their ONNX graph with ONNX Runtime on host memory.

`make_fake_tensorrt()` returns a module with the names TensorRTBackend uses (Logger, ILogger, Runtime,
ICudaEngine, IExecutionContext, TensorIOMode, TensorLocation, DataType, ComputeCapability,
get_plugin_registry); tests/runtime/test_tensorrt_api.py checks that every public name of its classes also
exists on the real TensorRT-RTX classes, so the fake cannot grow an API TensorRT lacks. A fake engine file
(`serialize_engine`, `write_fake_engines`) holds the graph, optimization profile 0 and the plugin libraries
it needs; deserialising it without them registered fails, as it does for a real engine.

The contract TensorRT documents, enforced here (real TensorRT checks some of it, and crashes or corrupts
memory on the rest):
- `set_input_shape` returns False (and logs an error) for an unknown input, another rank, a changed static
  dimension or a shape outside the profile;
- `execute_async_v3` returns False (and logs an error) unless every input shape was set, every I/O tensor
  has an address, and every address lies in a live buffer from `fake.device_memory` with room for the whole
  tensor. Host memory stands in for device memory: the backend allocates through `fake.device_memory`
  (torch CPU tensors whose extent the fake records), and the fake reads and writes the tensors through their
  addresses, so present bound to past is written in place exactly as on a GPU.

Output shapes come from the input shapes alone (the export's graphs are built that way): the fake learns them
by running the graph once on zeros per set of input shapes, and execution fails if real data ever disagrees.
Names only tests use start with `fake_`.
"""

from __future__ import annotations

import ctypes
import enum
import hashlib
import json
import math
import re
import types
import weakref
from pathlib import Path

import numpy as np
import torch

MAGIC = b"FASTADASP-FAKE-TRT-ENGINE\n"
FAKE_VERSION = "1.7.0.fake"

# ONNX Runtime's type strings -> TensorRT DataType names.
_ORT_TYPES = {"tensor(float)": "FLOAT", "tensor(float16)": "HALF", "tensor(bfloat16)": "BF16",
              "tensor(int64)": "INT64", "tensor(int32)": "INT32", "tensor(int8)": "INT8", "tensor(uint8)": "UINT8",
              "tensor(bool)": "BOOL"}


def _numpy_type(type_name: str):
    if type_name == "BF16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype({"FLOAT": "float32", "HALF": "float16", "INT64": "int64", "INT32": "int32", "INT8": "int8",
                     "UINT8": "uint8", "BOOL": "bool"}[type_name])


# --------------------------------------------------------------------------------------------- engine files


def serialize_engine(onnx_path: str | Path, profile: dict[str, list[list[int]]], plugins: list[str] = ()) -> bytes:
    """A fake engine: the graph itself, its profile (input -> [min, opt, max]) and the SHA-256 of every plugin
    library that must be registered before it deserialises."""
    header = json.dumps({"profile": profile, "plugins": list(plugins)}).encode()
    return MAGIC + len(header).to_bytes(8, "little") + header + Path(onnx_path).read_bytes()


def parse_engine(data: bytes) -> tuple[dict, bytes]:
    data = bytes(data)
    if not data.startswith(MAGIC):
        raise ValueError("not a fake engine (magic tag missing)")
    start = len(MAGIC) + 8
    size = int.from_bytes(data[len(MAGIC):start], "little")
    return json.loads(data[start:start + size]), data[start + size:]


def write_fake_engines(export_dir: str | Path, *, flavor: str = "tensorrt-rtx", version: str = FAKE_VERSION,
                       target: str = "8.6", plugin_libraries=(), roles=("prefill", "decode")) -> str:
    """Add fake prefill and decode engines for `export_dir`'s graphs with the profiles export-engine builds
    (engines/profile.py, from the manifest's serving limits) and record them in manifest.json as an entry
    "<flavor>-<version>/<target>" with correct hashes. Returns the entry key."""
    from fastadasp.core.files import sha256_file
    from fastadasp.core.manifest import EngineEntry, EngineFile, Manifest, PluginLibrary
    from fastadasp.engines.profile import decode_profile, prefill_profile

    export_dir = Path(export_dir)
    manifest = Manifest.load(export_dir, verify_hashes=False)
    limits = manifest.limits
    profiles = {"prefill": prefill_profile(manifest, limits.max_batch, limits.max_text_tokens),
                "decode": decode_profile(manifest, limits.max_batch, limits.max_text_tokens, limits.max_new_tokens)}
    libraries = [PluginLibrary(str(Path(p).resolve()), sha256_file(p)) for p in plugin_libraries]
    tag = re.sub("[^A-Za-z0-9]+", "", target)
    files = {}
    for role in roles:
        profile = profiles[role].to_json()
        path = export_dir / f"{role}.{tag}.engine"
        path.write_bytes(serialize_engine(export_dir / manifest.graphs[role].file, profile,
                                          [lib.sha256 for lib in libraries]))
        digest = sha256_file(path)
        files[role] = EngineFile(path.name, digest, path.stat().st_size, f"fake-{digest[:16]}", None, profile)
    key = f"{flavor}-{version}/{target}"
    manifest.with_engines(key, EngineEntry(flavor, version, target, manifest.dtype, libraries, files)).save(export_dir)
    return key


# --------------------------------------------------------------------------------------------- host "device" memory


class DeviceMemory:
    """Host memory standing in for device memory. Buffers come from `empty` (the backend's allocator interface),
    so the fake knows where each one starts and ends and can refuse a binding that would overrun it."""

    def __init__(self):
        self._blocks: list[tuple[int, int, weakref.ref]] = []

    def empty(self, shape, dtype: torch.dtype, device) -> torch.Tensor:
        if torch.device(device).type != "cpu":
            raise ValueError(f"the fake's device memory is host memory; asked for {device}")
        tensor = torch.empty(tuple(shape), dtype=dtype)
        if tensor.numel():
            start = tensor.data_ptr()
            self._blocks.append((start, start + tensor.numel() * tensor.element_size(), weakref.ref(tensor)))
        return tensor

    def room_at(self, address: int) -> int | None:
        """Bytes from `address` to the end of the live buffer holding it; None when no live buffer does."""
        self._blocks = [b for b in self._blocks if b[2]() is not None]
        for start, end, _ in self._blocks:
            if start <= address < end:
                return end - address
        return None


def _view(address: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    count = math.prod(shape)
    raw = (ctypes.c_char * (count * dtype.itemsize)).from_address(address)
    return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)


# ONNX Runtime sessions and learned output shapes, shared by every fake engine of a graph: tests deserialise
# the same engines many times and a session takes ~0.2 s to build.
_SESSIONS: dict[str, object] = {}
_OUTPUT_SHAPES: dict[tuple, dict[str, tuple[int, ...]]] = {}


def _session(onnx_bytes: bytes):
    import onnxruntime as ort

    key = hashlib.sha256(onnx_bytes).hexdigest()
    if key not in _SESSIONS:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        # Idle ONNX Runtime threads spin by default, starving the torch reference run next to it on a 2-core machine.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        _SESSIONS[key] = (key, ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"]))
    return _SESSIONS[key]


# --------------------------------------------------------------------------------------------- the module


def make_fake_tensorrt(version: str = FAKE_VERSION) -> types.ModuleType:
    """A fresh fake module: its own plugin registry and device memory (`fake.device_memory`)."""
    trt = types.ModuleType("fake_tensorrt")
    trt.__version__ = version
    trt.device_memory = DeviceMemory()

    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    class ILogger:
        def __init__(self):
            pass

        def log(self, severity, msg):
            pass

    ILogger.Severity = Severity

    class Logger(ILogger):
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = (Severity.INTERNAL_ERROR, Severity.ERROR, Severity.WARNING,
                                                         Severity.INFO, Severity.VERBOSE)

        def __init__(self, min_severity=Severity.WARNING):
            ILogger.__init__(self)
            self.min_severity = min_severity

        def log(self, severity, msg):
            if severity <= self.min_severity:
                print(f"[fake TensorRT] {severity.name}: {msg}")

    DataType = enum.Enum("DataType", ["FLOAT", "HALF", "BF16", "INT64", "INT32", "INT8", "UINT8", "BOOL"])
    TensorIOMode = enum.Enum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"])
    TensorLocation = enum.Enum("TensorLocation", ["DEVICE", "HOST"])
    ComputeCapability = enum.Enum("ComputeCapability",
                                  ["NONE", "CURRENT", "SM75", "SM80", "SM86", "SM89", "SM120", "SM121"])

    class IPluginRegistry:
        def __init__(self):
            self.fake_loaded: dict[str, str] = {}  # sha256 -> path of every library loaded

        def load_library(self, path):
            data = Path(path).read_bytes()
            self.fake_loaded[hashlib.sha256(data).hexdigest()] = str(path)
            return object()  # TensorRT returns a library handle

    registry = IPluginRegistry()

    def get_plugin_registry():
        return registry

    class ICudaEngine:
        def __init__(self, header: dict, onnx_bytes: bytes, logger):
            self._logger = logger
            self._key, self._session = _session(onnx_bytes)
            self._profile = {name: [tuple(s) for s in shapes] for name, shapes in header["profile"].items()}
            io = [(i, TensorIOMode.INPUT) for i in self._session.get_inputs()]
            io += [(o, TensorIOMode.OUTPUT) for o in self._session.get_outputs()]
            self._names = [arg.name for arg, _ in io]
            self._mode = {arg.name: mode for arg, mode in io}
            self._dtype = {arg.name: DataType[_ORT_TYPES[arg.type]] for arg, _ in io}
            self._shape = {arg.name: tuple(d if isinstance(d, int) else -1 for d in arg.shape) for arg, _ in io}
            for name in self._inputs():
                if name not in self._profile and -1 in self._shape[name]:
                    raise ValueError(f"fake engine: profile lacks dynamic input {name}")
            self.name = "fake engine"
            self.num_optimization_profiles = 1

        def _inputs(self) -> list[str]:
            return [n for n in self._names if self._mode[n] == TensorIOMode.INPUT]

        def _error(self, msg: str) -> None:
            self._logger.log(Severity.ERROR, msg)

        @property
        def num_io_tensors(self) -> int:
            return len(self._names)

        def get_tensor_name(self, index: int) -> str:
            return self._names[index]

        def get_tensor_mode(self, name: str):
            return self._mode.get(name, TensorIOMode.NONE)

        def get_tensor_dtype(self, name: str):
            return self._dtype[name]

        def get_tensor_location(self, name: str):
            return TensorLocation.DEVICE

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return self._shape[name]

        def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
            if profile_index != 0 or self._mode.get(name) != TensorIOMode.INPUT:
                self._error(f"getProfileShape: {name} is not an input of profile {profile_index}")
                return []
            shape = self._shape[name]
            return [tuple(s) for s in self._profile.get(name, [shape, shape, shape])]

        def create_execution_context(self, strategy=None):
            return IExecutionContext(self)

        def _output_shapes(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
            """What the graph produces for these input shapes, learned once by running it on zeros."""
            key = (self._key, tuple(sorted(shapes.items())))
            if key not in _OUTPUT_SHAPES:
                feed = {n: np.zeros(s, _numpy_type(self._dtype[n].name)) for n, s in shapes.items()}
                outputs = [n for n in self._names if self._mode[n] == TensorIOMode.OUTPUT]
                results = self._session.run(outputs, feed)
                _OUTPUT_SHAPES[key] = {n: tuple(r.shape) for n, r in zip(outputs, results)}
            return _OUTPUT_SHAPES[key]

    class IExecutionContext:
        def __init__(self, engine: ICudaEngine):
            self.engine = engine
            self._shapes: dict[str, tuple[int, ...]] = {}
            self._addresses: dict[str, int] = {}
            self.fake_calls: list[dict[str, int]] = []  # the addresses bound at each successful execution

        def set_input_shape(self, name: str, shape) -> bool:
            engine = self.engine
            shape = tuple(int(d) for d in shape)
            if engine.get_tensor_mode(name) != TensorIOMode.INPUT:
                engine._error(f"setInputShape: {name} is not an input tensor")
                return False
            static = engine.get_tensor_shape(name)
            if len(shape) != len(static) or any(s >= 0 and s != d for s, d in zip(static, shape)):
                engine._error(f"setInputShape: {name} {shape} does not fit the engine's dimensions {static}")
                return False
            lo, _, hi = engine.get_tensor_profile_shape(name, 0)
            if not all(a <= d <= b for a, d, b in zip(lo, shape, hi)):
                engine._error(f"setInputShape: {name} {shape} is outside optimization profile 0 ({lo} .. {hi})")
                return False
            self._shapes[name] = shape
            return True

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            engine = self.engine
            if engine.get_tensor_mode(name) == TensorIOMode.INPUT:
                return self._shapes.get(name, engine.get_tensor_shape(name))
            if all(n in self._shapes for n in engine._inputs()):
                return engine._output_shapes(self._shapes)[name]
            return engine.get_tensor_shape(name)

        def set_tensor_address(self, name: str, memory: int) -> bool:
            if self.engine.get_tensor_mode(name) == TensorIOMode.NONE:
                self.engine._error(f"setTensorAddress: {name} is not an I/O tensor of this engine")
                return False
            self._addresses[name] = int(memory)
            return True

        def get_tensor_address(self, name: str) -> int:
            return self._addresses.get(name, 0)

        def execute_async_v3(self, stream_handle: int) -> bool:
            engine = self.engine
            if not isinstance(stream_handle, int):
                engine._error(f"enqueueV3: the stream handle must be an int, got {type(stream_handle).__name__}")
                return False
            unset = [n for n in engine._inputs() if n not in self._shapes]
            if unset:
                engine._error(f"enqueueV3: input shapes not specified: {', '.join(unset)}")
                return False
            unbound = [n for n in engine._names if not self._addresses.get(n)]
            if unbound:
                engine._error(f"enqueueV3: no address set for tensor(s) {', '.join(unbound)}")
                return False
            shapes = {n: self.get_tensor_shape(n) for n in engine._names}
            types_ = {n: _numpy_type(engine._dtype[n].name) for n in engine._names}
            for name in engine._names:
                need = math.prod(shapes[name]) * types_[name].itemsize
                room = trt.device_memory.room_at(self._addresses[name])
                if room is None or room < need:
                    where = "not in any live device buffer" if room is None else f"in a buffer with {room} bytes left"
                    engine._error(f"enqueueV3: {name} {shapes[name]} needs {need} bytes at 0x{self._addresses[name]:x}, "
                                  f"{where}")
                    return False
            feed = {n: _view(self._addresses[n], shapes[n], types_[n]).copy() for n in engine._inputs()}
            outputs = [n for n in engine._names if engine._mode[n] == TensorIOMode.OUTPUT]
            results = engine._session.run(outputs, feed)
            for name, value in zip(outputs, results):
                if tuple(value.shape) != shapes[name]:
                    engine._error(f"enqueueV3: {name} came out {value.shape}, not the {shapes[name]} its input shapes "
                                  "implied (an output size that depends on data)")
                    return False
            # Written only after the graph ran: a present bound to its past is overwritten as a whole, like the
            # in-place ScatterElements of a real engine.
            for name, value in zip(outputs, results):
                _view(self._addresses[name], shapes[name], types_[name])[...] = value
            self.fake_calls.append(dict(self._addresses))
            return True

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, serialized_engine):
            try:
                header, onnx_bytes = parse_engine(serialized_engine)
            except ValueError as exc:
                self.logger.log(Severity.ERROR, f"deserializeCudaEngine: {exc}")
                return None
            missing = [p for p in header["plugins"] if p not in registry.fake_loaded]
            if missing:
                self.logger.log(Severity.ERROR, "deserializeCudaEngine: plugin creator not found (library sha256 "
                                f"{', '.join(m[:12] for m in missing)} is not registered)")
                return None
            return ICudaEngine(header, onnx_bytes, self.logger)

    for value in (ILogger, Logger, DataType, TensorIOMode, TensorLocation, ComputeCapability, IPluginRegistry,
                  ICudaEngine, IExecutionContext, Runtime, get_plugin_registry):
        setattr(trt, value.__name__, value)
    return trt
