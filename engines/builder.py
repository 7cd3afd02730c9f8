"""Parse ONNX graphs and build serialized TensorRT / TensorRT-RTX engines.

Two toolkits are supported, chosen at run time by :func:`load_tensorrt`:

* ``tensorrt`` -- NVIDIA TensorRT 10+ (module ``tensorrt``). It needs a CUDA GPU and builds for that GPU.
* ``tensorrt-rtx`` -- NVIDIA TensorRT-RTX (module ``tensorrt_rtx``, ``pip install tensorrt-rtx-cu13``).
  Its builder runs ahead of time on a CPU-only machine and targets chosen compute capabilities
  (``IBuilderConfig.num_compute_capabilities`` / ``set_compute_capability``); kernels are compiled
  just in time on the target GPU when the engine is loaded.

Precision: TensorRT-RTX and TensorRT 11 only build *strongly typed* networks, where every tensor keeps the
type the ONNX graph gives it. There ``precision`` must describe the graph (export it in fp16/bf16); a
mismatch is an :class:`EngineBuildError` rather than a silently fp32 engine. TensorRT 10, whose builder
still has ``BuilderFlag.FP16``/``BF16``, builds a weakly typed network with that flag set instead.

Everything imports TensorRT lazily, so this module imports (and the rest of the package works) without it.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import logging
import os
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

log = logging.getLogger("fastadasp.engines")

__all__ = [
    "BuildReport",
    "EngineBuildError",
    "ParseReport",
    "PRECISIONS",
    "ShapeProfile",
    "TensorRTUnavailable",
    "ToolkitInfo",
    "build_engine",
    "describe_toolkit",
    "load_tensorrt",
    "normalize_compute_capability",
    "parse_onnx",
]

PRECISIONS = ("fp32", "fp16", "bf16")

# (flavor, module name), in the order load_tensorrt tries them.
_CANDIDATES = (("tensorrt", "tensorrt"), ("tensorrt-rtx", "tensorrt_rtx"))
FLAVOR_ENV = "FASTADASP_TENSORRT_FLAVOR"  # "tensorrt" or "tensorrt-rtx": use only that toolkit

INSTALL_HINT = (
    "install TensorRT-RTX with `pip install tensorrt-rtx-cu13` (builds engines on a CPU-only machine too) "
    "or TensorRT 10+ matching your CUDA (`pip install tensorrt-cu12` / `tensorrt-cu13`, needs a GPU)"
)


class TensorRTUnavailable(RuntimeError):
    """Neither TensorRT nor TensorRT-RTX could be imported; the message is a single line saying why."""


class EngineBuildError(RuntimeError):
    """Parsing or building an engine failed; the message carries the builder's logged errors."""


# --------------------------------------------------------------------------------------------- loading


def _import_module(name: str):
    """The importer load_tensorrt uses (a seam for tests)."""
    return importlib.import_module(name)


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_tensorrt(flavor: str | None = None) -> tuple[Any, str]:
    """Import TensorRT (tried first) or TensorRT-RTX and return ``(module, flavor)``.

    ``flavor`` (or the ``FASTADASP_TENSORRT_FLAVOR`` environment variable) restricts the choice to one
    toolkit. A toolkit whose Python bindings import but whose shared libraries are missing raises
    ``OSError``/``RuntimeError`` rather than ``ImportError``; every such failure counts as "not available".
    Raises :class:`TensorRTUnavailable` with a one-line reason when nothing loads.
    """
    wanted = flavor or os.environ.get(FLAVOR_ENV) or None
    candidates = _CANDIDATES
    if wanted is not None:
        candidates = tuple(c for c in _CANDIDATES if wanted in c)
        if not candidates:
            names = ", ".join(f for f, _ in _CANDIDATES)
            raise ValueError(f"unknown TensorRT flavor {wanted!r}; choose one of {names}")
    failures = []
    for flav, module_name in candidates:
        try:
            module = _import_module(module_name)
        except Exception as exc:  # ImportError, or OSError/RuntimeError from shared libraries that fail to load
            failures.append(f"{module_name}: {type(exc).__name__}: {_one_line(exc, 160)}")
            continue
        missing = [a for a in ("Builder", "OnnxParser", "Logger") if not hasattr(module, a)]
        if missing:
            failures.append(f"{module_name}: imported {getattr(module, '__file__', '?')} but it lacks {', '.join(missing)}")
            continue
        return module, flav
    restricted = f" (restricted by {FLAVOR_ENV}={wanted})" if wanted and not flavor else ""
    raise TensorRTUnavailable(
        "cannot load an engine builder (" + "; ".join(failures) + ")" + restricted + "; " + INSTALL_HINT
    )


