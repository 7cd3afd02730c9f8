"""Fixtures for the C++ runtime tests: one CMake build of runtime/cpp per session and one export of every tiny
preset, made concurrently (the exports run in background processes while the compiler works)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from cpp_support import BUILD_DIR_ENV, PRESET_EXPORTS, SOURCE, CppBuild

REPORT: dict[str, str] = {}


def _export(name: str, out: Path) -> Path:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two exports and the compiler share the cores
    cmd = [sys.executable, "-c", "import sys; from fastadasp.cli import export_engine_main; "
           "sys.exit(export_engine_main(sys.argv[1:]))",
           "--model", name, *PRESET_EXPORTS[name], "--skip-engines", "--quiet", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"export-engine --model {name} failed: {proc.stderr.strip()[-2000:]}")
    return out


class ExportJobs:
    """The preset exports, two at a time in background processes."""

    def __init__(self, root: Path):
        self.pool = ThreadPoolExecutor(max_workers=2)
        self.futures: dict[str, Future] = {name: self.pool.submit(_export, name, root / name) for name in PRESET_EXPORTS}

    def cancel(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


@pytest.fixture(scope="session")
def _export_jobs(tmp_path_factory):
    """Starts the preset exports at once; `preset_exports` waits for them."""
    jobs = ExportJobs(tmp_path_factory.mktemp("cpp-exports"))
    yield jobs
    jobs.pool.shutdown(wait=True)


@pytest.fixture(scope="session")
def preset_exports(_export_jobs) -> dict[str, Path]:
    start = time.perf_counter()
    out = {name: job.result() for name, job in _export_jobs.futures.items()}
    REPORT["exports"] = f"waited {time.perf_counter() - start:.1f}s for the 4 preset exports after the build"
    return out


def _tensorrt_headers() -> tuple[str | None, str]:
    """The TensorRT headers the plugin build uses (installed TensorRT first, else kernel-lens)."""
    try:
        from fastadasp.plugins import find_tensorrt_headers

        path, source, version = find_tensorrt_headers()
        return str(path), f"TensorRT {version} headers from {source}"
    except Exception as exc:  # ToolchainMissing, or the plugins package failing to import
        return None, f"no TensorRT headers ({exc})"


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


@pytest.fixture(scope="session")
def cpp_build(tmp_path_factory, _export_jobs) -> CppBuild:
    cmake, ctest = shutil.which("cmake"), shutil.which("ctest")
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not (cmake and ctest and compiler):
        _export_jobs.cancel()
        pytest.skip("the C++ runtime needs CMake (>= 3.18) and a C++17 compiler; neither cmake/ctest nor c++ is on PATH")
    build = Path(os.environ.get(BUILD_DIR_ENV) or tmp_path_factory.mktemp("runtime-cpp-build"))
    headers, headers_note = _tensorrt_headers()
    configure = [cmake, "-S", str(SOURCE), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                 # One architecture is enough to compile-check the beam-reorder kernel; release builds keep the list.
                 "-DFASTADASP_CUDA_ARCHITECTURES=90-real"]
    if shutil.which("ninja"):
        configure += ["-G", "Ninja"] if not (build / "CMakeCache.txt").exists() else []
    if headers:
        configure.append(f"-DFASTADASP_TENSORRT_INCLUDE_DIR={headers}")
    timings = {}
    start = time.perf_counter()
    proc = subprocess.run(configure, capture_output=True, text=True, timeout=600)
    timings["configure"] = time.perf_counter() - start
    if proc.returncode != 0:
        output = proc.stdout + proc.stderr
        if "nlohmann_json" in output:
            _export_jobs.cancel()
            pytest.skip("nlohmann_json is not installed (Debian/Ubuntu: apt-get install nlohmann-json3-dev)")
        pytest.fail(f"configuring runtime/cpp failed:\n{_tail(output)}")
    start = time.perf_counter()
    proc = subprocess.run([cmake, "--build", str(build), "-j2"], capture_output=True, text=True, timeout=900)
    timings["build"] = time.perf_counter() - start
    if proc.returncode != 0:
        pytest.fail(f"building runtime/cpp failed:\n{_tail(proc.stdout + proc.stderr, 60)}")
    cache = (build / "CMakeCache.txt").read_text()
    mode = re.search(r"^FASTADASP_TENSORRT_EXECUTOR:INTERNAL=(.*)$", cache, re.M).group(1)
    result = CppBuild(build, build / "fastadasp-run", (build / "fastadasp_runtime_tests").exists(), mode,
                      headers_note, timings)
    REPORT["build"] = (f"runtime/cpp: configure {timings['configure']:.1f}s, build {timings['build']:.1f}s (-j2) in "
                       f"{build}; TensorRT executor: {mode} ({headers_note})")
    return result


def pytest_terminal_summary(terminalreporter):
    if REPORT:
        terminalreporter.section("C++ runtime")
        for text in REPORT.values():
            terminalreporter.write_line(text)
