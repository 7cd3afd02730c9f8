"""Register the WeightedMerge plugin library with a TensorRT or TensorRT-RTX plugin registry.

    import tensorrt_rtx as trt
    from fastadasp.plugins import load_into_registry, configure_builder_for_plugin
    loaded = load_into_registry(trt, build.library)       # before creating the OnnxParser
    configure_builder_for_plugin(trt, config, build.library)  # optional: embed the library in the engine

Two process-level hazards are handled here, not left to the caller:

* The unversioned runtime name. Once a plugin is registered, TensorRT-RTX's ONNX parser dlopens
  ``libtensorrt_rtx.so``; the wheel ships only ``libtensorrt_rtx.so.1``, the failure escapes a noexcept path and
  the process aborts (SIGABRT; Python cannot catch it). :func:`ensure_unversioned_runtime` provides the name as a
  symlink beside the loaded versioned library (the parser's RPATH is ``$ORIGIN``), or accepts one found on the
  ``LD_LIBRARY_PATH`` the process started with, and otherwise refuses to load with a one-line fix.
* The registry ABI. The library itself never calls a registry (see plugins/weighted_merge/weightedMergePlugin.h):
  the registry asks it for its creators through ``getCreators``. :func:`check_library_abi` verifies that from the
  ELF file before anything is loaded.
"""

from __future__ import annotations

import ctypes
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from fastadasp.core.errors import UserError
from fastadasp.core.files import sha256_file
from fastadasp.plugins.elf import ElfError, read_elf

__all__ = [
    "LinkStatus",
    "LoadedPlugin",
    "PluginLoadError",
    "check_library_abi",
    "configure_builder_for_plugin",
    "ensure_unversioned_runtime",
    "load_into_registry",
    "loaded_library_paths",
]

# Symbols whose use from the plugin would cross into a TensorRT library's registry or runtime.
FORBIDDEN_IMPORTS = ("getPluginRegistry", "getBuilderPluginRegistry", "createInferRuntime_INTERNAL",
                     "createInferBuilder_INTERNAL", "createInferRefitter_INTERNAL")
REQUIRED_EXPORTS = ("getCreators", "setLoggerFinder")

# module name -> (unversioned runtime name the parser dlopens, versioned file pattern, parser file pattern)
_UNVERSIONED_RUNTIME = {
    "tensorrt_rtx": ("libtensorrt_rtx.so", r"libtensorrt_rtx\.so\.\d+(\.\d+)*$",
                     r"libtensorrt_onnxparser_rtx\.so(\.\d+)*$"),
}


class PluginLoadError(UserError, RuntimeError):
    """The plugin library cannot be loaded safely; the message is one line with the fix."""


@dataclass(frozen=True)
class LinkStatus:
    """How the unversioned runtime name resolves for the ONNX parser."""

    needed: bool  # this toolkit dlopens an unversioned name once a plugin is registered
    how: str  # "not-needed" | "present" | "created" | "ld_library_path"
    link: Path | None = None
    target: Path | None = None


@dataclass(frozen=True)
class LoadedPlugin:
    library: Path
    sha256: str
    module: str  # "tensorrt" / "tensorrt_rtx"
    link: LinkStatus
    creator: Any  # the registry's IPluginCreatorV3One for WeightedMerge


# ------------------------------------------------------------------------------------------ library checks


def check_library_abi(path: str | os.PathLike) -> None:
    """Refuse a file that is not a plugin library this loader can register safely.

    It must be an ELF shared object exporting ``getCreators`` and ``setLoggerFinder`` and must not import a
    registry or runtime entry point (``getPluginRegistry`` & co.): such a call, compiled against TensorRT 10
    headers, goes through a vtable TensorRT-RTX lays out differently and crashes the process during dlopen.
    """
    path = Path(path)
    try:
        elf = read_elf(path)
    except (OSError, ElfError) as exc:
        raise PluginLoadError(f"{path} is not a loadable plugin library: {exc}") from exc
    missing = [s for s in REQUIRED_EXPORTS if s not in elf.exported]
    if missing:
        raise PluginLoadError(f"{path} does not export {', '.join(missing)}: not a TensorRT IPluginV3 plugin library")
    bad = sorted(s for s in elf.imported if s in FORBIDDEN_IMPORTS or "PluginRegistrar" in s)
    if bad:
        raise PluginLoadError(f"{path} imports {', '.join(bad)}: a plugin library must not call a plugin registry "
                              "or runtime itself (REGISTER_TENSORRT_PLUGIN / getPluginRegistry crash TensorRT-RTX)")


