"""export-engine end to end with real TensorRT-RTX builds on the CPU: the plugin serialised into the prefill
engine, engines reused from the keyed cache on a second run, an invalid target refused before any work."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fastadasp.cli import export_engine_main
from fastadasp.core.files import sha256_file
from fastadasp.core.manifest import Manifest

ARGS = ["--model", "tiny-llama", "--ratio", "0.3", "--start-layer", "1", "--audio-tokens-range", "1:24:48",
        "--max-batch", "2", "--max-text-tokens", "16", "--max-new-tokens", "8", "--compute-capability", "8.6"]


def _tensorrt_rtx():
    from fastadasp.engines.toolkit import TensorRTUnavailable, load_tensorrt

    try:
        _, flavor = load_tensorrt()
    except TensorRTUnavailable as exc:
        pytest.skip(str(exc))
    if flavor != "tensorrt-rtx":
        pytest.skip("building for SM86 on this machine needs TensorRT-RTX")


def test_invalid_compute_capability_is_one_line_before_any_work(tmp_path, capsys):
    _tensorrt_rtx()
    out = tmp_path / "out"
    code = export_engine_main([*ARGS[:-2], "--compute-capability", "9.9", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "9.9" in err and "8.6" in err and "TensorRT" in err
    assert not out.exists()


@pytest.mark.tensorrt
def test_plugin_engines_are_built_once_then_reused(tmp_path, capsys):
    _tensorrt_rtx()
    from fastadasp.plugins import PluginBuildError, build_plugin

    try:
        library = build_plugin().library
    except PluginBuildError as exc:
        pytest.skip(f"the plugin does not build here: {exc}")
    out, cache = tmp_path / "export", tmp_path / "cache"
    argv = [*ARGS, "--plugin", "on", "--engine-cache", str(cache), "--out", str(out)]
    assert export_engine_main(argv) == 0
    first = capsys.readouterr().err
    assert "[engines] prefill: built" in first and "serialised into the engine" in first
    (entry,) = Manifest.load(out).engines.values()
    assert [p.sha256 for p in entry.plugin_libraries] == [sha256_file(library)]
    assert set(entry.graphs) == {"prefill", "decode"}
    # The plugin library is inside the prefill engine (no separate file needed at run time), not in decode.
    head = library.read_bytes()[:4096]
    assert head in (out / entry.graphs["prefill"].file).read_bytes()
    assert head not in (out / entry.graphs["decode"].file).read_bytes()

    assert export_engine_main(argv) == 0
    second = capsys.readouterr().err
    assert "[engines] prefill: reused" in second and "[engines] decode: reused" in second
    assert "built in" not in second
    (again,) = Manifest.load(out).engines.values()
    assert {r: f.sha256 for r, f in again.graphs.items()} == {r: f.sha256 for r, f in entry.graphs.items()}


def test_build_plugin_prints_a_library_tensorrt_can_load(capsys):
    import json

    from fastadasp.cli import main
    from fastadasp.plugins import PluginBuildError, find_toolchain

    try:
        find_toolchain()
    except PluginBuildError as exc:
        pytest.skip(f"the plugin does not build here: {exc}")
    assert main(["build-plugin", "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    library = report["library"]
    assert sha256_file(library) == report["sha256"]
    with open(library, "rb") as fh:
        assert fh.read(4) == b"\x7fELF"
    from fastadasp.plugins.elf import read_elf

    assert {"getCreators", "setLoggerFinder"} <= read_elf(library).exported
    _tensorrt_rtx()
    # In a child: a plugin load that went wrong would abort the process, not fail an assertion.
    code = ("import sys, tensorrt_rtx as trt; from fastadasp.plugins import load_into_registry; "
            "print(load_into_registry(trt, sys.argv[1]).creator)")
    child = subprocess.run([sys.executable, "-c", code, library], capture_output=True, text=True, timeout=120)
    assert child.returncode == 0 and child.stdout.strip(), child.stderr
