"""fastadasp.plugins.loader without TensorRT: the unversioned-runtime link decided on fake library
folders, and load_into_registry / configure_builder_for_plugin against a fake toolkit module. The same code runs
against the real TensorRT-RTX in tests/plugins/test_tensorrt.py."""

from __future__ import annotations

import os
import types
from pathlib import Path

import pytest

from fastadasp.plugins import loader
from fastadasp.plugins.loader import (
    PluginLoadError,
    configure_builder_for_plugin,
    ensure_unversioned_runtime,
    load_into_registry,
)

RTX = types.SimpleNamespace(__name__="tensorrt_rtx")


def fake_libs(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    runtime, parser = folder / "libtensorrt_rtx.so.1", folder / "libtensorrt_onnxparser_rtx.so.1"
    runtime.write_bytes(b"runtime")
    parser.write_bytes(b"parser")
    return runtime, parser


def test_link_is_created_beside_the_parser(tmp_path):
    runtime, parser = fake_libs(tmp_path / "libs")
    status = ensure_unversioned_runtime(RTX, loaded=lambda: ["/usr/lib/libc.so.6", str(runtime), str(parser)])
    link = tmp_path / "libs" / "libtensorrt_rtx.so"
    assert status.how == "created" and status.link == link and status.needed
    assert link.is_symlink() and os.readlink(link) == "libtensorrt_rtx.so.1"  # relative: survives moving the venv
    assert os.path.samefile(link, runtime)
    again = ensure_unversioned_runtime(RTX, loaded=lambda: [str(runtime), str(parser)])
    assert again.how == "present"
    assert sorted(p.name for p in (tmp_path / "libs").iterdir()) == [
        "libtensorrt_onnxparser_rtx.so.1", "libtensorrt_rtx.so", "libtensorrt_rtx.so.1"]  # no temp files left


def test_link_to_a_different_library_is_refused(tmp_path):
    runtime, parser = fake_libs(tmp_path / "libs")
    other = tmp_path / "other.so"
    other.write_bytes(b"another toolkit")
    (tmp_path / "libs" / "libtensorrt_rtx.so").symlink_to(other)
    with pytest.raises(PluginLoadError, match="not .*libtensorrt_rtx.so.1"):
        ensure_unversioned_runtime(RTX, loaded=lambda: [str(runtime), str(parser)])


def test_dangling_link_is_replaced(tmp_path):
    runtime, parser = fake_libs(tmp_path / "libs")
    (tmp_path / "libs" / "libtensorrt_rtx.so").symlink_to(tmp_path / "gone.so.1")
    assert ensure_unversioned_runtime(RTX, loaded=lambda: [str(runtime), str(parser)]).how == "created"


def test_read_only_folder_falls_back_to_startup_library_path(tmp_path, monkeypatch):
    runtime, parser = fake_libs(tmp_path / "libs")

    def refuse(*_a, **_k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(loader.os, "symlink", refuse)
    preset = tmp_path / "preset"
    preset.mkdir()
    os.link(runtime, preset / "libtensorrt_rtx.so")  # what a user's LD_LIBRARY_PATH folder could hold
    status = ensure_unversioned_runtime(RTX, loaded=lambda: [str(runtime), str(parser)],
                                        startup_library_path=lambda: [str(tmp_path / "empty"), str(preset)])
    assert status.how == "ld_library_path" and status.link == preset / "libtensorrt_rtx.so"


def test_read_only_folder_without_fallback_names_the_fix(tmp_path, monkeypatch):
    runtime, parser = fake_libs(tmp_path / "libs")
    real_symlink = os.symlink

    def refuse_in_libs(src, dst, *a, **k):
        if Path(dst).parent == tmp_path / "libs":
            raise PermissionError(13, "Permission denied")
        return real_symlink(src, dst, *a, **k)

    monkeypatch.setattr(loader.os, "symlink", refuse_in_libs)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(PluginLoadError) as info:
        ensure_unversioned_runtime(RTX, loaded=lambda: [str(runtime), str(parser)], startup_library_path=lambda: [])
    msg = str(info.value)
    helper = tmp_path / "cache" / "fastadasp" / "tensorrt-rtx-lib"
    assert "Permission denied" in msg and "aborts the process" in msg and "\n" not in msg
    assert f"LD_LIBRARY_PATH={helper}" in msg and os.path.samefile(helper / "libtensorrt_rtx.so", runtime)


def test_toolkits_without_the_trap_need_nothing(tmp_path):
    status = ensure_unversioned_runtime(types.SimpleNamespace(__name__="tensorrt"), loaded=lambda: [])
    assert status.how == "not-needed" and not status.needed
    with pytest.raises(PluginLoadError, match="no libtensorrt_rtx.so.N is loaded"):
        ensure_unversioned_runtime(RTX, loaded=lambda: ["/usr/lib/libc.so.6"])


def test_loaded_library_paths_lists_this_process():
    paths = loader.loaded_library_paths()
    assert any(os.path.basename(p).startswith("libc.so") for p in paths)


class FakeRegistry:
    def __init__(self, handle=object(), creator=object()):
        self.handle, self.creator, self.loaded, self.asked = handle, creator, [], []

    def load_library(self, path):
        self.loaded.append(path)
        return self.handle

    def get_creator(self, name, version, namespace):
        self.asked.append((name, version, namespace))
        return self.creator


def fake_toolkit(registry):
    return types.SimpleNamespace(__name__="tensorrt", __version__="10.99", get_plugin_registry=lambda: registry)


def test_load_into_registry_checks_loads_once_and_finds_the_creator(plugin_build, monkeypatch):
    monkeypatch.setattr(loader, "_loaded", {})
    registry = FakeRegistry()
    first = load_into_registry(fake_toolkit(registry), plugin_build.library)
    second = load_into_registry(fake_toolkit(registry), plugin_build.library)
    assert first is second and registry.loaded == [str(plugin_build.library.resolve())]
    assert registry.asked == [("WeightedMerge", "1", "fastadasp")]  # what the exporter writes on every node
    assert first.sha256 == plugin_build.sha256 and first.link.how == "not-needed"


def test_load_into_registry_failures_are_one_line(plugin_build, tmp_path, monkeypatch):
    monkeypatch.setattr(loader, "_loaded", {})
    with pytest.raises(PluginLoadError, match="plugin library not found"):
        load_into_registry(fake_toolkit(FakeRegistry()), tmp_path / "missing.so")
    with pytest.raises(PluginLoadError, match="refused"):
        load_into_registry(fake_toolkit(FakeRegistry(handle=None)), plugin_build.library)
    with pytest.raises(PluginLoadError, match="no WeightedMerge creator"):
        load_into_registry(fake_toolkit(FakeRegistry(creator=None)), plugin_build.library)


def test_configure_builder_embeds_the_library(plugin_build):
    class Flags:
        __members__ = {"VERSION_COMPATIBLE": "vc", "EXCLUDE_LEAN_RUNTIME": "lean"}

    class Config:
        plugins_to_serialize: list = []

        def __init__(self):
            self.flags = []

        def set_flag(self, flag):
            self.flags.append(flag)

    toolkit = types.SimpleNamespace(BuilderFlag=Flags)
    config = Config()
    applied = configure_builder_for_plugin(toolkit, config, plugin_build.library)
    assert config.flags == ["vc", "lean"] and config.plugins_to_serialize == [str(plugin_build.library.resolve())]
    assert applied["flags"] == ["VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME"]
    assert configure_builder_for_plugin(toolkit, Config(), plugin_build.library, serialize=False) == {
        "plugins_to_serialize": [], "flags": []}
    no_flags = types.SimpleNamespace(BuilderFlag=types.SimpleNamespace(__members__={}))
    assert "unsupported" in configure_builder_for_plugin(no_flags, Config(), plugin_build.library)
