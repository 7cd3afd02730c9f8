"""The plugin library as built by plugins/build.py + plugins/CMakeLists.txt: device code for every listed
architecture, the right entry points and nothing that would call into a TensorRT registry; reuse of an
up-to-date build; one-line errors when the toolchain is missing or the code does not compile."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from fastadasp.plugins import (
    DEFAULT_ARCHITECTURES,
    PluginBuildError,
    PluginLoadError,
    ToolchainMissing,
    build_plugin,
    check_library_abi,
)
from fastadasp.plugins import build as build_mod
from fastadasp.plugins.elf import fatbin_entries, read_elf

KERNELS = ("keyStatsKernel", "selectInBlockKernel", "compositeKeysKernel", "segmentOffsetsKernel",
           "markPickedKernel", "groupStartsKernel", "mergeKernel", "identityIndexKernel")
EXPORTS = {"getCreators", "setLoggerFinder", "fastadasp_weighted_merge_last_error",
           "fastadasp_weighted_merge_enqueue", "fastadasp_weighted_merge_workspace_bytes"}


def _cuobjdump() -> str | None:
    found = shutil.which("cuobjdump")
    candidates = [found] if found else []
    candidates += glob.glob("/usr/local/cuda/bin/cuobjdump")
    try:  # the PyPI package nvidia-cuda-cuobjdump, when installed
        import nvidia

        for root in nvidia.__path__:
            candidates += glob.glob(os.path.join(root, "cu*", "bin", "cuobjdump"))
    except ImportError:
        pass
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def test_library_has_sass_for_every_arch_and_ptx(plugin_build):
    entries = fatbin_entries(plugin_build.library)
    sass = {e.arch for e in entries if e.kind == "sass"}
    ptx = {e.arch for e in entries if e.kind == "ptx"}
    assert DEFAULT_ARCHITECTURES == ("80-real", "86-real", "89-real", "90-real", "90-virtual")
    assert sass == {80, 86, 89, 90} and ptx == {90}
    for e in entries:
        if e.kind == "sass":  # uncompressed cubins carry the kernel symbol names
            assert not e.compressed and e.payload[:4] == b"\x7fELF"
            missing = [k for k in KERNELS if k.encode() not in e.payload]
            assert not missing, f"sm_{e.arch} lacks {missing}"


def test_cuobjdump_agrees_when_available(plugin_build):
    tool = _cuobjdump()
    if tool is None:
        pytest.skip("cuobjdump not found (CUDA toolkit bin/ or `pip install nvidia-cuda-cuobjdump`)")
    out = subprocess.run([tool, "--list-elf", "--list-ptx", str(plugin_build.library)], capture_output=True,
                         text=True, check=True).stdout
    # lines like "ELF file    1: libfastadasp_weighted_merge.1.sm_80.cubin" / "PTX file    1: ....sm_90.ptx"
    listed = {tuple(line.rsplit(".", 2)[-2:]) for line in out.splitlines() if ".sm_" in line}
    assert listed == {("sm_80", "cubin"), ("sm_86", "cubin"), ("sm_89", "cubin"), ("sm_90", "cubin"), ("sm_90", "ptx")}


def test_exports_entry_points_and_no_registry_calls(plugin_build):
    elf = read_elf(plugin_build.library)
    assert EXPORTS <= elf.exported
    assert elf.exported - EXPORTS == set(), f"unexpected exports: {sorted(elf.exported - EXPORTS)}"
    # no TensorRT library is linked and no registry / runtime entry point is imported (such a call,
    # compiled with TensorRT 10 headers, crashes TensorRT-RTX during dlopen)
    assert not [n for n in elf.needed if "nvinfer" in n or "tensorrt" in n or "cudart.so" in n], elf.needed
    assert not [s for s in elf.imported if "Registry" in s or "Registrar" in s or "createInfer" in s]
    check_library_abi(plugin_build.library)  # the loader's own gate accepts it


def test_abi_gate_rejects_a_library_that_calls_the_registry(tmp_path):
    """A library built the REGISTER_TENSORRT_PLUGIN way imports getPluginRegistry: the loader must refuse it
    before TensorRT-RTX dlopens it (there it segfaults)."""
    src = tmp_path / "registering.cpp"
    src.write_text(
        'extern "C" void* getPluginRegistry();\n'
        'extern "C" void* getCreators(int& n) { n = 0; return getPluginRegistry(); }\n'
        'extern "C" void setLoggerFinder(void*) {}\n')
    lib = tmp_path / "libregistering.so"
    compiler = shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    subprocess.run([compiler, "-shared", "-fPIC", str(src), "-o", str(lib)], check=True)
    with pytest.raises(PluginLoadError, match="getPluginRegistry"):
        check_library_abi(lib)
    junk = tmp_path / "libjunk.so"
    junk.write_bytes(b"not an ELF file")
    with pytest.raises(PluginLoadError, match="not a loadable plugin library"):
        check_library_abi(junk)


def test_second_build_is_reused(plugin_build):
    again = build_plugin()
    assert again.reused and again.library == plugin_build.library and again.sha256 == plugin_build.sha256
    assert again.library.is_file() and again.cpu_library.is_file() and again.harness.is_file()
    assert Path(build_mod.default_build_root()) in again.build_dir.parents  # outside the source tree


def test_key_follows_sources_and_toolchain(tmp_path, plugin_build):
    src = tmp_path / "plugins"
    shutil.copytree(build_mod.SOURCE_DIR / "weighted_merge", src / "weighted_merge")
    shutil.copy(build_mod.SOURCE_DIR / "CMakeLists.txt", src / "CMakeLists.txt")
    toolchain = build_mod.find_toolchain()
    headers, _, _ = build_mod.find_tensorrt_headers()
    base = build_mod._build_key(src, toolchain, headers, DEFAULT_ARCHITECTURES, "Release")
    assert base == plugin_build.key  # a byte-identical copy builds the same thing
    math_h = src / "weighted_merge" / "weightedMergeMath.h"
    math_h.write_text(math_h.read_text() + "\n// edited\n")
    assert build_mod._build_key(src, toolchain, headers, DEFAULT_ARCHITECTURES, "Release") != base
    other = build_mod.Toolchain(toolchain.nvcc, toolchain.cmake, toolchain.cxx, {**toolchain.versions, "nvcc": "x"})
    assert build_mod._build_key(src, other, headers, DEFAULT_ARCHITECTURES, "Release") != \
        build_mod._build_key(src, toolchain, headers, DEFAULT_ARCHITECTURES, "Release")
    assert build_mod._build_key(src, toolchain, headers, ("86-real",), "Release") != \
        build_mod._build_key(src, toolchain, headers, DEFAULT_ARCHITECTURES, "Release")


def test_missing_nvcc_is_one_line(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    for var in ("CUDACXX", "CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(build_mod, "NVCC_FALLBACKS", ())
    with pytest.raises(ToolchainMissing) as info:
        build_plugin()
    assert "nvcc not found" in str(info.value) and "\n" not in str(info.value)


def test_missing_headers_name_the_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(build_mod, "_header_candidates", lambda: [])
    with pytest.raises(ToolchainMissing, match="kernel-lens==2.0.1") as info:
        build_mod.find_tensorrt_headers()
    assert "\n" not in str(info.value)
    monkeypatch.setenv(build_mod.HEADERS_ENV, str(tmp_path))
    monkeypatch.setattr(build_mod, "_header_candidates", lambda: [(tmp_path, "env")])
    with pytest.raises(ToolchainMissing, match="has no NvInferRuntime.h"):
        build_mod.find_tensorrt_headers()


def test_compile_error_reports_the_compiler_line(tmp_path, plugin_build):
    src = tmp_path / "plugins"
    shutil.copytree(build_mod.SOURCE_DIR / "weighted_merge", src / "weighted_merge")
    shutil.copy(build_mod.SOURCE_DIR / "CMakeLists.txt", src / "CMakeLists.txt")
    math_h = src / "weighted_merge" / "weightedMergeMath.h"
    math_h.write_text("#error injected_failure_marker\n" + math_h.read_text())
    with pytest.raises(PluginBuildError) as info:
        build_plugin(tmp_path / "build", source_dir=src, architectures=("86-real",))
    msg = str(info.value)
    assert not isinstance(info.value, ToolchainMissing)
    assert "injected_failure_marker" in msg and "weightedMergeMath.h" in msg and "\n" not in msg
    assert "build.log" in msg
