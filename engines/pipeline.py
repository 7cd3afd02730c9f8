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
    import os
    import re

    from fastadasp.engines.builder import build_engine, describe_toolkit
    from fastadasp.engines.profiles import profiles_for_manifest
    from fastadasp.exporter.manifest import sha256_file, write_manifest

    toolkit = describe_toolkit()
    target = args.compute_capability or ("portable" if toolkit.flavor == "tensorrt-rtx" else toolkit.device)
    entry_key = f"{toolkit.flavor}-{toolkit.version}/{target}"
    entries = {}
    for role, profile in profiles_for_manifest(manifest, args).items():
        onnx_path = Path(out_dir) / manifest["graphs"][role]["file"]
        engine_path = Path(out_dir) / f"{role}.{re.sub('[^A-Za-z0-9]+', '', target)}.engine"
        report = build_engine(onnx_path, engine_path, profile, precision=manifest["dtype"],
                              compute_capability=args.compute_capability)
        os.chmod(engine_path, 0o644)
        entries[role] = {
            "file": engine_path.name, "sha256": sha256_file(engine_path), "bytes": report.bytes,
            "build_seconds": round(report.seconds, 2), "profile": profile.to_json(),
        }
    manifest.setdefault("engines", {})[entry_key] = {
        "flavor": toolkit.flavor, "toolkit_version": toolkit.version, "compute_capability": target,
        "precision": manifest["dtype"], "plugin_libraries": [], "graphs": entries,
    }
    write_manifest(out_dir, manifest)
    print(f"[engines] built {', '.join(entries)} for {entry_key}; recorded in manifest.json")
    return entries
