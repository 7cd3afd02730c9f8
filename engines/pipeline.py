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
from dataclasses import dataclass
from pathlib import Path

from fastadasp.core import interrupts
from fastadasp.core.dtypes import precision as precision_info
from fastadasp.core.errors import InvalidOption
from fastadasp.core.files import sha256_file
from fastadasp.core.manifest import EngineEntry, EngineFile, Manifest, PluginLibrary
from fastadasp.core.progress import say
from fastadasp.engines.cache import CachedEngine, EngineCache
from fastadasp.engines.profile import ShapeProfile, profiles_for_manifest
from fastadasp.engines.toolkit import (
    EngineBuildError,
    TensorRTUnavailable,
    ToolkitInfo,
    check_target,
    describe_toolkit,
    normalize_compute_capability,
)
from fastadasp.engines.util import remove_stale_temps, temp_file

CACHE_ENV = "FASTADASP_ENGINE_CACHE"

# `<role>.<target>.engine`, the names this stage gives engines in an export directory.
_ENGINE_FILE = re.compile(r"^[a-z_]+\.[A-Za-z0-9]+\.engine$")


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
        """Check the options before anything is exported; InvalidOption (one line naming the option) if not.

        The compute capability is checked against the installed toolkit (TensorRT-RTX's target list, or
        TensorRT's local GPU); without a toolkit there is nothing to check it against.
        """
        for name in ("max_batch", "max_text_tokens", "max_new_tokens"):
            value = getattr(self, name)
            if value < 1:
                option = "--" + name.replace("_", "-")
                raise InvalidOption(f"{option} must be >= 1, got {value}")
        try:
            check_target(self.compute_capability, self.flavor, what="--compute-capability")
        except EngineBuildError as exc:
            raise InvalidOption(str(exc)) from None

    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir is not None else default_cache_dir()


def build_engines_for_export(export_dir: str | os.PathLike, manifest: Manifest,
                             config: EngineBuildConfig = EngineBuildConfig(), *,
                             cache: EngineCache | None = None) -> Manifest:
    """Build (or reuse) every engine of the export and return the manifest with their entry (also saved).

    ``cache`` replaces the cache at ``config.resolved_cache_dir()`` (with its toolkit and builder).
    """
    config.validate()
    precision_info(manifest.dtype)  # a manifest of another precision is an InvalidOption
    if cache is None:
        try:
            toolkit = describe_toolkit(config.flavor)
        except TensorRTUnavailable as exc:
            # Printed even with --quiet: the export the user asked for has no engines.
            print(f"[engines] not built: {exc}", file=sys.stderr, flush=True)
            return manifest
        cache = EngineCache(config.resolved_cache_dir(), toolkit=toolkit)
    export_dir = Path(export_dir)
    remove_stale_temps(export_dir)
    cc = normalize_compute_capability(config.compute_capability)
    target = _target_name(cache.toolkit, cc)
    plugins = [os.path.abspath(p) for p in config.plugin_libraries]
    profiles = profiles_for_manifest(manifest, config.max_batch, config.max_text_tokens, config.max_new_tokens)
    engines = {role: _get_engine(cache, export_dir / manifest.graphs[role].file, role, profile, manifest.dtype,
                                 cc, plugins, config.progress)
               for role, profile in profiles.items()}
    # Placing the engines and saving the manifest take milliseconds: a signal waits until both are done, so
    # the export directory never holds engines its manifest does not describe.
    with interrupts.native_section():
        files = {role: _place(engine, export_dir / _engine_file_name(role, target), profiles[role])
                 for role, engine in engines.items()}
        entry = EngineEntry(cache.toolkit.flavor, cache.toolkit.version, target, manifest.dtype,
                            [PluginLibrary(p, sha256_file(p)) for p in plugins], files)
        entry_key = f"{cache.toolkit.flavor}-{cache.toolkit.version}/{target}"
        manifest = manifest.with_engines(entry_key, entry)
        manifest.save(export_dir)
        _remove_unlisted_engines(export_dir, manifest)
    if config.progress:
        names = ", ".join(f.file for f in files.values())
        say(f"[engines] {names} for {entry_key} recorded in manifest.json")
    return manifest


def _target_name(toolkit: ToolkitInfo, cc: str | None) -> str:
    """"8.6", "portable" (TensorRT-RTX's default set) or the local GPU TensorRT builds for."""
    return cc or ("portable" if toolkit.flavor == "tensorrt-rtx" else toolkit.device)


def _get_engine(cache: EngineCache, onnx_path: Path, role: str, profile: ShapeProfile, precision: str,
                cc: str | None, plugins: list[str], progress: bool) -> CachedEngine:
    engine = cache.get_or_build(onnx_path, profile, precision, cc, plugin_libraries=plugins, progress=progress,
                                label=role)
    if progress:
        how = f"built in {engine.seconds:.1f}s" if engine.built else "reused from the engine cache"
        say(f"[engines] {role}: {how} (key {engine.key[:12]})")
    return engine


def _engine_file_name(role: str, target: str) -> str:
    """"prefill.86.engine", "decode.portable.engine", "prefill.NVIDIAH100sm90.engine"."""
    return f"{role}.{re.sub('[^A-Za-z0-9]+', '', target)}.engine"


def _place(engine: CachedEngine, target: Path, profile: ShapeProfile) -> EngineFile:
    """Put the cached engine at `target` atomically (hard link when possible, else a copy)."""
    fd, tmp = temp_file(target.parent, target.name)
    os.close(fd)
    try:
        tmp.unlink()  # os.link needs a free name; the pid-tagged one stays ours
        try:
            os.link(engine.path, tmp)
        except OSError:  # another file system, or links not allowed
            shutil.copyfile(engine.path, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        # Also after a rename: rename() between two links to one file (an export that already links this
        # engine) does nothing and keeps both names.
        tmp.unlink(missing_ok=True)
    return EngineFile(target.name, sha256_file(target), target.stat().st_size, engine.key,
                      round(engine.seconds, 2) if engine.built else None, profile.to_json())


def _remove_unlisted_engines(export_dir: Path, manifest: Manifest) -> None:
    """Engines an earlier export left here that this manifest no longer lists (another target or model)."""
    listed = {f.file for entry in manifest.engines.values() for f in entry.graphs.values()}
    for path in export_dir.iterdir():
        if _ENGINE_FILE.match(path.name) and path.name not in listed:
            path.unlink(missing_ok=True)