@dataclass(frozen=True)
class ToolkitInfo:
    """What identifies the engine builder in a cache key: flavor, its version and the build device."""

    flavor: str
    version: str
    device: str  # "aot" for TensorRT-RTX (no device involved); the local GPU's name and SM for TensorRT


def _local_gpu() -> tuple[str | None, str | None]:
    """(name, "major.minor") of CUDA device 0 via torch, or (None, None) when unknown."""
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            return torch.cuda.get_device_name(0), f"{major}.{minor}"
    except Exception:  # pragma: no cover - torch without CUDA, driver problems
        pass
    return None, None


def describe_toolkit(flavor: str | None = None) -> ToolkitInfo:
    trt, flav = load_tensorrt(flavor)
    version = str(getattr(trt, "__version__", "unknown"))
    if flav == "tensorrt-rtx":
        return ToolkitInfo(flav, version, "aot")
    name, cc = _local_gpu()
    return ToolkitInfo(flav, version, f"{name} sm{cc}" if name else "unknown-gpu")


# --------------------------------------------------------------------------------------------- types


@dataclass
class ShapeProfile:
    """One optimization profile: input name -> (min_shape, opt_shape, max_shape)."""

    inputs: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]

    def __post_init__(self):
        norm = {}
        for name, shapes in self.inputs.items():
            if len(shapes) != 3:
                raise ValueError(f"profile for input {name!r} needs (min, opt, max) shapes, got {shapes!r}")
            mn, opt, mx = (tuple(int(d) for d in s) for s in shapes)
            if not len(mn) == len(opt) == len(mx):
                raise ValueError(f"profile for input {name!r}: min/opt/max ranks differ: {mn}, {opt}, {mx}")
            if any(d < 0 for d in mn) or not all(a <= b <= c for a, b, c in zip(mn, opt, mx)):
                raise ValueError(f"profile for input {name!r} must satisfy 0 <= min <= opt <= max per dimension: "
                                 f"min={mn} opt={opt} max={mx}")
            norm[str(name)] = (mn, opt, mx)
        self.inputs = norm

    def to_json(self) -> dict[str, list[list[int]]]:
        return {k: [list(s) for s in v] for k, v in sorted(self.inputs.items())}


@dataclass
class ParseReport:
    ok: bool
    errors: list[str]
    num_layers: int
    flavor: str
    # name -> (shape with -1 for dynamic dims, TensorRT dtype name); filled when parsing succeeded
    inputs: dict[str, tuple[tuple[int, ...], str]] = field(default_factory=dict)
    outputs: dict[str, tuple[tuple[int, ...], str]] = field(default_factory=dict)


@dataclass
class BuildReport:
    engine_path: Path
    bytes: int
    seconds: float
    flavor: str
    compute_capability: str | None  # "8.6"...; None: TensorRT-RTX's default portable set / unknown local GPU
    precision: str


# --------------------------------------------------------------------------------------------- helpers


def normalize_compute_capability(cc: str | float | None) -> str | None:
    """"8.6", "86", "sm86", "SM_86", 8.6 -> "8.6"; "12.0"/"sm120" -> "12.0"; "current" -> "current"."""
    if cc is None:
        return None
    text = str(cc).strip().lower().replace("_", "")
    if text in ("current", "native", "local"):
        return "current"
    text = text.removeprefix("sm").removeprefix("compute")
    m = re.fullmatch(r"(\d+)\.(\d)", text) or re.fullmatch(r"(\d+)(\d)", text)
    if not m:
        raise ValueError(f"compute capability {cc!r} is not like '8.6' or 'sm86'")
    return f"{int(m.group(1))}.{int(m.group(2))}"


