"""Build the WeightedMerge plugin library with CMake + nvcc, reusing an up-to-date build.

    python -m fastadasp.plugins     # prints the library path and its SHA-256

    from fastadasp.plugins import build_plugin
    build = build_plugin()          # PluginBuild(library=..., sha256=..., reused=...)

A build is keyed on everything that decides its bytes: the plugin sources (plugins/CMakeLists.txt and
plugins/weighted_merge/*.{h,cpp,cu}), the nvcc / CMake / C++ compiler versions, the TensorRT headers and the CUDA
architectures. It lives in ``<root>/<key>/`` where root is ``$FASTADASP_PLUGIN_BUILD_DIR`` or
``${XDG_CACHE_HOME:-~/.cache}/fastadasp/plugins`` (outside the source tree); ``build.json`` is written last, so
a folder without it is an unfinished build that the next call completes. Concurrent callers serialise on a
lock file per key.

TensorRT headers (first found): ``$FASTADASP_TENSORRT_INCLUDE_DIR``; an installed TensorRT 10+ (``$TENSORRT_ROOT``,
``$TRT_ROOT``, the system include folders); else the TensorRT 10 headers in the PyPI package ``kernel-lens``
(``pip install kernel-lens==2.0.1``), used in place and never copied.

Every failure is a :class:`PluginBuildError` with a one-line message; :class:`ToolchainMissing` (a subclass)
means the machine cannot build the plugin at all (no nvcc, CMake or headers), as opposed to a compile error.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fastadasp.core.errors import UserError
from fastadasp.core.files import sha256_file

__all__ = [
    "DEFAULT_ARCHITECTURES",
    "PluginBuild",
    "PluginBuildError",
    "ToolchainMissing",
    "Toolchain",
    "build_plugin",
    "default_build_root",
    "find_tensorrt_headers",
    "find_toolchain",
    "source_files",
]

SOURCE_DIR = Path(__file__).resolve().parent  # plugins/ (the fastadasp.plugins package folder)
BUILD_DIR_ENV = "FASTADASP_PLUGIN_BUILD_DIR"
HEADERS_ENV = "FASTADASP_TENSORRT_INCLUDE_DIR"
# SASS for SM80/86/89/90 plus compute_90 PTX (CMake spelling); see plugins/CMakeLists.txt.
DEFAULT_ARCHITECTURES = ("80-real", "86-real", "89-real", "90-real", "90-virtual")
LIBRARY_NAME = "libfastadasp_weighted_merge.so"
CPU_LIBRARY_NAME = "libfastadasp_weighted_merge_cpu.so"
HARNESS_NAME = "weighted_merge_harness"
NVCC_FALLBACKS = ("/usr/local/cuda/bin/nvcc",)  # where toolkits install when nothing else says
_BUILD_RECORD = "build.json"
_BUILD_FORMAT = 1
KEEP_BUILDS = 4  # older keyed builds under the root are removed after a successful build
KERNEL_LENS_HINT = "pip install kernel-lens==2.0.1"


class PluginBuildError(UserError, RuntimeError):
    """The plugin could not be built; the message is one line saying why."""


class ToolchainMissing(PluginBuildError):
    """nvcc, CMake or the TensorRT headers are missing: this machine cannot build the plugin."""


@dataclass(frozen=True)
class PluginBuild:
    """A built plugin. ``library`` is what ``registry.load_library`` / ``plugins_to_serialize`` take."""

    library: Path
    sha256: str
    reused: bool
    build_dir: Path
    cpu_library: Path
    harness: Path
    key: str
    architectures: tuple[str, ...]
    headers: Path
    headers_source: str  # "env" | "tensorrt" | "kernel-lens"
    tensorrt_headers_version: str
    seconds: float  # wall time of configure + compile for this build (the original one when reused)
    log: Path

    def summary(self) -> str:
        state = "reused" if self.reused else f"built in {self.seconds:.1f}s"
        return f"{self.library} sha256={self.sha256} ({state}; sm {', '.join(self.architectures)})"


@dataclass(frozen=True)
class Toolchain:
    nvcc: Path
    cmake: Path
    cxx: str
    versions: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ discovery


def _one_line(text: str, limit: int = 600) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else "..." + text[-(limit - 3):]


def _run_version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unavailable: {exc}"
    return (out.stdout + out.stderr).strip()


def _find_nvcc() -> Path:
    candidates = [os.environ.get("CUDACXX"), shutil.which("nvcc")]
    for root_env in ("CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"):
        if os.environ.get(root_env):
            candidates.append(os.path.join(os.environ[root_env], "bin", "nvcc"))
    candidates.extend(NVCC_FALLBACKS)
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return Path(c)
    raise ToolchainMissing(
        "cannot build the WeightedMerge plugin: nvcc not found (looked at $CUDACXX, PATH, $CUDA_HOME/bin, "
        "/usr/local/cuda/bin); install the CUDA toolkit (12.x or 13.x) or put nvcc on PATH"
    )


def find_toolchain() -> Toolchain:
    """nvcc, CMake and the host C++ compiler, with the version strings that key a build."""
    nvcc = _find_nvcc()
    cmake = shutil.which("cmake")
    if cmake is None:
        raise ToolchainMissing(
            "cannot build the WeightedMerge plugin: cmake not found on PATH (CMake >= 3.18 is needed)")
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or "c++"
    versions = {
        "nvcc": _run_version([str(nvcc), "--version"]),
        "cmake": _run_version([cmake, "--version"]).splitlines()[0] if cmake else "",
        "cxx": _run_version([cxx, "--version"]).splitlines()[0] if cxx else "",
    }
    return Toolchain(nvcc=nvcc, cmake=Path(cmake), cxx=cxx, versions=versions)


def _headers_version(include_dir: Path) -> tuple[int, str]:
    """(major, "10.14.1") from NvInferVersion.h; major 0 when unreadable."""
    text = ""
    with contextlib.suppress(OSError):
        text = (include_dir / "NvInferVersion.h").read_text(errors="replace")
    defines = dict(re.findall(r"#define\s+(\w+)\s+(\w+)", text))

    def value(name: str) -> str:
        v = defines.get(name, "")
        return defines.get(v, v)  # NV_TENSORRT_MAJOR may name another macro (TRT_MAJOR_ENTERPRISE)

    parts = [value(f"NV_TENSORRT_{p}") for p in ("MAJOR", "MINOR", "PATCH")]
    try:
        return int(parts[0]), ".".join(parts)
    except ValueError:
        return 0, "unknown"


def _header_candidates() -> list[tuple[Path, str]]:
    out: list[tuple[Path, str]] = []
    if os.environ.get(HEADERS_ENV):
        out.append((Path(os.environ[HEADERS_ENV]), "env"))
    for env in ("TENSORRT_ROOT", "TRT_ROOT", "TENSORRT_HOME"):
        if os.environ.get(env):
            out.append((Path(os.environ[env]) / "include", "tensorrt"))
    for d in ("/usr/include/x86_64-linux-gnu", "/usr/include/aarch64-linux-gnu", "/usr/include",
              "/usr/local/tensorrt/include", "/opt/tensorrt/include", "/usr/local/include"):
        out.append((Path(d), "tensorrt"))
    spec = importlib.util.find_spec("kernel_lens")  # locates the package without importing it
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            out.append((Path(loc) / "include" / "tensorrt", "kernel-lens"))
    return out


def find_tensorrt_headers() -> tuple[Path, str, str]:
    """(include dir, source, version) of the first TensorRT 10+ headers found (see the module docstring)."""
    seen = []
    for path, source in _header_candidates():
        if not (path / "NvInferRuntime.h").is_file():
            continue
        major, version = _headers_version(path)
        if major >= 10:
            return path.resolve(), source, version
        seen.append(f"{path} (TensorRT {version})")
    if os.environ.get(HEADERS_ENV) and not (Path(os.environ[HEADERS_ENV]) / "NvInferRuntime.h").is_file():
        raise ToolchainMissing(f"${HEADERS_ENV}={os.environ[HEADERS_ENV]} has no NvInferRuntime.h")
    older = f"; found only older headers: {', '.join(seen)}" if seen else ""
    raise ToolchainMissing(
        f"cannot build the WeightedMerge plugin: no TensorRT 10+ headers (NvInferRuntime.h){older}; "
        f"`{KERNEL_LENS_HINT}` provides them, or set ${HEADERS_ENV}"
    )


def default_build_root() -> Path:
    if os.environ.get(BUILD_DIR_ENV):
        return Path(os.environ[BUILD_DIR_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "fastadasp" / "plugins"


def source_files(source_dir: Path = SOURCE_DIR) -> list[Path]:
    """The files whose bytes decide the build (the key hashes these)."""
    files = [source_dir / "CMakeLists.txt"]
    for pattern in ("*.h", "*.cuh", "*.cpp", "*.cu"):
        files.extend(sorted((source_dir / "weighted_merge").glob(pattern)))
    return [f for f in files if f.is_file()]



def _build_key(source_dir: Path, toolchain: Toolchain, headers: Path, archs: tuple[str, ...], build_type: str) -> str:
    h = hashlib.sha256()

    def add(label: str, data: bytes) -> None:
        h.update(label.encode() + b"\0" + len(data).to_bytes(8, "little") + data)

    for f in source_files(source_dir):
        add("src:" + f.relative_to(source_dir).as_posix(), f.read_bytes())
    for name, version in sorted(toolchain.versions.items()):
        add("tool:" + name, version.encode())
    add("headers-dir", str(headers).encode())
    for f in sorted(headers.glob("NvInfer*.h")):
        add("header:" + f.name, f.read_bytes())
    add("archs", ";".join(archs).encode())
    add("build-type", build_type.encode())
    add("format", str(_BUILD_FORMAT).encode())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------ building


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _prune(root: Path, keep: Path) -> None:
    """Remove all but the KEEP_BUILDS most recent keyed builds (never one another process holds locked)."""
    builds = sorted((d for d in root.iterdir() if d.is_dir() and d != keep and re.fullmatch(r"[0-9a-f]{24}", d.name)),
                    key=lambda d: d.stat().st_mtime, reverse=True)
    for old in builds[KEEP_BUILDS - 1:]:
        lock = root / f".{old.name}.lock"
        try:
            with open(lock, "a+") as fh:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(old, ignore_errors=True)
            lock.unlink(missing_ok=True)
        except OSError:
            continue  # in use (or already gone): leave it


def _reuse(build_dir: Path, key: str) -> dict | None:
    record_path = build_dir / _BUILD_RECORD
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return None
    if record.get("key") != key or record.get("format") != _BUILD_FORMAT:
        return None
    library = build_dir / "build" / LIBRARY_NAME
    if not library.is_file() or sha256_file(library) != record.get("sha256"):
        return None  # edited or truncated since: rebuild
    for name in (CPU_LIBRARY_NAME, HARNESS_NAME):
        if not (build_dir / "build" / name).is_file():
            return None
    return record


def _run_logged(cmd: list[str], log: Path, what: str, cwd: Path) -> None:
    with open(log, "a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        try:
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd, check=False)
        except OSError as exc:
            raise PluginBuildError(f"{what} could not start: {exc}") from exc
    if proc.returncode != 0:
        tail = _log_tail(log)
        raise PluginBuildError(f"{what} failed (exit {proc.returncode}; full log {log}): {tail}")


def _log_tail(log: Path, lines: int = 12) -> str:
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    # the compiler's own error lines are the useful part; fall back to the last lines
    errors = [line for line in text if re.search(r"\berror\b", line, re.IGNORECASE) and "Error 1" not in line]
    picked = errors[-4:] if errors else text[-lines:]
    return _one_line(" | ".join(s.strip() for s in picked if s.strip()))


def build_plugin(
    build_root: str | os.PathLike | None = None,
    *,
    architectures: tuple[str, ...] | list[str] | None = None,
    source_dir: str | os.PathLike | None = None,
    build_type: str = "Release",
    jobs: int | None = None,
    force: bool = False,
    progress=None,
) -> PluginBuild:
    """Build (or reuse) the WeightedMerge plugin library and return where it is and its SHA-256.

    ``architectures`` uses CMake's spelling ("86-real", "90-virtual"...); default :data:`DEFAULT_ARCHITECTURES`.
    ``progress`` (a callable taking one line) hears about the steps; nothing is printed otherwise.
    Raises :class:`ToolchainMissing` when nvcc / CMake / headers are absent, :class:`PluginBuildError` when
    configuring or compiling fails (the message carries the compiler's error lines and the log path).
    """
    say = progress or (lambda _msg: None)
    src = Path(source_dir).resolve() if source_dir is not None else SOURCE_DIR
    if not (src / "CMakeLists.txt").is_file():
        raise PluginBuildError(f"no plugin sources at {src} (CMakeLists.txt missing)")
    archs = tuple(architectures) if architectures else DEFAULT_ARCHITECTURES
    toolchain = find_toolchain()
    headers, headers_source, headers_version = find_tensorrt_headers()
    key = _build_key(src, toolchain, headers, archs, build_type)
    root = Path(build_root).expanduser() if build_root is not None else default_build_root()
    build_dir = root / key[:24]
    cmake_dir = build_dir / "build"
    log = build_dir / "build.log"

    def result(record: dict, reused: bool) -> PluginBuild:
        return PluginBuild(
            library=cmake_dir / LIBRARY_NAME, sha256=record["sha256"], reused=reused, build_dir=build_dir,
            cpu_library=cmake_dir / CPU_LIBRARY_NAME, harness=cmake_dir / HARNESS_NAME, key=key,
            architectures=tuple(record["architectures"]), headers=Path(record["headers"]),
            headers_source=record["headers_source"], tensorrt_headers_version=record["tensorrt_headers_version"],
            seconds=float(record["seconds"]), log=log,
        )

    with _locked(root / f".{key[:24]}.lock"):
        if not force:
            record = _reuse(build_dir, key)
            if record is not None:
                say(f"[plugin] up to date: {cmake_dir / LIBRARY_NAME}")
                return result(record, reused=True)
        (build_dir / _BUILD_RECORD).unlink(missing_ok=True)
        build_dir.mkdir(parents=True, exist_ok=True)
        log.write_text(f"# WeightedMerge plugin build {key}\n# headers: {headers} ({headers_source} "
                       f"TensorRT {headers_version})\n")
        start = time.perf_counter()
        say(f"[plugin] configuring with {toolchain.nvcc} and TensorRT {headers_version} headers ({headers_source})")
        _run_logged([
            str(toolchain.cmake), "-S", str(src), "-B", str(cmake_dir),
            f"-DCMAKE_BUILD_TYPE={build_type}",
            f"-DCMAKE_CUDA_COMPILER={toolchain.nvcc}",
            f"-DTENSORRT_INCLUDE_DIR={headers}",
            f"-DWEIGHTED_MERGE_CUDA_ARCHITECTURES={';'.join(archs)}",
        ], log, "configuring the WeightedMerge plugin (cmake)", cwd=build_dir)
        say(f"[plugin] compiling for {', '.join(archs)} (log: {log})")
        _run_logged([str(toolchain.cmake), "--build", str(cmake_dir), "-j", str(jobs or os.cpu_count() or 2)],
                    log, "compiling the WeightedMerge plugin", cwd=build_dir)
        seconds = time.perf_counter() - start
        library = cmake_dir / LIBRARY_NAME
        for produced in (library, cmake_dir / CPU_LIBRARY_NAME, cmake_dir / HARNESS_NAME):
            if not produced.is_file():
                raise PluginBuildError(f"the build finished but {produced} is missing; see {log}")
        record = {
            "format": _BUILD_FORMAT, "key": key, "sha256": sha256_file(library), "architectures": list(archs),
            "headers": str(headers), "headers_source": headers_source, "tensorrt_headers_version": headers_version,
            "seconds": round(seconds, 2), "toolchain": {**toolchain.versions, "nvcc_path": str(toolchain.nvcc)},
            "sources": {f.relative_to(src).as_posix(): sha256_file(f) for f in source_files(src)},
            "python": sys.version.split()[0],
        }
        fd, tmp = tempfile.mkstemp(prefix=".build.", suffix=".json", dir=build_dir)
        with os.fdopen(fd, "w") as fh:
            json.dump(record, fh, indent=2)
        os.replace(tmp, build_dir / _BUILD_RECORD)
        say(f"[plugin] built {library} in {seconds:.1f}s")
        _prune(root, keep=build_dir)
        return result(record, reused=False)


def main(argv: list[str] | None = None) -> int:
    """`python -m fastadasp.plugins [--force] [--json]`: build, print the library path and SHA-256."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m fastadasp.plugins", description=main.__doc__)
    parser.add_argument("--force", action="store_true", help="rebuild even when an up-to-date build exists")
    parser.add_argument("--build-dir", help=f"build root (default ${BUILD_DIR_ENV} or ~/.cache/fastadasp/plugins)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    try:
        build = build_plugin(args.build_dir, force=args.force,
                             progress=(lambda m: print(m, file=sys.stderr)) if not args.json else None)
    except PluginBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(build).items()}, indent=2))
    else:
        print(build.library)
        print(f"sha256 {build.sha256}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
