"""From an ONNX file to a TensorRT network: the logger, plugin libraries, the parser and its errors, and the
precision check for strongly typed networks.

Precision: TensorRT-RTX and TensorRT 11 only build *strongly typed* networks, where every tensor keeps the
type the ONNX graph gives it. There ``precision`` must describe the graph (export it in fp16/bf16); a
mismatch is an :class:`EngineBuildError` rather than a silently fp32 engine. TensorRT 10, whose builder
still has ``BuilderFlag.FP16``/``BF16``, builds a weakly typed network with that flag set instead.
"""

from __future__ import annotations

import logging
import os
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any, Iterable

from fastadasp.core.dtypes import precision_of_tensorrt, precision as precision_info
from fastadasp.engines.toolkit import EngineBuildError, load_tensorrt
from fastadasp.engines.util import one_line

log = logging.getLogger("fastadasp.engines")

# Warnings our graphs trigger by design, logged at DEBUG only: every inlined WeightedMerge call repeats the
# local function's (unnamed) nodes; token ids / cache lengths are int64 on purpose; after a merge the
# sequence length is computed (n - m), so TensorRT cannot prove a reshape dim is not a 0-placeholder, though
# the length rule keeps every span >= 1 token (allowzero=1 would silence it but breaks the build: see
# exporter/onnx_builder.py).
_EXPECTED_WARNINGS = ("will not be queryable", "has Int64 binding", "might or might not be zero")

TensorInfo = tuple[tuple[int, ...], str]  # (shape with -1 for dynamic dims, TensorRT dtype name)


def make_logger(trt):
    """An ILogger that keeps every error (for EngineBuildError / ParseReport) and forwards the rest to logging.

    Errors are logged at INFO only: they travel in the exception, and printing them too would say it twice.
    """
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
                    self.errors.append(one_line(msg, 1000))
            level = py_levels.get(sev)
            if level == logging.WARNING and any(p in msg for p in _EXPECTED_WARNINGS):
                level = logging.DEBUG
            if level is not None and log.isEnabledFor(level):
                log.log(level, "[%s] %s", getattr(sev, "name", sev), msg)

        def take(self) -> str:
            """Errors logged since the last call, as one clause (a runtime reports them per failed call)."""
            with self._lock:
                taken, self.errors = self.errors, []
            return " | ".join(taken[-5:]) if taken else "TensorRT logged no error"

    return CollectingLogger()


def release_native_objects(exc: BaseException) -> None:
    """Free, now, the TensorRT objects that the frames in `exc`'s tracebacks (and its causes') hold.

    A caller that keeps the exception (pytest.raises, a handler that logs it) forms a reference cycle
    through those frames, and the cycle collector would destroy the builder at some later allocation --
    possibly inside another TensorRT call's logger callback. TensorRT-RTX 1.7 holds its plugin-registry lock
    there and the builder's destructor takes the same lock: the process hangs. Clearing the finished frames'
    locals (the traceback still prints) releases the objects while no TensorRT call is running.
    """
    pending, seen = [exc], set()
    while pending:
        err = pending.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        traceback.clear_frames(err.__traceback__)
        pending += [err.__cause__, err.__context__]


# --------------------------------------------------------------------------------------------- plugins


def load_plugin_libraries(trt, paths: Iterable[str | os.PathLike]) -> None:
    """Register the WeightedMerge plugin library with the process-wide plugin registry (once per library).

    Through plugins/loader.py, which checks the file first and provides what TensorRT-RTX's parser needs once a
    plugin is registered (without it the parser aborts the process).
    """
    paths = list(paths)
    if not paths:
        return
    # fastadasp.plugins imports torch (its CPU twin); builds without a plugin should not pay for that.
    from fastadasp.plugins import PluginLoadError, load_into_registry

    for path in paths:
        try:
            loaded = load_into_registry(trt, path)
        except PluginLoadError as exc:
            raise EngineBuildError(str(exc)) from None
        log.info("plugin library %s registered (sha256 %s)", loaded.library, loaded.sha256[:12])


# --------------------------------------------------------------------------------------------- parsing


def _parser_errors(parser) -> list[str]:
    """Each parser error as "node <i> '<name>' (<op>): <code>: <description> [<where in the parser>]"."""
    errors = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        try:
            node, name, op = err.node(), err.node_name(), err.node_operator()
            code = getattr(err.code(), "name", err.code())
            where = f"node {node}" + (f" '{name}'" if name else "") + (f" ({op})" if op else "")
            errors.append(f"{where}: {code}: {one_line(err.desc(), 1000)} [{err.func()} {err.file()}:{err.line()}]")
        except Exception:  # bindings without the per-field accessors
            errors.append(one_line(str(err), 1000))
    return errors