def _trt_compute_capability(trt, cc: str):
    enum = trt.ComputeCapability
    member = "CURRENT" if cc == "current" else "SM" + cc.replace(".", "")
    if member not in enum.__members__:
        known = sorted((int(k[2:-1]), int(k[-1])) for k in enum.__members__ if k.startswith("SM"))
        supported = ", ".join(f"{a}.{b}" for a, b in known)
        raise EngineBuildError(f"compute capability {cc} is not supported by this TensorRT-RTX; choose one of "
                               f"{supported} or 'current'")
    return enum.__members__[member]


# Warnings our graphs trigger by design, logged at DEBUG only: every inlined WeightedMerge call repeats the
# local function's (unnamed) nodes; token ids / cache lengths are int64 on purpose; after a merge the
# sequence length is computed (n - m), so TensorRT cannot prove a reshape dim is not a 0-placeholder, though
# the length rule keeps every span >= 1 token (allowzero=1 would silence it but breaks the build: see
# exporter/onnx_builder.py).
_EXPECTED_WARNINGS = ("will not be queryable", "has Int64 binding", "might or might not be zero")


class _Logger:
    """Factory for an ILogger subclass (built per module so it works for either flavor)."""

    @staticmethod
    def make(trt):
        severity = trt.ILogger.Severity
        error_levels = {severity.INTERNAL_ERROR, severity.ERROR}
        py_levels = {
            severity.INTERNAL_ERROR: logging.INFO,
            severity.ERROR: logging.INFO,
            severity.WARNING: logging.WARNING,
            severity.INFO: logging.DEBUG,
        }

        class CollectingLogger(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)
                self.errors: list[str] = []
                self._lock = threading.Lock()

            def log(self, sev, msg):
                if sev in error_levels:
                    with self._lock:
                        self.errors.append(_one_line(msg, 1000))
                # errors travel in EngineBuildError / ParseReport; log them quietly to avoid printing twice
                level = py_levels.get(sev)
                if level == logging.WARNING and any(p in msg for p in _EXPECTED_WARNINGS):
                    level = logging.DEBUG
                if level is not None and log.isEnabledFor(level):
                    log.log(level, "[%s] %s", getattr(sev, "name", sev), msg)

        return CollectingLogger()


_loaded_plugin_libraries: dict[str, Any] = {}
_plugin_lock = threading.Lock()


def _load_plugin_libraries(trt, paths: Iterable[str | os.PathLike]) -> None:
    """Register plugin libraries with the process-wide plugin registry (once per library)."""
    for p in paths:
        path = os.path.realpath(os.fspath(p))
        with _plugin_lock:
            if path in _loaded_plugin_libraries:
                continue
            if not os.path.isfile(path):
                raise EngineBuildError(f"plugin library not found: {path}")
            registry = trt.get_plugin_registry()
            if hasattr(registry, "load_library"):
                handle = registry.load_library(path)
                if handle is None:
                    raise EngineBuildError(f"the plugin registry refused {path} (not a TensorRT plugin library, "
                                           "or its plugins are already registered)")
            else:  # older bindings: the library registers its creators when loaded
                handle = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            _loaded_plugin_libraries[path] = handle
            log.info("loaded plugin library %s", path)


def _parser_errors(parser) -> list[str]:
    errors = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        try:
            node, name, op = err.node(), err.node_name(), err.node_operator()
            code = getattr(err.code(), "name", err.code())
            where = f"node {node}" + (f" '{name}'" if name else "") + (f" ({op})" if op else "")
            errors.append(f"{where}: {code}: {_one_line(err.desc(), 1000)} [{err.func()} {err.file()}:{err.line()}]")
        except Exception:  # bindings without the per-field accessors
            errors.append(_one_line(str(err), 1000))
    return errors