# ------------------------------------------------------------------------------------------ unversioned runtime


class _DlPhdrInfo(ctypes.Structure):
    _fields_ = [("dlpi_addr", ctypes.c_void_p), ("dlpi_name", ctypes.c_char_p),
                ("dlpi_phdr", ctypes.c_void_p), ("dlpi_phnum", ctypes.c_uint16)]


_DL_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(_DlPhdrInfo), ctypes.c_size_t, ctypes.c_void_p)


def loaded_library_paths() -> list[str]:
    """Paths of the shared objects loaded in this process, as the dynamic loader opened them.

    These are the names ``$ORIGIN`` expands from (a symlinked folder stays a symlinked folder), unlike the
    resolved paths in /proc/self/maps, which are the fallback.
    """
    names: list[str] = []
    try:
        libc = ctypes.CDLL(None)

        def collect(info, _size, _data):
            raw = info.contents.dlpi_name
            if raw:
                names.append(os.fsdecode(raw))
            return 0

        libc.dl_iterate_phdr(_DL_CALLBACK(collect), None)
    except (OSError, AttributeError):
        pass
    if names:
        return names
    try:
        with open("/proc/self/maps") as fh:
            return sorted({line.split(None, 5)[5].strip() for line in fh if len(line.split(None, 5)) == 6
                           and line.split(None, 5)[5].startswith("/")})
    except OSError:
        return []


