"""The audio front-end graph: mel features (and, for WavLLM, the waveform) -> audio embeddings [B, N, D].

One ONNX graph per model, exported from the module the adapter hands over (`SpeechLM.audio_front_end()`,
fastadasp/models/audio_front_end.py): `encode_audio` for one clip. The batch and the clip length are dynamic:
mel inputs are [batch, mel_bins, "frames"], a waveform input is [batch, "samples"] (samples = frames x hop),
the output is [batch, "audio_tokens", D], so one graph serves every clip from the adapter's shortest to its
full window. Nothing here knows which model it exports.

Export mode (torch 2.13): the torch.export-based exporter (`dynamo=True`) first. Below opset 18 it writes the
graph at opset 18 and converts it down; when that conversion fails torch silently keeps opset 18, so a graph
at any other opset than the one asked for counts as a failed export. Then, or when the adapter says the
dynamo exporter cannot reach the opset (`AudioFrontEnd.dynamo_min_opset`), the TorchScript exporter
(`dynamo=False`) writes the opset asked for directly. A trace can freeze a length it should follow, so every
written graph is run with ONNX Runtime at the shortest clip and at a clip between the shortest and the full
window and compared with the module; a graph that does not follow the length is a failed export.

The exporters' expected chatter (the opset-18 notice, skipped torchvision operators, onnxscript's opset
conversion and optimizer notes) goes to this module's logger at DEBUG; errors are passed on unchanged.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fastadasp.core.dtypes import precision_of_torch
from fastadasp.core.manifest import AudioEntry, TensorSpec
from fastadasp.exporter.onnx_builder import EXTERNAL_DATA_THRESHOLD
from fastadasp.models.audio_front_end import FRAMES, SAMPLES, AudioFrontEnd

log = logging.getLogger(__name__)

OUTPUT_NAME = "audio_embeds"
BATCH = "batch"
AUDIO_TOKENS = "audio_tokens"
# Batch of the example inputs: 2, not 1, because torch.export specialises a dimension whose example is 0 or 1.
_EXAMPLE_BATCH = 2

# Loggers of the torch ONNX exporter and the onnxscript / onnx_ir passes it runs.
_TORCH_ONNX_LOGGER = "torch.onnx"
_ONNXSCRIPT_LOGGERS = ("onnxscript", "onnx_ir")
# torch.onnx notices that every export here triggers and that say nothing about this export's result.
_EXPECTED_TORCH_NOTICES = re.compile(r"Setting ONNX exporter to use operator set version|torchvision is not installed")


@dataclass(frozen=True)
class AudioEncoderGraph:
    """What export_audio_encoder wrote: the .onnx, its external-data file (None when inline), IO specs."""

    file: str
    external_data: str | None
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    audio_tokens: int  # tokens of a full clip
    spec: AudioEntry  # how a runtime makes the inputs from audio (the manifest's `audio`)


class _DemoteToDebug(logging.Handler):
    """Stands in for a logger's handlers: records that `expected` accepts (below ERROR) go to this module's
    logger at DEBUG; everything else goes on to the handlers the logger had (or its parent's)."""

    def __init__(self, logger: logging.Logger, expected: Callable[[logging.LogRecord], bool]):
        super().__init__(logging.NOTSET)
        self._logger = logger
        self._expected = expected
        self._handlers = list(logger.handlers)
        self._propagate = logger.propagate

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.ERROR and self._expected(record):
            log.debug("%s: %s", record.name, record.getMessage())
            return
        for handler in self._handlers:
            if record.levelno >= handler.level:
                handler.handle(record)
        if self._propagate and self._logger.parent is not None:
            self._logger.parent.handle(record)

    @contextmanager
    def installed(self) -> Iterator[None]:
        logger = self._logger
        logger.handlers = [self]
        logger.propagate = False
        try:
            yield
        finally:
            logger.handlers = self._handlers
            logger.propagate = self._propagate


@contextmanager
def _exporter_notices_to_debug() -> Iterator[None]:
    def torch_notice(record: logging.LogRecord) -> bool:
        return bool(_EXPECTED_TORCH_NOTICES.search(record.getMessage()))

    demoted = [_DemoteToDebug(logging.getLogger(_TORCH_ONNX_LOGGER), torch_notice)]
    # onnxscript's passes (optimizer, opset conversion) are internal steps whose outcome is checked here: a
    # failed conversion shows as a graph at the wrong opset and is reported with the export's other errors.
    demoted += [_DemoteToDebug(logging.getLogger(name), lambda record: True) for name in _ONNXSCRIPT_LOGGERS]
    with ExitStack() as stack:
        for handler in demoted:
            stack.enter_context(handler.installed())
        yield


def _module_dtype(module: nn.Module) -> torch.dtype | None:
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


def _weight_bytes(module: nn.Module) -> int:
    seen = {}
    for t in list(module.parameters()) + list(module.buffers()):
        seen[t.data_ptr()] = t.numel() * t.element_size()
    return sum(seen.values())


def _default_opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), -1)