def _tensor_info(t) -> tuple[tuple[int, ...], str]:
    return tuple(int(d) for d in t.shape), getattr(t.dtype, "name", str(t.dtype))


def _strongly_typed_flag(trt) -> int:
    flags = trt.NetworkDefinitionCreationFlag
    return 1 << int(flags.STRONGLY_TYPED) if "STRONGLY_TYPED" in flags.__members__ else 0


def _parse(trt, logger, builder, onnx_path: str, strongly_typed: bool):
    network = builder.create_network(_strongly_typed_flag(trt) if strongly_typed else 0)
    parser = trt.OnnxParser(network, logger)
    # parse_from_file resolves external data (weights next to the .onnx) relative to the model's folder.
    ok = bool(parser.parse_from_file(onnx_path))
    errors = _parser_errors(parser)
    if not ok and not errors:
        errors = list(logger.errors) or [f"the ONNX parser rejected {onnx_path} without saying why"]
    return network, parser, ok, errors


def _is_strongly_typed(trt, network) -> bool:
    flags = trt.NetworkDefinitionCreationFlag
    if "STRONGLY_TYPED" not in flags.__members__:
        return False
    try:
        return bool(network.get_flag(flags.STRONGLY_TYPED))
    except Exception:
        return False


def _float_types(trt, network) -> set[str]:
    names = set()
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for j in range(layer.num_outputs):
            names.add(getattr(layer.get_output(j).dtype, "name", ""))
    for i in range(network.num_inputs):
        names.add(getattr(network.get_input(i).dtype, "name", ""))
    return names & {"FLOAT", "HALF", "BF16"}


_PRECISION_DTYPE = {"fp32": "FLOAT", "fp16": "HALF", "bf16": "BF16"}


def _check_strong_precision(trt, network, precision: str, flavor: str) -> None:
    """For strongly typed networks the graph's own types decide the precision; make sure they match."""
    found = _float_types(trt, network)
    want = _PRECISION_DTYPE[precision]
    reduced = found & {"HALF", "BF16"}
    if precision == "fp32" and not reduced:
        return
    if precision != "fp32" and want in found:
        return
    have = ", ".join(sorted({"FLOAT": "fp32", "HALF": "fp16", "BF16": "bf16"}[t] for t in found)) or "no float"
    raise EngineBuildError(
        f"{flavor} builds strongly typed networks, so the ONNX graph's types decide the precision: "
        f"requested {precision} but the graph computes in {have}; export the graph in {precision} "
        f"(or convert it, e.g. with ModelOpt AutoCast) instead of asking the builder to"
    )


class _Progress:
    def __init__(self, enabled: bool, label: str):
        self.enabled, self.label, self.t0 = enabled, label, time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def __call__(self, msg: str) -> None:
        line = f"[engine] {self.label}: {msg} ({self.elapsed():.1f}s)"
        if self.enabled:
            print(line, file=sys.stderr, flush=True)
            log.debug(line)
        else:
            log.info(line)


def _make_progress_monitor(trt, progress: _Progress, max_depth: int = 1):
    """An IProgressMonitor printing phases up to ``max_depth`` levels deep (the rest is too chatty)."""

    class Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self._depth: dict[str, int] = {}
            self._lock = threading.Lock()

        def phase_start(self, phase_name, parent_phase, num_steps):
            try:
                with self._lock:
                    depth = 0 if not parent_phase else self._depth.get(parent_phase, 0) + 1
                    self._depth[phase_name] = depth
                if depth <= max_depth:
                    progress("  " * depth + f"{phase_name} ({num_steps} steps)")
            except Exception:  # never let a display problem abort the build
                pass

        def step_complete(self, phase_name, step):
            return True

        def phase_finish(self, phase_name):
            try:
                with self._lock:
                    depth = self._depth.pop(phase_name, 0)
                if depth == 0:
                    progress(f"{phase_name} done")
            except Exception:
                pass

    return Monitor()


