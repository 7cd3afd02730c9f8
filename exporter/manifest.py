"""manifest.json: the versioned contract between export, engine building, and every runtime (Python, C++).

A runtime refuses a manifest whose format version it does not know, or whose graph files do not hash to
what the manifest recorded (a half-copied or re-exported directory), with one message naming the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

MANIFEST_FORMAT = "fastadasp-manifest"
MANIFEST_VERSION = 1
MANIFEST_NAME = "manifest.json"


class ManifestError(ValueError):
    pass


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def config_hash(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a manifest is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_manifest(directory: str | os.PathLike, manifest: dict) -> Path:
    path = Path(directory) / MANIFEST_NAME
    atomic_write_text(path, json.dumps(manifest, indent=2) + "\n")
    return path


def load_manifest(directory: str | os.PathLike, *, verify_hashes: bool = True) -> dict:
    """Read and check a manifest; raise ManifestError (one clear line) on any mismatch."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not path.exists():
        raise ManifestError(f"no {MANIFEST_NAME} in {directory}: point at a directory written by `export-engine`")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path} is not valid JSON ({exc}); re-run export-engine") from exc
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ManifestError(f"{path} is not a fastadasp manifest (format {manifest.get('format')!r})")
    if manifest.get("version") != MANIFEST_VERSION:
        raise ManifestError(
            f"{path} has manifest version {manifest.get('version')!r} but this runtime reads version "
            f"{MANIFEST_VERSION}; re-export with this fastadasp version or use the matching runtime"
        )
    if verify_hashes:
        for role, graph in manifest.get("graphs", {}).items():
            for file, expected in graph.get("sha256", {}).items():
                file_path = directory / file
                if not file_path.exists():
                    raise ManifestError(f"{role} graph file {file} listed in {path} is missing; re-run export-engine")
                if sha256_file(file_path) != expected:
                    raise ManifestError(
                        f"{file} does not match the hash in {path} (modified or partly copied); re-run export-engine"
                    )
    return manifest
