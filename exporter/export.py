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
from fastadasp.exporter.graphs import DTYPES, GraphSpec, build_decode, build_prefill
from fastadasp.exporter.manifest import MANIFEST_FORMAT, MANIFEST_VERSION, config_hash, sha256_file, write_manifest
from fastadasp.exporter.merge_op import MERGE_DOMAIN, MERGE_OP, PLUGIN_NAMESPACE, PLUGIN_VERSION
from fastadasp.reduction.merge import RATIO_DENOMINATOR, ratio_numerator

# Above this many bytes of weights a graph goes to external data (protobuf refuses messages over 2 GiB).
EXTERNAL_DATA_THRESHOLD = 1 << 30


@dataclass(frozen=True)
class AudioTokenRange:
    min: int
    opt: int
    max: int

    @classmethod
    def parse(cls, text: str) -> "AudioTokenRange":
        try:
            lo, opt, hi = (int(v) for v in text.split(":"))
        except ValueError:
            raise ValueError(f"--audio-tokens-range must be MIN:OPT:MAX integers, e.g. 1:1500:3000; got {text!r}") from None
        if not 1 <= lo <= opt <= hi:
            raise ValueError(f"--audio-tokens-range needs 1 <= MIN <= OPT <= MAX, got {text!r}")
        return cls(lo, opt, hi)


def _io(model: onnx.ModelProto) -> dict:
    def describe(values):
        out = {}
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim]
            out[v.name] = {"dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, "shape": dims}
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
    *,
    dtype: str = "fp32",
    opset: int = 17,
    position_policy: str = "reference",
    audio_tokens: AudioTokenRange = AudioTokenRange(1, 1500, 3000),
    plan=None,
    include_audio_encoder: bool = True,
    progress: Callable[[str], None] = print,
) -> dict:
    """Write the graphs and manifest for `lm` with `schedule` baked in; returns the manifest."""
    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r} is not supported by the ONNX exporter; choose one of {', '.join(DTYPES)}")
    if opset < 17:
        raise ValueError(f"--opset must be >= 17 (LayerNorm-free graphs still need opset-17 ops), got {opset}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = GraphSpec(tuple(schedule.ratios), position_policy, dtype, opset, audio_tokens.max)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir))
    try:
        graphs: dict[str, dict] = {}
        for role, builder in (("prefill", build_prefill), ("decode", build_decode)):
            start = time.time()
            progress(f"[export] building {role}.onnx ({lm.args.num_layers} layers, {dtype}, opset {opset})...")
            model = builder(lm.decoder, spec)
            files = _save(model, staging, f"{role}.onnx")
            graphs[role] = {"file": files[0], "files": files, **_io(model)}
            progress(f"[export] {role}.onnx written in {time.time() - start:.1f}s")
            del model
        if include_audio_encoder and lm.has_audio_front_end:
            from fastadasp.exporter.audio_encoder import export_audio_encoder

            progress("[export] building audio_encoder.onnx...")
            info = export_audio_encoder(lm, staging / "audio_encoder.onnx", opset=opset)
            graphs["audio_encoder"] = {"file": "audio_encoder.onnx", "files": ["audio_encoder.onnx"], **info}
        for graph in graphs.values():
            graph["sha256"] = {f: sha256_file(staging / f) for f in graph["files"]}
        for item in staging.iterdir():
            os.replace(item, out_dir / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    manifest = build_manifest(lm, schedule, spec, audio_tokens, plan, graphs)
    write_manifest(out_dir, manifest)
    progress(f"[export] manifest.json written to {out_dir}")
    return manifest


def build_manifest(lm, schedule, spec: GraphSpec, audio_tokens: AudioTokenRange, plan, graphs: dict) -> dict:
    args = asdict(lm.args)
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "fastadasp_version": fastadasp.__version__,
        "model": {
            "name": lm.name,
            "family": lm.family,
            "args": args,
            "prompt_lora": lm.decoder.lora is not None,
            "config_hash": config_hash({"args": args, "lora": lm.decoder.lora is not None}),
        },
        "schedule": {
            "kind": schedule.kind,
            "start_layer": schedule.start_layer,
            "base_ratio": schedule.base_ratio,
            "ratios": list(schedule.ratios),
            "ratio_numerators": [ratio_numerator(r) for r in schedule.ratios],
            "ratio_denominator": RATIO_DENOMINATOR,
            "flops_target": None if plan is None else plan.flops_target,
            "flops_reduction_nominal": None if plan is None else plan.flops_reduction,
            "nominal_audio_tokens": audio_tokens.opt,
            "tokens_per_layer_nominal": schedule.span_lengths(audio_tokens.opt),
        },
        "position_policy": spec.position_policy,
        "length_rule": {
            "audio": "n[0] = N; n[i+1] = n[i] - min(n[i] * q[i] // ratio_denominator, max(n[i] - 1, 0))",
            "kv": "T[i] = P + n[i] + S (prefill); decode writes at cache_lengths[i] and grows it by one",
            "decode_position": "P + N + S + step (the full prompt length, whatever was merged)",
        },
        "audio_tokens_range": asdict(audio_tokens),
        "dtype": spec.dtype,
        "opset": spec.opset,
        "graphs": graphs,
        "plugin": {
            "op": MERGE_OP,
            "domain": MERGE_DOMAIN,
            "plugin_version": PLUGIN_VERSION,
            "plugin_namespace": PLUGIN_NAMESPACE,
            "attributes": ["ratio_numerator", "plugin_version", "plugin_namespace"],
            "standard_op_body": "model-local function (ONNX Runtime inlines it; TensorRT imports it as the plugin when registered)",
            "scan_steps_for_max_tokens": audio_tokens.max,
        },
        "engines": {},
    }