class _FileStreamWriter:
    @staticmethod
    def make(trt, fh):
        class Writer(trt.IStreamWriter):
            def __init__(self):
                trt.IStreamWriter.__init__(self)
                self.written = 0
                self.error: BaseException | None = None

            def write(self, data):
                try:
                    n = fh.write(data)
                    self.written += n
                    return n
                except BaseException as exc:  # reported after the build returns
                    self.error = exc
                    return 0

        return Writer()


# --------------------------------------------------------------------------------------------- API


def parse_onnx(onnx_path: str | os.PathLike, *, plugin_libraries: Iterable[str | os.PathLike] = (),
               flavor: str | None = None) -> ParseReport:
    """Parse ``onnx_path`` with the ONNX parser and report every error with the node it concerns."""
    trt, flav = load_tensorrt(flavor)
    logger = _Logger.make(trt)
    builder = trt.Builder(logger)
    _load_plugin_libraries(trt, plugin_libraries)
    network, _parser, ok, errors = _parse(trt, logger, builder, os.fspath(onnx_path), strongly_typed=True)
    report = ParseReport(ok=ok and not errors, errors=errors, num_layers=int(network.num_layers), flavor=flav)
    if report.ok:
        report.inputs = {network.get_input(i).name: _tensor_info(network.get_input(i))
                         for i in range(network.num_inputs)}
        report.outputs = {network.get_output(i).name: _tensor_info(network.get_output(i))
                          for i in range(network.num_outputs)}
    return report