def _startup_library_path() -> list[str]:
    """LD_LIBRARY_PATH as the process started with it (the dynamic loader reads it once, at start)."""
    try:
        with open("/proc/self/environ", "rb") as fh:
            for item in fh.read().split(b"\0"):
                if item.startswith(b"LD_LIBRARY_PATH="):
                    return [p for p in os.fsdecode(item.split(b"=", 1)[1]).split(":") if p]
    except OSError:
        pass
    return []


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def fallback_link_dir() -> Path:
    """A folder this user can write, for a link that LD_LIBRARY_PATH can point at."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "fastadasp" / "tensorrt-rtx-lib"


def ensure_unversioned_runtime(trt: Any, *, loaded: Callable[[], Iterable[str]] = loaded_library_paths,
                               startup_library_path: Callable[[], list[str]] = _startup_library_path) -> LinkStatus:
    """Make the unversioned runtime name resolvable for ``trt``'s ONNX parser (see the module docstring).

    ``trt`` is the imported module (its libraries are loaded); ``loaded`` and ``startup_library_path`` are seams
    for tests. Returns how the name resolves; raises :class:`PluginLoadError` when it cannot.
    """
    module = getattr(trt, "__name__", str(trt)).split(".")[0]
    spec = _UNVERSIONED_RUNTIME.get(module)
    if spec is None:
        return LinkStatus(needed=False, how="not-needed")
    unversioned, runtime_pattern, parser_pattern = spec
    paths = list(loaded())
    runtime = next((Path(p) for p in paths if re.search(runtime_pattern, os.path.basename(p))), None)
    if runtime is None:
        raise PluginLoadError(f"{module} is imported but no {unversioned}.N is loaded in this process; cannot "
                              f"provide {unversioned} for its ONNX parser")
    parser = next((Path(p) for p in paths if re.search(parser_pattern, os.path.basename(p))), None)
    link_dir = (parser or runtime).parent  # the parser's RPATH is $ORIGIN
    link = link_dir / unversioned
    if link.exists():  # follows the symlink
        if _same_file(link, runtime):
            return LinkStatus(needed=True, how="present", link=link, target=runtime)
        raise PluginLoadError(f"{link} exists but is not {runtime}: the ONNX parser would load a second, different "
                              f"TensorRT-RTX; remove it or make it a symlink to {runtime.name}")
    target = os.path.relpath(runtime, link_dir) if runtime.parent == link_dir else str(runtime)
    tmp = link_dir / f".{unversioned}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp)
        os.replace(tmp, link)  # atomic: concurrent loaders agree on the same link
        return LinkStatus(needed=True, how="created", link=link, target=runtime)
    except OSError as exc:
        reason = exc
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
    for d in startup_library_path():
        candidate = Path(d) / unversioned
        if _same_file(candidate, runtime):
            return LinkStatus(needed=True, how="ld_library_path", link=candidate, target=runtime)
    helper = fallback_link_dir()
    hint = f"run `ln -s {runtime.name} {link}` as that folder's owner"
    try:
        helper.mkdir(parents=True, exist_ok=True)
        helper_link = helper / unversioned
        if not _same_file(helper_link, runtime):
            helper_link.unlink(missing_ok=True)
            os.symlink(runtime, helper_link)
        hint += f", or start Python with LD_LIBRARY_PATH={helper} (it holds that link now)"
    except OSError:
        pass
    raise PluginLoadError(f"cannot create {link} ({reason.strerror or reason}); without it TensorRT-RTX's ONNX "
                          f"parser aborts the process once a plugin is registered: {hint}")


# ------------------------------------------------------------------------------------------ registry


_loaded: dict[tuple[str, str], LoadedPlugin] = {}
_lock = threading.Lock()



def load_into_registry(trt: Any, library: str | os.PathLike) -> LoadedPlugin:
    """Register ``library`` with ``trt.get_plugin_registry()`` once per process and module.

    Checks the file (:func:`check_library_abi`), provides the unversioned runtime name the TensorRT-RTX parser
    needs (:func:`ensure_unversioned_runtime`), loads it with ``registry.load_library`` and confirms the registry
    now has the WeightedMerge creator (name, version and namespace the exporter writes on every node). Call it
    before parsing: the parser imports a node as the plugin only when the creator is registered.
    """
    # the node identity the exporter writes (imported here: the exporter needs onnx, loading the plugin does not)
    from fastadasp.exporter.merge_op import MERGE_OP, PLUGIN_NAMESPACE, PLUGIN_VERSION

    path = Path(library).resolve()
    module = getattr(trt, "__name__", str(trt)).split(".")[0]
    with _lock:
        cached = _loaded.get((module, str(path)))
        if cached is not None:
            return cached
        if not path.is_file():
            raise PluginLoadError(f"plugin library not found: {path} (build it with `fastadasp build-plugin`)")
        check_library_abi(path)
        link = ensure_unversioned_runtime(trt)
        registry = trt.get_plugin_registry()
        if not hasattr(registry, "load_library"):
            raise PluginLoadError(f"{module} {getattr(trt, '__version__', '?')} has no IPluginRegistry.load_library; "
                                  "TensorRT 10+ or TensorRT-RTX is needed for IPluginV3 plugins")
        handle = registry.load_library(str(path))
        if handle is None:
            raise PluginLoadError(f"the {module} plugin registry refused {path} (its creators may already be "
                                  "registered from another copy of the library)")
        creator = registry.get_creator(MERGE_OP, PLUGIN_VERSION, PLUGIN_NAMESPACE)
        if creator is None:
            raise PluginLoadError(f"{path} loaded but the registry has no {MERGE_OP} creator (version "
                                  f"{PLUGIN_VERSION}, namespace {PLUGIN_NAMESPACE}); rebuild the plugin")
        loaded = LoadedPlugin(library=path, sha256=sha256_file(path), module=module, link=link, creator=creator)
        _loaded[(module, str(path))] = loaded
        return loaded


def configure_builder_for_plugin(trt: Any, config: Any, library: str | os.PathLike, *,
                                 serialize: bool = True) -> dict[str, Any]:
    """Builder settings for engines that use the plugin; returns what was applied (for the manifest).

    With ``serialize`` the library is embedded in the engine (``plugins_to_serialize``), which TensorRT allows
    only for version-compatible plans that exclude the lean runtime: so both flags are set too. The engine then
    needs no separate plugin file at run time. Settings the toolkit lacks are reported as not applied.
    """
    applied: dict[str, Any] = {"plugins_to_serialize": [], "flags": []}
    if not serialize:
        return applied
    flags = getattr(trt, "BuilderFlag", None)
    members = getattr(flags, "__members__", {})
    needed = {"VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME"}
    if not hasattr(config, "plugins_to_serialize") or not needed <= set(members):
        applied["unsupported"] = "this toolkit cannot serialize plugin libraries into engines"
        return applied
    for name in ("VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME"):
        config.set_flag(members[name])
        applied["flags"].append(name)
    config.plugins_to_serialize = [str(Path(library).resolve())]
    applied["plugins_to_serialize"] = list(config.plugins_to_serialize)
    return applied
