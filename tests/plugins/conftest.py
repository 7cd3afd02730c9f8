"""Fixtures for the plugin tests: one plugin build per session (reused across sessions when up to date) and its
CPU twin. Helpers live in plugin_support.py."""

from __future__ import annotations

import json
import time

import pytest
from plugin_support import REPORT, SUPPORTED, note

from fastadasp.plugins import CpuTwin, PluginBuildError, ToolchainMissing, build_plugin


@pytest.fixture(scope="session")
def plugin_build():
    start = time.perf_counter()
    try:
        build = build_plugin()
    except ToolchainMissing as exc:
        pytest.skip(f"cannot build the plugin here: {exc}")
    except PluginBuildError as exc:
        pytest.fail(f"the plugin does not compile: {exc}")
    wall = time.perf_counter() - start
    state = f"reused (its compile took {build.seconds:.1f}s)" if build.reused else f"compiled in {wall:.1f}s"
    note("build", f"WeightedMerge plugin {state}; archs {', '.join(build.architectures)}; "
                  f"TensorRT {build.tensorrt_headers_version} headers from {build.headers_source}")
    return build


@pytest.fixture(scope="session")
def cpu_twin(plugin_build):
    return CpuTwin(plugin_build.cpu_library)


@pytest.fixture(scope="session")
def supported():
    return json.loads(SUPPORTED.read_text())


def pytest_terminal_summary(terminalreporter):
    if REPORT:
        terminalreporter.section("WeightedMerge plugin")
        for text in REPORT.values():
            terminalreporter.write_line(text)