def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike,
    profile: ShapeProfile,
    *,
    precision: str = "fp32",
    compute_capability: str | None = None,
    workspace_bytes: int | None = None,
    plugin_libraries: Iterable[str | os.PathLike] = (),
    progress: bool = True,
    flavor: str | None = None,
) -> BuildReport:
    """Build a serialized engine for ``onnx_path`` within ``profile`` and write it atomically to ``engine_path``.

    ``compute_capability`` ("8.6", "sm89", "current"...) selects the target GPU for TensorRT-RTX; unset, its
    default portable set (Ampere and later) is built. TensorRT builds for the local GPU only, so there a
    value different from the local GPU's is an error. The engine is written to a temporary file beside
    ``engine_path`` and moved into place; on failure nothing is left behind and :class:`EngineBuildError`
    carries the builder's logged errors.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    cc = normalize_compute_capability(compute_capability)
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    trt, flav = load_tensorrt(flavor)
    prog = _Progress(progress, engine_path.name)
    prog(f"building from {onnx_path.name} with {flav} {getattr(trt, '__version__', '?')}, {precision}, "
         f"target {cc or ('portable' if flav == 'tensorrt-rtx' else 'local GPU')}")
    logger = _Logger.make(trt)

    def fail(msg: str, cause: BaseException | None = None, with_log: bool = True):
        logged = [e for e in logger.errors if e not in msg] if with_log else []
        # On a machine without a CUDA driver (CPU-only AOT builds) failures also log "cudaError 35"; drop that
        # noise when there is a real error to show.
        real = [e for e in logged if "cudaError 35" not in e]
        logged = real or logged
        detail = msg + ("; builder log: " + " | ".join(logged[-20:]) if logged else "")
        prog(f"FAILED after {prog.elapsed():.1f}s")
        raise EngineBuildError(f"{engine_path.name}: {detail}") from cause

    if not onnx_path.is_file():
        fail(f"ONNX file not found: {onnx_path}")
    builder = trt.Builder(logger)  # first, so the plugin registry reports through our logger
    try:
        _load_plugin_libraries(trt, plugin_libraries)
    except EngineBuildError as exc:
        fail(str(exc))
    config = builder.create_builder_config()

    # Precision: flags on a weakly typed network where the toolkit has them (TensorRT 10), else the graph's types.
    weak_flag = {"fp16": "FP16", "bf16": "BF16"}.get(precision)
    use_weak = weak_flag is not None and weak_flag in trt.BuilderFlag.__members__
    network, _parser, ok, errors = _parse(trt, logger, builder, os.fspath(onnx_path), strongly_typed=not use_weak)
    if not ok or errors:
        fail("ONNX parse failed: " + " | ".join(errors), with_log=False)
    if use_weak:
        config.set_flag(trt.BuilderFlag.__members__[weak_flag])
    elif _is_strongly_typed(trt, network) or weak_flag is not None:
        try:
            _check_strong_precision(trt, network, precision, flav)
        except EngineBuildError as exc:
            fail(str(exc), with_log=False)

    # Target compute capability.
    report_cc = cc
    if hasattr(config, "set_compute_capability"):
        if cc is not None:
            try:
                target = _trt_compute_capability(trt, cc)
            except EngineBuildError as exc:
                fail(str(exc), with_log=False)
            config.num_compute_capabilities = 1
            if not config.set_compute_capability(target, 0):
                fail(f"the builder refused compute capability {cc}")
    elif cc is not None:
        _, local = _local_gpu()
        if local is None:
            log.warning("%s builds for the local GPU; cannot confirm it is compute capability %s", flav, cc)
        elif cc not in ("current", local):
            fail(f"{flav} builds only for the local GPU (compute capability {local}), not {cc}; "
                 "use TensorRT-RTX to build for another GPU")
        if cc == "current":
            report_cc = local
    else:
        report_cc = _local_gpu()[1] if flav == "tensorrt" else None

    if workspace_bytes is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))

    # Optimization profile: every name must be a network input, and every dynamic input needs a range.
    net_inputs = {network.get_input(i).name: network.get_input(i) for i in range(network.num_inputs)}
    unknown = sorted(set(profile.inputs) - set(net_inputs))
    if unknown:
        fail(f"profile names inputs the graph lacks: {', '.join(unknown)} (graph inputs: {', '.join(net_inputs)})")
    dynamic = sorted(n for n, t in net_inputs.items() if any(int(d) < 0 for d in t.shape))
    missing = [n for n in dynamic if n not in profile.inputs]
    if missing:
        fail(f"profile gives no shapes for dynamic inputs: {', '.join(missing)}")
    if profile.inputs:
        opt_profile = builder.create_optimization_profile()
        for name, (mn, opt, mx) in profile.inputs.items():
            if net_inputs[name].is_shape_tensor:
                opt_profile.set_shape_input(name, mn, opt, mx)
            else:
                opt_profile.set_shape(name, mn, opt, mx)
        if config.add_optimization_profile(opt_profile) < 0:
            fail("the builder rejected the optimization profile")

    monitor = None
    if progress and hasattr(trt, "IProgressMonitor") and hasattr(config, "progress_monitor"):
        monitor = _make_progress_monitor(trt, prog)
        config.progress_monitor = monitor

    engine_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{engine_path.name}.", suffix=".tmp", dir=engine_path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            if hasattr(builder, "build_serialized_network_to_stream") and hasattr(trt, "IStreamWriter"):
                writer = _FileStreamWriter.make(trt, fh)  # streams to disk: no second copy of a large engine
                built = builder.build_serialized_network_to_stream(network, config, writer)
                if writer.error is not None:
                    raise writer.error
                if not built or writer.written == 0:
                    fail("the builder produced no engine")
            else:
                serialized = builder.build_serialized_network(network, config)
                if serialized is None or serialized.nbytes == 0:
                    fail("the builder produced no engine")
                fh.write(memoryview(serialized))
                del serialized
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, engine_path)
    except EngineBuildError:
        tmp.unlink(missing_ok=True)
        raise
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, Exception):
            fail(f"{type(exc).__name__}: {exc}", exc)
        raise
    finally:
        if monitor is not None:
            with contextlib.suppress(Exception):
                config.progress_monitor = None
    size = engine_path.stat().st_size
    seconds = prog.elapsed()
    prog(f"wrote {size / 2**20:.2f} MiB to {engine_path}")
    return BuildReport(engine_path=engine_path, bytes=size, seconds=seconds, flavor=flav,
                       compute_capability=report_cc, precision=precision)