def _strongly_typed_flag(trt) -> int:
    flags = trt.NetworkDefinitionCreationFlag
    return 1 << int(flags.STRONGLY_TYPED) if "STRONGLY_TYPED" in flags.__members__ else 0


def parse(trt, logger, builder, onnx_path: str, strongly_typed: bool):
    """(network, parser, errors): `errors` is empty when the parse succeeded. Keep `parser` alive as long as
    `network`: the network refers to weights the parser owns."""
    network = builder.create_network(_strongly_typed_flag(trt) if strongly_typed else 0)
    parser = trt.OnnxParser(network, logger)
    # parse_from_file resolves external data (weights next to the .onnx) relative to the model's folder.
    ok = bool(parser.parse_from_file(onnx_path))
    errors = _parser_errors(parser)
    if not ok and not errors:
        errors = list(logger.errors) or [f"the ONNX parser rejected {onnx_path} without saying why"]
    return network, parser, errors


def network_inputs(network) -> dict[str, Any]:
    return {network.get_input(i).name: network.get_input(i) for i in range(network.num_inputs)}


def _tensor_info(t) -> TensorInfo:
    return tuple(int(d) for d in t.shape), getattr(t.dtype, "name", str(t.dtype))


@dataclass
class ParseReport:
    ok: bool
    errors: list[str]
    num_layers: int
    flavor: str
    # name -> (shape with -1 for dynamic dims, TensorRT dtype name); filled when parsing succeeded
    inputs: dict[str, TensorInfo] = field(default_factory=dict)
    outputs: dict[str, TensorInfo] = field(default_factory=dict)


def parse_onnx(onnx_path: str | os.PathLike, *, plugin_libraries: Iterable[str | os.PathLike] = (),
               flavor: str | None = None) -> ParseReport:
    """Parse ``onnx_path`` with the ONNX parser and report every error with the node it concerns."""
    trt, flav = load_tensorrt(flavor)
    try:
        return _parse_report(trt, flav, os.fspath(onnx_path), plugin_libraries)
    except BaseException as exc:
        release_native_objects(exc)
        raise


def _parse_report(trt, flavor: str, onnx_path: str, plugin_libraries) -> ParseReport:
    logger = make_logger(trt)
    builder = trt.Builder(logger)
    load_plugin_libraries(trt, plugin_libraries)
    network, _parser, errors = parse(trt, logger, builder, onnx_path, strongly_typed=True)
    report = ParseReport(ok=not errors, errors=errors, num_layers=int(network.num_layers), flavor=flavor)
    if report.ok:
        report.inputs = {name: _tensor_info(t) for name, t in network_inputs(network).items()}
        report.outputs = {network.get_output(i).name: _tensor_info(network.get_output(i))
                          for i in range(network.num_outputs)}
    return report


# --------------------------------------------------------------------------------------------- precision


def is_strongly_typed(trt, network) -> bool:
    flags = trt.NetworkDefinitionCreationFlag
    if "STRONGLY_TYPED" not in flags.__members__:
        return False
    try:
        return bool(network.get_flag(flags.STRONGLY_TYPED))
    except Exception:
        return False


def _float_types(network) -> set[str]:
    """TensorRT names of the float types the network computes in ({"FLOAT", "HALF", "BF16"} at most)."""
    names = set()
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for j in range(layer.num_outputs):
            names.add(getattr(layer.get_output(j).dtype, "name", ""))
    for i in range(network.num_inputs):
        names.add(getattr(network.get_input(i).dtype, "name", ""))
    return {n for n in names if precision_of_tensorrt(n) is not None}


def check_strong_precision(network, precision: str, flavor: str) -> None:
    """For strongly typed networks the graph's own types decide the precision; make sure they match."""
    found = _float_types(network)
    reduced = found - {precision_info("fp32").tensorrt_name}
    if precision == "fp32" and not reduced:
        return
    if precision != "fp32" and precision_info(precision).tensorrt_name in found:
        return
    have = ", ".join(sorted(precision_of_tensorrt(t).name for t in found)) or "no float"
    raise EngineBuildError(
        f"{flavor} builds strongly typed networks, so the ONNX graph's types decide the precision: "
        f"requested {precision} but the graph computes in {have}; export the graph in {precision} "
        f"(or convert it, e.g. with ModelOpt AutoCast) instead of asking the builder to"
    )
