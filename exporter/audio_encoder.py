"""The audio front-end graph: mel features (and, for WavLLM, the waveform) -> audio embeddings [B, N, D].

One ONNX graph per model, computing `lm.encode_audio` for the full-length (unpadded) clip its encoder is
built for (Whisper-style encoders are trained on fixed 30 s windows: 2 x max_source_positions mel frames), so
every dimension except the batch is static and N is known when the manifest is written.

Export mode (torch 2.13, opset 17 as the project uses):
- tiny-qwen-audio and tiny-qwen2-audio export with the torch.export-based exporter (`dynamo=True`): the
  graph comes out at opset 18 and is converted down to 17 cleanly.
- tiny-wavllm exports with `dynamo=True`, but its graph cannot be converted down to opset 17: the onnx
  version converter has no adapter for opset-18 `Split` (WavLM's gated relative position bias chunks a
  tensor in two) and fails on `ReduceSum` axes given as a computed input, and torch then silently keeps
  the model at opset 18. We treat "not the opset asked for" as a failed export and fall back to the
  TorchScript exporter (`dynamo=False`), which emits opset 17 directly and handles the fixed-length clip
  fine (every shape apart from the batch is a constant of the trace). With `opset >= 18` it stays on dynamo.
- `Qwen2AudioLM.encode_audio` itself cannot be traced by torch.export: its equal-length check runs
  `set(out_lengths.tolist())` on a data-dependent tensor ("TypeError: unhashable type: non-nested SymInt").
  `_Qwen2AudioFrontEnd` below does the same computation with the lengths of the full-length clip worked out
  when the wrapper is built (they depend only on the frame count), then exports with dynamo.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fastadasp.core.manifest import TensorSpec
from fastadasp.exporter.onnx_builder import EXTERNAL_DATA_THRESHOLD

log = logging.getLogger(__name__)

OUTPUT_NAME = "audio_embeds"
BATCH = "batch"
_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


@dataclass(frozen=True)
class AudioEncoderGraph:
    """What export_audio_encoder wrote: the .onnx, its external-data file (None when inline), IO specs."""

    file: str
    external_data: str | None
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    audio_tokens: int


class _Qwen2AudioFrontEnd(nn.Module):
    """`Qwen2AudioLM.encode_audio` for the full-length clip: audio tower (with the padding mask Hugging Face
    builds) -> multi-modal projector -> the first N rows. The valid lengths depend only on the frame count,
    so they are computed here once instead of from a mask tensor in the graph."""

    def __init__(self, tower: nn.Module, projector: nn.Module, frames: int):
        super().__init__()
        self.tower = tower
        self.projector = projector
        lengths = torch.tensor([frames])
        feat_len, out_len = tower._get_feat_extract_output_lengths(lengths)
        self.feat_len = int(feat_len[0])
        self.out_len = int(out_len[0])
        self.max_len = (frames - 2) // 2 + 1

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        from transformers.masking_utils import create_bidirectional_mask

        batch = input_features.shape[0]
        valid = torch.arange(self.max_len, device=input_features.device) < self.feat_len
        mask_2d = valid.long().unsqueeze(0).expand(batch, -1)
        dummy = input_features.new_zeros(batch, self.max_len, 1)
        attn_mask = create_bidirectional_mask(config=self.tower.config, inputs_embeds=dummy, attention_mask=mask_2d)
        hidden = self.tower(input_features, attention_mask=attn_mask).last_hidden_state
        return self.projector(hidden)[:, : self.out_len]


class _MelFrontEnd(nn.Module):
    """`encode_audio(mel)` is exactly this module's call (Qwen-Audio); named input for the exporter."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        return self.module(input_features)