def _export_dynamo(module, args, front_end: AudioFrontEnd, path, opset):
    names = list(front_end.inputs)
    spec = front_end.spec
    batch = torch.export.Dim(BATCH, min=1)
    frames = torch.export.Dim(FRAMES, min=spec.min_frames, max=spec.clip_frames)
    dims = {FRAMES: frames, SAMPLES: spec.hop_length * frames}
    dynamic = {n: {0: batch, **{axis + 1: dims[d] for axis, d in enumerate(front_end.inputs[n].shape) if d in dims}}
               for n in names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, args, path, dynamo=True, input_names=names, output_names=[OUTPUT_NAME],
            dynamic_shapes=dynamic, opset_version=opset, external_data=True, optimize=True, verbose=False,
        )


def _export_torchscript(module, args, front_end: AudioFrontEnd, path, opset):
    names = list(front_end.inputs)
    axes = {n: {0: BATCH, **{axis + 1: d for axis, d in enumerate(front_end.inputs[n].shape) if isinstance(d, str)}}
            for n in names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings: the length check after export catches a frozen length
        torch.onnx.export(
            module, args, path, dynamo=False, input_names=names, output_names=[OUTPUT_NAME],
            dynamic_axes={**axes, OUTPUT_NAME: {0: BATCH, 1: AUDIO_TOKENS}}, opset_version=opset,
            do_constant_folding=True,
        )


def _quiet_session_options():
    """ONNX Runtime options without spinning worker threads: the export runs PyTorch right after, and a spinning
    pool would hold the cores it needs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _check_lengths(module, front_end: AudioFrontEnd, path: str, dtype: torch.dtype) -> None:
    """The written graph follows the clip length: ONNX Runtime at the shortest clip and at one between the
    shortest and the full window gives the module's token count (and, in fp32, its values)."""
    import onnxruntime as ort

    spec = front_end.spec
    session = ort.InferenceSession(path, _quiet_session_options(), providers=["CPUExecutionProvider"])
    for frames in sorted({spec.min_frames, (spec.min_frames + spec.clip_frames) // 2 + 1}):
        inputs = front_end.synthetic_inputs(1, torch.Generator().manual_seed(frames), dtype, frames=frames)
        with torch.no_grad():
            want = module(*inputs.values()).float().numpy()
        try:
            got = session.run([OUTPUT_NAME], {k: v.numpy() for k, v in inputs.items()})[0].astype(np.float32)
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime's shape errors: the graph froze a length
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise RuntimeError(f"the exported graph does not take a {frames}-frame clip ({first})") from None
        tokens = spec.clip_tokens(frames)
        if got.shape != want.shape or want.shape[1] != tokens:
            raise RuntimeError(f"the exported graph gives {got.shape[1]} audio tokens for a {frames}-frame clip where "
                               f"the module gives {want.shape[1]} (the length rule says {tokens})")
        if dtype == torch.float32:
            err = float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1.0))
            if not err <= 1e-3:
                raise RuntimeError(f"the exported graph differs from the module on a {frames}-frame clip (max error "
                                   f"{err:.3g} of the largest value)")


def _exporters(front_end: AudioFrontEnd, opset: int) -> list[tuple[str, Callable]]:
    attempts = [("dynamo", _export_dynamo), ("torchscript", _export_torchscript)]
    if front_end.dynamo_min_opset is not None and opset < front_end.dynamo_min_opset:
        log.debug("skipping the dynamo exporter: it reaches this front-end from opset %d", front_end.dynamo_min_opset)
        return attempts[1:]
    return attempts


def _set_shape(value_info, shape: list) -> None:
    dims = value_info.type.tensor_type.shape.dim
    del dims[:]
    for d in shape:
        dim = dims.add()
        if isinstance(d, str):
            dim.dim_param = d
        else:
            dim.dim_value = int(d)


def export_audio_encoder(lm, path: str | os.PathLike, *, opset: int = 17, dtype: torch.dtype = torch.float32) -> AudioEncoderGraph:
    """Write the audio front-end of `lm` to `path` as ONNX (batch and clip length dynamic) and return its IO
    description for the manifest. Raises ValueError for models without a front-end."""
    import onnx

    dtype_name = precision_of_torch(dtype).numpy_name  # raises for unsupported dtypes
    front_end = lm.audio_front_end()  # raises ValueError for models without one
    module = front_end.module
    if _module_dtype(module) != dtype:
        module = copy.deepcopy(module).to(dtype)  # leave the caller's model as it is
    module = module.eval()
    names = list(front_end.inputs)
    args = tuple(front_end.synthetic_inputs(_EXAMPLE_BATCH, torch.Generator().manual_seed(0), dtype).values())
    with torch.no_grad():
        reference = module(*args)
    audio_tokens, width = int(reference.shape[1]), int(reference.shape[2])
    if audio_tokens != front_end.spec.clip_tokens(front_end.spec.clip_frames):
        raise RuntimeError(f"the audio front-end of {lm.name!r} makes {audio_tokens} tokens from a full clip but its "
                           f"length rule says {front_end.spec.clip_tokens(front_end.spec.clip_frames)}")
    inputs = {n: TensorSpec(dtype_name, [BATCH, *spec.shape]) for n, spec in front_end.inputs.items()}
    outputs = {OUTPUT_NAME: TensorSpec(dtype_name, [BATCH, AUDIO_TOKENS, width])}

    final = os.path.abspath(os.fspath(path))
    directory, base = os.path.split(final)
    os.makedirs(directory, exist_ok=True)
    external = _weight_bytes(module) > EXTERNAL_DATA_THRESHOLD
    # Everything is written under a private folder beside the target and moved into place at the end (the
    # .onnx last), so an error leaves neither a half-written graph nor a stray weights file behind.
    staging = tempfile.mkdtemp(prefix=f".{base}.", dir=directory)
    try:
        raw = os.path.join(staging, "raw.onnx")
        errors = []
        model = None
        for mode, fn in _exporters(front_end, opset):
            for f in os.listdir(staging):
                os.remove(os.path.join(staging, f))
            try:
                with torch.no_grad(), _exporter_notices_to_debug():
                    fn(module, args, front_end, raw, opset)
                model = onnx.load(raw)
                got = _default_opset(model)
                if got != opset:
                    raise RuntimeError(f"the exported graph is at opset {got}, not the requested {opset}")
                _check_lengths(module, front_end, raw, dtype)
                log.info("audio front-end of %r exported with the %s exporter (opset %d)%s", lm.name, mode, opset,
                         "".join(f"; earlier attempt failed: {e}" for e in errors))
                break
            except Exception as e:  # noqa: BLE001 - try the next exporter, report all failures if none works
                errors.append(f"{mode}: {type(e).__name__}: {str(e).strip()[:2000]}")
                model = None
        if model is None:
            raise RuntimeError(f"could not export the audio front-end of {lm.name!r}:\n" + "\n".join(errors))

        # Name the graph's IO dims exactly as the manifest does (static sizes, "batch" for the batch).
        graph_inputs = {v.name: v for v in model.graph.input}
        graph_outputs = {v.name: v for v in model.graph.output}
        if set(graph_inputs) != set(names) or set(graph_outputs) != {OUTPUT_NAME}:
            raise RuntimeError(f"exported graph has inputs {list(graph_inputs)} and outputs {list(graph_outputs)}")
        for n, desc in inputs.items():
            _set_shape(graph_inputs[n], desc.shape)
        _set_shape(graph_outputs[OUTPUT_NAME], outputs[OUTPUT_NAME].shape)
        model.producer_name = "fastadasp"

        staged = os.path.join(staging, base)
        external_data = f"{base}.data" if external else None
        if external_data:
            onnx.save_model(model, staged, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=external_data, size_threshold=1024)
            os.replace(os.path.join(staging, external_data), os.path.join(directory, external_data))
        else:
            onnx.save_model(model, staged)
        os.replace(staged, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return AudioEncoderGraph(base, external_data, inputs, outputs, audio_tokens, front_end.spec)


def run_audio_encoder_onnx(path: str | os.PathLike, **inputs_numpy) -> np.ndarray:
    """Run an exported audio front-end with ONNX Runtime on the CPU; returns audio_embeds [B, N, D]."""
    import onnxruntime as ort

    session = ort.InferenceSession(os.fspath(path), _quiet_session_options(), providers=["CPUExecutionProvider"])
    expected = {i.name for i in session.get_inputs()}
    if set(inputs_numpy) != expected:
        raise ValueError(f"the graph takes inputs {sorted(expected)}, got {sorted(inputs_numpy)}")
    feeds = {k: np.ascontiguousarray(v) for k, v in inputs_numpy.items()}
    return session.run([OUTPUT_NAME], feeds)[0]
