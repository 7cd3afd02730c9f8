"""export-engine's ONNX stage: prefill.onnx + decode.onnx (+ audio_encoder.onnx) + manifest.json.

Files are written into a temporary folder beside the output directory and moved into place only when all
of them are complete; the manifest goes last. An interrupted export leaves the previous contents intact.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import onnx

import fastadasp
from fastadasp.core.choices import POSITION_POLICIES, PRECISIONS
from fastadasp.core.errors import InvalidOption
from fastadasp.core.files import sha256_file
from fastadasp.core.manifest import (
    AudioTokenRange,
    GraphEntry,
    Manifest,
    ModelEntry,
    PluginEntry,
    ScheduleEntry,
    ServingLimits,
    TensorSpec,
    config_hash,
)
from fastadasp.exporter.graphs import GraphSpec, build_decode, build_prefill
from fastadasp.exporter.onnx_builder import EXTERNAL_DATA_THRESHOLD
from fastadasp.exporter.merge_op import MERGE_DOMAIN, MERGE_OP, PLUGIN_NAMESPACE, PLUGIN_VERSION
from fastadasp.reduction.merge import RATIO_DENOMINATOR, ratio_numerator



MIN_OPSET = 17
# Highest opset the graphs are checked at (onnx.checker full check + ONNX Runtime parity in the tests).
MAX_OPSET = 21


@dataclass(frozen=True)
class ExportConfig:
    """What `export_model` writes: precision, opset, position policy and the audio lengths to accept."""

    dtype: str = "fp32"
    opset: int = MIN_OPSET
    position_policy: str = "reference"
    audio_tokens: AudioTokenRange = AudioTokenRange(1, 1500, 3000)
    include_audio_encoder: bool = True
    limits: ServingLimits = ServingLimits()

    def validate(self) -> None:
        if self.dtype not in PRECISIONS:
            raise InvalidOption(f"--dtype {self.dtype!r} is not supported; choose one of {', '.join(PRECISIONS)}")
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise InvalidOption(f"--opset {self.opset} is outside the supported {MIN_OPSET}..{MAX_OPSET}; "
                                f"pass one in that range (default {MIN_OPSET})")
        if self.position_policy not in POSITION_POLICIES:
            raise InvalidOption(f"--position-policy {self.position_policy!r}: choose one of {', '.join(POSITION_POLICIES)}")


def _io(model: onnx.ModelProto) -> dict[str, dict[str, TensorSpec]]:
    def describe(values):
        out = {}
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim]
            out[v.name] = TensorSpec(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, dims)
        return out

    return {"inputs": describe(model.graph.input), "outputs": describe(model.graph.output)}


def _save(model: onnx.ModelProto, directory: Path, name: str) -> list[str]:
    """Save a graph; large ones keep their weights in `<name>.data`. Returns the files written."""
    weight_bytes = sum(len(t.raw_data) for t in model.graph.initializer)
    path = directory / name
    if weight_bytes > EXTERNAL_DATA_THRESHOLD:
        data = f"{name}.data"
        onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location=data,
                  size_threshold=1024)
        return [name, data]
    onnx.save(model, path)
    return [name]


def export_model(
    lm,
    schedule,
    out_dir: str | os.PathLike,
    config: ExportConfig = ExportConfig(),
    *,
    plan=None,
    progress: Callable[[str], None] = print,
) -> Manifest:
    """Write the graphs and manifest for `lm` with `schedule` baked in into `out_dir` (created if needed,
    files moved into place only when all are complete, the manifest last); returns the manifest."""
    config.validate()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = GraphSpec(tuple(schedule.ratios), config.position_policy, config.dtype, config.opset, config.audio_tokens.max)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir))
    try:
        graphs: dict[str, GraphEntry] = {}
        for role, builder in (("prefill", build_prefill), ("decode", build_decode)):
            start = time.time()
            progress(f"[export] building {role}.onnx ({lm.args.num_layers} layers, {config.dtype}, opset {config.opset})...")
            model = builder(lm.decoder, spec)
            files = _save(model, staging, f"{role}.onnx")
            graphs[role] = GraphEntry(files[0], files, _hashes(staging, files), **_io(model))
            progress(f"[export] {role}.onnx written in {time.time() - start:.1f}s")
            del model
        if config.include_audio_encoder and lm.has_audio_front_end:
            from fastadasp.exporter.audio_encoder import export_audio_encoder

            progress("[export] building audio_encoder.onnx...")
            info = export_audio_encoder(lm, staging / "audio_encoder.onnx", opset=config.opset)
            files = [info.file] + ([info.external_data] if info.external_data else [])
            graphs["audio_encoder"] = GraphEntry(info.file, files, _hashes(staging, files), info.inputs, info.outputs,
                                                 audio_tokens=info.audio_tokens)
        for item in staging.iterdir():
            os.replace(item, out_dir / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    manifest = build_manifest(lm, schedule, spec, config, plan, graphs)
    manifest.save(out_dir)
    progress(f"[export] manifest.json written to {out_dir}")
    return manifest


def _hashes(directory: Path, files: list[str]) -> dict[str, str]:
    return {f: sha256_file(directory / f) for f in files}


def build_manifest(lm, schedule, spec: GraphSpec, config: ExportConfig, plan,
                   graphs: dict[str, GraphEntry]) -> Manifest:
    audio_tokens = config.audio_tokens
    has_lora = lm.decoder.lora is not None
    return Manifest(
        fastadasp_version=fastadasp.__version__,
        model=ModelEntry(lm.name, lm.family, lm.args, has_lora, config_hash({"args": asdict(lm.args), "lora": has_lora})),
        schedule=ScheduleEntry(
            kind=schedule.kind,
            start_layer=schedule.start_layer,
            base_ratio=schedule.base_ratio,
            ratio_numerators=[ratio_numerator(r) for r in schedule.ratios],
            ratio_denominator=RATIO_DENOMINATOR,
            flops_target=None if plan is None else plan.flops_target,
            flops_reduction_nominal=None if plan is None else plan.flops_reduction,
            nominal_audio_tokens=audio_tokens.opt,
            tokens_per_layer_nominal=schedule.span_lengths(audio_tokens.opt),
        ),
        position_policy=spec.position_policy,
        audio_tokens_range=audio_tokens,
        dtype=spec.dtype,
        opset=spec.opset,
        graphs=graphs,
        plugin=PluginEntry(
            op=MERGE_OP,
            domain=MERGE_DOMAIN,
            plugin_version=PLUGIN_VERSION,
            plugin_namespace=PLUGIN_NAMESPACE,
            attributes=["ratio_numerator", "plugin_version", "plugin_namespace"],
            standard_op_body="model-local function (ONNX Runtime inlines it; TensorRT imports it as the plugin "
                             "when registered)",
            max_audio_tokens=audio_tokens.max,
        ),
        limits=config.limits,
    )