class _MelWaveFrontEnd(nn.Module):
    """`encode_audio(mel, waveform)` is exactly this module's call (WavLLM); named inputs for the exporter."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, input_features: torch.Tensor, waveform: torch.Tensor) -> torch.Tensor:
        return self.module(input_features, waveform)


@dataclass
class _FrontEndSpec:
    module: nn.Module  # forward(*inputs) == lm.encode_audio(*inputs) for full-length clips
    inputs: dict[str, tuple[int, ...]]  # name -> shape without the batch dimension


def _no_front_end(lm, why: str) -> ValueError:
    return ValueError(
        f"model {getattr(lm, 'name', type(lm).__name__)!r} (family {getattr(lm, 'family', '?')!r}) has no audio "
        f"front-end to export: {why}; its audio embeddings must come from outside the exported graphs"
    )


def _front_end_spec(lm) -> _FrontEndSpec:
    family = getattr(lm, "family", None)
    if family == "qwen2-audio":
        hf = getattr(lm, "hf_model", None)
        tower = getattr(getattr(hf, "model", None), "audio_tower", None)
        if tower is None:
            raise _no_front_end(lm, "the Hugging Face model has no audio_tower")
        frames = lm.feature_frames
        module = _Qwen2AudioFrontEnd(tower, hf.model.multi_modal_projector, frames)
        return _FrontEndSpec(module, {"input_features": (lm.num_mel_bins, frames)})
    if family == "qwen-audio":
        enc = getattr(lm, "audio_encoder", None)
        if enc is None:
            raise _no_front_end(lm, "it was loaded without its audio encoder")
        cfg = enc.encoder.config
        return _FrontEndSpec(_MelFrontEnd(enc), {"input_features": (cfg.num_mel_bins, 2 * cfg.max_source_positions)})
    if family == "wavllm":
        fe = getattr(lm, "front_end", None)
        if fe is None:
            raise _no_front_end(lm, "it was loaded without its Whisper/WavLM front-end")
        w = fe.whisper.config
        frames = 2 * w.max_source_positions
        # 16 kHz waveform with the mel's 10 ms hop: 160 samples per mel frame (as in WavLLMLM._synthetic_audio).
        return _FrontEndSpec(_MelWaveFrontEnd(fe), {"input_features": (w.num_mel_bins, frames), "waveform": (frames * 160,)})
    raise _no_front_end(lm, "it is a plain decoder")


def _example_inputs(spec: _FrontEndSpec, dtype: torch.dtype, batch: int = 2) -> tuple[torch.Tensor, ...]:
    # Batch 2, not 1: torch.export specialises a dimension whose example size is 0 or 1.
    gen = torch.Generator().manual_seed(0)
    out = []
    for name, shape in spec.inputs.items():
        x = torch.randn(batch, *shape, generator=gen)
        if name == "waveform":
            x = x * 0.1
        out.append(x.to(dtype))
    return tuple(out)


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


def _export_dynamo(module, args, names, path, opset):
    batch = torch.export.Dim(BATCH, min=1)
    # onnxscript logs a full traceback when its opset down-conversion fails (the WavLLM case); the caller
    # checks the opset of the result and reports that failure itself, so keep those loggers quiet meanwhile.
    quiet = [logging.getLogger(n) for n in ("onnxscript", "onnx_ir")]
    levels = [q.level for q in quiet]
    try:
        for q in quiet:
            q.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, args, path, dynamo=True, input_names=names, output_names=[OUTPUT_NAME],
                dynamic_shapes={n: {0: batch} for n in names}, opset_version=opset, external_data=True,
                optimize=True, verbose=False,
            )
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)


def _export_torchscript(module, args, names, path, opset):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings: every non-batch shape is meant to be a constant here
        torch.onnx.export(
            module, args, path, dynamo=False, input_names=names, output_names=[OUTPUT_NAME],
            dynamic_axes={n: {0: BATCH} for n in [*names, OUTPUT_NAME]}, opset_version=opset,
            do_constant_folding=True,
        )


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
    """Write the audio front-end of `lm` to `path` as ONNX (batch dimension dynamic) and return its IO
    description for the manifest. Raises ValueError for models without a front-end."""
    import onnx

    if dtype not in _DTYPE_NAMES:
        raise ValueError(f"unsupported dtype {dtype}; choose one of {', '.join(map(str, _DTYPE_NAMES))}")
    spec = _front_end_spec(lm)
    module = spec.module
    if _module_dtype(module) != dtype:
        module = copy.deepcopy(module).to(dtype)  # leave the caller's model as it is
    module = module.eval()
    names = list(spec.inputs)
    args = _example_inputs(spec, dtype)
    with torch.no_grad():
        reference = module(*args)
    audio_tokens, width = int(reference.shape[1]), int(reference.shape[2])
    dtype_name = _DTYPE_NAMES[dtype]
    inputs = {n: TensorSpec(dtype_name, [BATCH, *shape]) for n, shape in spec.inputs.items()}
    outputs = {OUTPUT_NAME: TensorSpec(dtype_name, [BATCH, audio_tokens, width])}

    final = os.path.abspath(os.fspath(path))
    directory, base = os.path.split(final)
    os.makedirs(directory, exist_ok=True)
    external = _weight_bytes(module) > EXTERNAL_DATA_THRESHOLD
    # Everything is written under a private folder beside the target and moved into place at the end (the
    # .onnx last), so an error leaves neither a half-written graph nor a stray weights file behind.
    staging = tempfile.mkdtemp(prefix=f".{base}.", dir=directory)
    try:
        raw = os.path.join(staging, "raw.onnx")
        attempts: list[tuple[str, Callable]] = [("dynamo", _export_dynamo), ("torchscript", _export_torchscript)]
        errors = []
        model = None
        for mode, fn in attempts:
            for f in os.listdir(staging):
                os.remove(os.path.join(staging, f))
            try:
                with torch.no_grad():
                    fn(module, args, names, raw, opset)
                model = onnx.load(raw)
                got = _default_opset(model)
                if got != opset:
                    raise RuntimeError(f"the exported graph is at opset {got}, not the requested {opset}")
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
    return AudioEncoderGraph(base, external_data, inputs, outputs, audio_tokens)


def run_audio_encoder_onnx(path: str | os.PathLike, **inputs_numpy) -> np.ndarray:
    """Run an exported audio front-end with ONNX Runtime on the CPU; returns audio_embeds [B, N, D]."""
    import onnxruntime as ort

    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    expected = {i.name for i in session.get_inputs()}
    if set(inputs_numpy) != expected:
        raise ValueError(f"the graph takes inputs {sorted(expected)}, got {sorted(inputs_numpy)}")
    feeds = {k: np.ascontiguousarray(v) for k, v in inputs_numpy.items()}
    return session.run([OUTPUT_NAME], feeds)[0]
