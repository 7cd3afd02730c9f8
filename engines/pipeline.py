"""export-engine's TensorRT stage: one engine per graph for the profiles the manifest implies, built through
the keyed engine cache and placed into the export directory.

Where engines live: the cache (`EngineBuildConfig.cache_dir`, default `$FASTADASP_ENGINE_CACHE` or
`$XDG_CACHE_HOME/fastadasp/engines`) holds one engine per key (graph bytes, profile, precision, toolkit,
target, plugin bytes); the export directory gets a hard link (a copy across file systems) named
`<role>.<target>.engine`, recorded in manifest.json with its hash and cache key. A second export of the same
graphs reuses every engine.

Without TensorRT (or TensorRT-RTX) this prints one line saying engines were not built and why; the ONNX
graphs and manifest are complete either way.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fastadasp.core.choices import PRECISIONS
from fastadasp.core.errors import InvalidOption
from fastadasp.core.files import sha256_file
from fastadasp.core.manifest import EngineEntry, EngineFile, Manifest, PluginLibrary

CACHE_ENV = "FASTADASP_ENGINE_CACHE"


def default_cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fastadasp" / "engines"


@dataclass(frozen=True)
class EngineBuildConfig:
    """Engine profile bounds and build target for export-engine's TensorRT stage."""

    max_batch: int = 5  # largest batch x beams an engine profile admits
    max_text_tokens: int = 512  # largest prefix + suffix length
    max_new_tokens: int = 256  # decode budget the KV capacity profiles allow
    compute_capability: str | None = None  # TensorRT-RTX target ("8.6"); None: portable / the local GPU
    cache_dir: Path | None = None  # None: default_cache_dir()
    plugin_libraries: tuple[str, ...] = ()
    flavor: str | None = None  # "tensorrt" | "tensorrt-rtx"; None: whichever loads
    progress: bool = True

    def validate(self) -> None:
        for name in ("max_batch", "max_text_tokens", "max_new_tokens"):
            value = getattr(self, name)
            if value < 1:
                option = "--" + name.replace("_", "-")
                raise InvalidOption(f"{option} must be >= 1, got {value}")

    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir is not None else default_cache_dir()


def _place(source: Path, target: Path) -> None:
    """Put the cached engine at `target` atomically: hard link when possible, else copy."""
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:  # another file system, or links not allowed
        shutil.copyfile(source, tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def build_engines_for_export(export_dir: str | os.PathLike, manifest: Manifest,
                             config: EngineBuildConfig = EngineBuildConfig()) -> Manifest:
    """Build (or reuse) every engine of the export and return the manifest with their entry (also saved)."""
    from fastadasp.engines.builder import TensorRTUnavailable, describe_toolkit, normalize_compute_capability
    from fastadasp.engines.cache import EngineCache
    from fastadasp.engines.profiles import profiles_for_manifest

    config.validate()
    if manifest.dtype not in PRECISIONS:
        raise InvalidOption(f"manifest dtype {manifest.dtype!r} is not an engine precision")
    try:
        toolkit = describe_toolkit(config.flavor)
    except TensorRTUnavailable as exc:
        _say(f"[engines] not built: {exc}")
        return manifest
    export_dir = Path(export_dir)
    cc = normalize_compute_capability(config.compute_capability)
    target = cc or ("portable" if toolkit.flavor == "tensorrt-rtx" else toolkit.device)
    entry_key = f"{toolkit.flavor}-{toolkit.version}/{target}"
    cache = EngineCache(config.resolved_cache_dir(), toolkit=toolkit)
    plugins = [os.path.abspath(p) for p in config.plugin_libraries]
    files: dict[str, EngineFile] = {}
    profiles = profiles_for_manifest(manifest, config.max_batch, config.max_text_tokens, config.max_new_tokens)
    for role, profile in profiles.items():
        onnx_path = export_dir / manifest.graphs[role].file
        key = cache.key_for(onnx_path, profile, manifest.dtype, cc, plugin_libraries=plugins)
        reused = cache.has(key)
        start = time.perf_counter()
        cached = cache.get_or_build(onnx_path, profile, manifest.dtype, cc, plugin_libraries=plugins,
                                    progress=config.progress)
        seconds = time.perf_counter() - start
        name = f"{role}.{re.sub('[^A-Za-z0-9]+', '', target)}.engine"
        _place(cached, export_dir / name)
        files[role] = EngineFile(name, sha256_file(export_dir / name), (export_dir / name).stat().st_size, key,
                                 None if reused else round(seconds, 2), profile.to_json())
        _say(f"[engines] {role}: {'reused' if reused else 'built'} {name} "
             f"({'cache hit' if reused else f'{seconds:.1f}s'}, key {key[:12]})")
    entry = EngineEntry(toolkit.flavor, toolkit.version, target, manifest.dtype,
                        [PluginLibrary(p, sha256_file(p)) for p in plugins], files)
    manifest = manifest.with_engines(entry_key, entry)
    manifest.save(export_dir)
    _say(f"[engines] {', '.join(files)} for {entry_key} recorded in manifest.json")
    return manifest
