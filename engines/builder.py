"""Build one serialized TensorRT / TensorRT-RTX engine from an ONNX graph.

:func:`build_engine` is a sequence of small steps: parse (network.py), precision, target GPU (toolkit.py),
workspace, optimization profile (profile.py), then serialize into a temporary file that is renamed into
place. The serialize step runs inside ``interrupts.native_section()`` with a progress monitor that cancels
TensorRT when an interrupt is requested (progress.py); whatever stops a build removes its temporary file.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from fastadasp.core import interrupts
from fastadasp.core.dtypes import precision as precision_info
from fastadasp.engines.network import (
    check_strong_precision,
    is_strongly_typed,
    load_plugin_libraries,
    make_logger,
    network_inputs,
    parse,
    release_native_objects,
)
from fastadasp.engines.profile import ShapeProfile
from fastadasp.engines.progress import BuildProgress, heartbeat, make_progress_monitor
from fastadasp.engines.toolkit import (
    EngineBuildError,
    check_local_target,
    load_tensorrt,
    normalize_compute_capability,
    trt_compute_capability,
)
from fastadasp.engines.util import make_stream_writer, one_line, temp_file

__all__ = ["BuildReport", "build_engine"]


@dataclass
class BuildReport:
    engine_path: Path
    bytes: int
    seconds: float
    flavor: str
    compute_capability: str | None  # "8.6"...; None: TensorRT-RTX's default portable set / unknown local GPU
    precision: str


class _Build:
    """What every step of one build shares: the toolkit, its logger, the progress lines, and how to fail."""

    def __init__(self, trt, flavor: str, engine_name: str, progress: BuildProgress):
        self.trt, self.flavor, self.engine_name, self.progress = trt, flavor, engine_name, progress
        self.logger = make_logger(trt)

    def error(self, msg: str, *, with_log: bool = True) -> EngineBuildError:
        """An EngineBuildError naming the engine, with what the builder logged (one line)."""
        logged = [e for e in self.logger.errors if e not in msg] if with_log else []
        # A CPU-only machine (ahead-of-time builds) also logs "cudaError 35" on any failure: noise when a
        # real error is there to show.
        logged = [e for e in logged if "cudaError 35" not in e] or logged
        detail = msg + ("; builder log: " + " | ".join(logged[-20:]) if logged else "")
        return EngineBuildError(one_line(f"{self.engine_name}: {detail}", 20_000))


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
    label: str | None = None,
) -> BuildReport:
    """Build a serialized engine for ``onnx_path`` within ``profile`` and write it atomically to ``engine_path``.

    ``compute_capability`` ("8.6", "sm89", "current"...) selects the target GPU for TensorRT-RTX; unset, its
    default portable set (Ampere and later) is built. TensorRT builds for the local GPU only, so there a
    value different from the local GPU's is an error. ``label`` names the build in progress lines (default:
    the engine's file name). On failure nothing is left behind and :class:`EngineBuildError` carries the
    builder's logged errors; on an interrupt TensorRT is cancelled and ``interrupts.Interrupted`` raised.
    """
    precision_info(precision)  # an unknown name is an InvalidOption before anything loads
    cc = normalize_compute_capability(compute_capability)
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    trt, flav = load_tensorrt(flavor)
    job = _Build(trt, flav, engine_path.name, BuildProgress(progress, label or engine_path.name))
    job.progress(f"building from {onnx_path.name} with {flav} {getattr(trt, '__version__', '?')}, {precision}, "
                 f"target {cc or ('portable' if flav == 'tensorrt-rtx' else 'local GPU')}")
    try:
        built_cc = _run_steps(job, onnx_path, engine_path, profile, precision, cc, workspace_bytes, plugin_libraries)
    except BaseException as exc:
        release_native_objects(exc)
        failed = isinstance(exc, EngineBuildError)
        job.progress(f"FAILED after {job.progress.elapsed():.1f}s" if failed else
                     f"stopped after {job.progress.elapsed():.1f}s; nothing written")
        raise
    size = engine_path.stat().st_size
    job.progress(f"wrote {size / 2**20:.2f} MiB")
    return BuildReport(engine_path=engine_path, bytes=size, seconds=job.progress.elapsed(), flavor=flav,
                       compute_capability=built_cc, precision=precision)


def _run_steps(job: _Build, onnx_path: Path, engine_path: Path, profile: ShapeProfile, precision: str,
               cc: str | None, workspace_bytes: int | None, plugin_libraries) -> str | None:
    """Every TensorRT object of the build lives in this call (see release_native_objects); returns the
    compute capability the engine was built for."""
    builder, network, _parser = _parse_step(job, onnx_path, plugin_libraries, precision)
    config = builder.create_builder_config()
    _embed_plugins(job, config, network, plugin_libraries)
    _set_precision(job, config, network, precision)
    built_cc = _set_target(job, config, cc)
    if workspace_bytes is not None:
        config.set_memory_pool_limit(job.trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    _set_profile(job, builder, config, network, profile)
    _write_engine(job, builder, network, config, engine_path)
    return built_cc


# --------------------------------------------------------------------------------------------- steps


def _weak_precision_flag(trt, precision: str) -> str | None:
    """The BuilderFlag that lowers precision on a weakly typed network (TensorRT 10); None for fp32 or where
    the toolkit only builds strongly typed networks."""
    flag = {"fp16": "FP16", "bf16": "BF16"}.get(precision)
    return flag if flag in trt.BuilderFlag.__members__ else None


def _parse_step(job: _Build, onnx_path: Path, plugin_libraries, precision: str):
    """(builder, network, parser); the parser must outlive the network (it owns the weights)."""
    if not onnx_path.is_file():
        raise job.error(f"ONNX file not found: {onnx_path}")
    builder = job.trt.Builder(job.logger)  # first, so the plugin registry reports through our logger
    try:
        load_plugin_libraries(job.trt, plugin_libraries)
    except EngineBuildError as exc:
        raise job.error(str(exc)) from None
    strongly_typed = _weak_precision_flag(job.trt, precision) is None
    network, parser, errors = parse(job.trt, job.logger, builder, os.fspath(onnx_path), strongly_typed)
    if errors:
        raise job.error("ONNX parse failed: " + " | ".join(errors), with_log=False)
    return builder, network, parser


def _embed_plugins(job: _Build, config, network, plugin_libraries) -> None:
    """Serialise the plugin library into engines whose network uses it (a version-compatible plan that needs no
    plugin file at run time), where the toolkit allows; graphs without WeightedMerge nodes stay plain."""
    libraries = [os.fspath(p) for p in plugin_libraries]
    plugin_type = getattr(getattr(job.trt, "LayerType", None), "PLUGIN_V3", None)
    if not libraries or plugin_type is None:
        return
    if not any(network.get_layer(i).type == plugin_type for i in range(network.num_layers)):
        return
    from fastadasp.plugins import configure_builder_for_plugin

    for library in libraries:
        applied = configure_builder_for_plugin(job.trt, config, library)
        job.progress(f"plugin {Path(library).name}: " + (applied.get("unsupported") or "serialised into the engine"))


def _set_precision(job: _Build, config, network, precision: str) -> None:
    """A builder flag on a weakly typed network where the toolkit has one (TensorRT 10), else the graph's
    own types must already be `precision`."""
    weak_flag = _weak_precision_flag(job.trt, precision)
    if weak_flag is not None:
        config.set_flag(job.trt.BuilderFlag.__members__[weak_flag])
    elif precision != "fp32" or is_strongly_typed(job.trt, network):
        try:
            check_strong_precision(network, precision, job.flavor)
        except EngineBuildError as exc:
            raise job.error(str(exc), with_log=False) from None


def _set_target(job: _Build, config, cc: str | None) -> str | None:
    """Point the builder at compute capability `cc`; returns the one the engine will have (None: portable)."""
    try:
        if not hasattr(config, "set_compute_capability"):
            return check_local_target(job.flavor, cc)
        if cc is None:
            return None
        target = trt_compute_capability(job.trt, cc)
    except EngineBuildError as exc:
        raise job.error(str(exc), with_log=False) from None
    config.num_compute_capabilities = 1
    if not config.set_compute_capability(target, 0):
        raise job.error(f"the builder refused compute capability {cc}")
    return cc


def _set_profile(job: _Build, builder, config, network, profile: ShapeProfile) -> None:
    """Every profile name must be a network input, and every dynamic input needs a range."""
    inputs = network_inputs(network)
    unknown = sorted(set(profile.inputs) - set(inputs))
    if unknown:
        raise job.error(f"profile names inputs the graph lacks: {', '.join(unknown)} "
                        f"(graph inputs: {', '.join(inputs)})")
    dynamic = sorted(n for n, t in inputs.items() if any(int(d) < 0 for d in t.shape))
    missing = [n for n in dynamic if n not in profile.inputs]
    if missing:
        raise job.error(f"profile gives no shapes for dynamic inputs: {', '.join(missing)}")
    if not profile.inputs:
        return
    opt_profile = builder.create_optimization_profile()
    for name, (mn, opt, mx) in profile.inputs.items():
        if inputs[name].is_shape_tensor:
            opt_profile.set_shape_input(name, mn, opt, mx)
        else:
            opt_profile.set_shape(name, mn, opt, mx)
    if config.add_optimization_profile(opt_profile) < 0:
        raise job.error("the builder rejected the optimization profile")


def _write_engine(job: _Build, builder, network, config, engine_path: Path) -> None:
    """Serialize into a temporary file beside `engine_path` and rename it into place: readers see the old
    engine or the new one, and an error or interrupt (any BaseException) removes the temporary file."""
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    monitor = None
    if hasattr(job.trt, "IProgressMonitor") and hasattr(config, "progress_monitor"):
        monitor = make_progress_monitor(job.trt, job.progress)
        config.progress_monitor = monitor
    fd, tmp = temp_file(engine_path.parent, engine_path.name)
    try:
        with os.fdopen(fd, "wb") as fh:
            _serialize(job, builder, network, config, fh, monitor)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; engines are shared like any build output
        os.replace(tmp, engine_path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, Exception) and not isinstance(exc, EngineBuildError):
            raise job.error(f"{type(exc).__name__}: {exc}") from exc
        raise
    finally:
        if monitor is not None:
            with contextlib.suppress(Exception):
                config.progress_monitor = None


def _serialize(job: _Build, builder, network, config, fh, monitor) -> None:
    """Run TensorRT's build, writing the engine to `fh`.

    Inside ``native_section()`` a signal is only recorded; the monitor then cancels TensorRT at its next
    step, and leaving the section raises ``Interrupted``.
    """
    trt = job.trt
    streaming = hasattr(builder, "build_serialized_network_to_stream") and hasattr(trt, "IStreamWriter")
    writer = make_stream_writer(trt, fh) if streaming else None
    with heartbeat(job.progress, monitor), interrupts.native_section():
        if writer is not None:  # streams to disk: no second copy of a large engine in memory
            built = builder.build_serialized_network_to_stream(network, config, writer)
            written = writer.written
        else:
            serialized = builder.build_serialized_network(network, config)
            written = 0 if serialized is None else serialized.nbytes
            built = written > 0
            if built:
                fh.write(memoryview(serialized))
            del serialized
    if monitor is not None and monitor.error is not None:
        raise monitor.error
    if writer is not None and writer.error is not None:
        raise writer.error
    if not built or written == 0:
        raise job.error("the builder produced no engine")
