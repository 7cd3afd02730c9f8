"""export-engine's TensorRT stage: one engine per graph for the profiles the manifest implies.

Without TensorRT (or TensorRT-RTX) this prints one line saying engines were not built and why; the ONNX
graphs and manifest are complete either way.
"""

from __future__ import annotations

from pathlib import Path


def build_engines_for_export(out_dir: str, manifest: dict, args) -> dict:
    try:
        from fastadasp.engines.builder import TensorRTUnavailable, load_tensorrt
    except ImportError as exc:  # the engine builder module itself is missing from this build
        print(f"[engines] not built: the TensorRT engine builder is unavailable ({exc})")
        return {}
    try:
        load_tensorrt()
    except TensorRTUnavailable as exc:
        print(f"[engines] not built: {exc}")
        return {}
    from fastadasp.engines.profiles import profiles_for_manifest
    from fastadasp.engines.builder import build_engine

    reports = {}
    for role, profile in profiles_for_manifest(manifest, args).items():
        onnx_path = Path(out_dir) / manifest["graphs"][role]["file"]
        engine_path = Path(out_dir) / f"{role}.engine"
        reports[role] = build_engine(onnx_path, engine_path, profile, precision=manifest["dtype"],
                                     compute_capability=args.compute_capability)
    return reports
