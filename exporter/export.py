"""export-engine's ONNX stage: prefill.onnx + decode.onnx (+ audio_encoder.onnx, + prompt_scale.onnx for WavLLM)
+ tokenizer.json + prompt_template.json + manifest.json.

Everything a runtime needs to serve "audio file + prompt -> text" without PyTorch or the checkpoint: the audio
encoder with a dynamic clip length and the recipe for its inputs (manifest `audio`), the tokenizer and prompt
template (manifest `text`), and WavLLM's prompt-aware LoRA scale as its own graph.

Files are written into a temporary folder beside the output directory and moved into place only when all
of them are complete; the manifest goes last. An interrupted export leaves the previous contents intact.
"""

from __future__ import annotations

import dataclasses
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
    AudioEntry,
    AudioTokenRange,
    GraphEntry,
    Manifest,
    ModelEntry,
    PluginEntry,
    ScheduleEntry,
    ServingLimits,
    TensorSpec,
    TextEntry,
    config_hash,
)
from fastadasp.exporter.graphs import GraphSpec, build_decode, build_prefill, build_prompt_scale
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
        if lm.needs_lora_scale:
            progress("[export] building prompt_scale.onnx (WavLLM's LoRA scale from the prompt)...")
            model = build_prompt_scale(lm, spec)
            files = _save_sharing_weights(model, staging, "prompt_scale.onnx", graphs["prefill"])
            graphs["prompt_scale"] = GraphEntry(files[0], files, _hashes(staging, files), **_io(model))
            del model
        audio: AudioEntry | None = None
        if config.include_audio_encoder and lm.has_audio_front_end:
            from fastadasp.exporter.audio_encoder import export_audio_encoder

            progress("[export] building audio_encoder.onnx...")
            info = export_audio_encoder(lm, staging / "audio_encoder.onnx", opset=config.opset)
            files = [info.file] + ([info.external_data] if info.external_data else [])
            graphs["audio_encoder"] = GraphEntry(info.file, files, _hashes(staging, files), info.inputs, info.outputs,
                                                 audio_tokens=info.audio_tokens)
            audio = info.spec
        text = _write_text_assets(lm, staging, progress)
        for item in staging.iterdir():
            os.replace(item, out_dir / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    manifest = dataclasses.replace(build_manifest(lm, schedule, spec, config, plan, graphs), audio=audio, text=text)
    manifest.save(out_dir)
    progress(f"[export] manifest.json written to {out_dir}")
    return manifest


def _save_sharing_weights(model: onnx.ModelProto, directory: Path, name: str, donor: GraphEntry) -> list[str]:
    """Save a graph whose weights another graph in `directory` already keeps in external data: initializers of
    the same name, type and shape point into the donor's data file instead of being written again (prompt_scale
    reads the prefill's decoder weights). Without donor external data it is a plain save."""
    if len(donor.files) < 2:
        return _save(model, directory, name)
    kept = onnx.load(str(directory / donor.file), load_external_data=False)
    external = {t.name: t for t in kept.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL}
    shared = False
    for tensor in model.graph.initializer:
        source = external.get(tensor.name)
        if source is None or source.data_type != tensor.data_type or list(source.dims) != list(tensor.dims):
            continue
        tensor.ClearField("raw_data")
        tensor.data_location = onnx.TensorProto.EXTERNAL
        del tensor.external_data[:]
        tensor.external_data.extend(source.external_data)
        shared = True
    onnx.save(model, directory / name)
    data = {entry.value for t in model.graph.initializer for entry in t.external_data if entry.key == "location"}
    return [name, *sorted(data)] if shared else [name]


def _write_text_assets(lm, directory: Path, progress) -> TextEntry | None:
    """tokenizer.json + prompt_template.json from the model's own files (tiny presets: built offline)."""
    tokenizer, template, source = lm.text_assets()
    if tokenizer is None:
        progress(f"[export] no tokenizer written ({source}); requests to this export must pass token ids. Put the "
                 "model's tokenizer.json beside the checkpoint and re-run export-engine to serve text prompts")
        return None
    if tokenizer.vocab_size > lm.args.vocab_size:
        raise ValueError(f"the tokenizer from {source} has {tokenizer.vocab_size} tokens but {lm.name} has "
                         f"{lm.args.vocab_size} embeddings")
    files = ["tokenizer.json", "prompt_template.json"]
    tokenizer.save(directory / files[0])
    template.save(directory / files[1])
    progress(f"[export] tokenizer.json ({tokenizer.vocab_size} tokens, {source}) and prompt_template.json "
             f"({template.source}) written")
    return TextEntry(files[0], files[1], _hashes(directory, files), source)


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
