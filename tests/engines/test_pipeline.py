"""export-engine's TensorRT stage: engines for every graph through the keyed cache, placed into the export and
recorded in its manifest; a second run reuses them. The real TensorRT-RTX build of the tiny WavLLM export
(~25 s on 2 CPU cores) runs once for this module; the rest use a fake builder."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
import shutil
from pathlib import Path

import pytest

from fastadasp.cli import export_engine_main
from fastadasp.core import interrupts
from fastadasp.core.errors import InvalidOption
from fastadasp.core.manifest import Manifest
from fastadasp.engines.cache import EngineCache
from fastadasp.engines.pipeline import EngineBuildConfig, build_engines_for_export
from fastadasp.engines.toolkit import ToolkitInfo
from fake_tensorrt_builder import FakeBuilder

RTX_TOOLKIT = ToolkitInfo("tensorrt-rtx", "0.0.fake", "aot")
CONFIG = EngineBuildConfig(max_batch=2, max_text_tokens=16, max_new_tokens=8, compute_capability="8.6")


def _engine_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("[engines]")]


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ----------------------------------------------------------------------------------------- real TensorRT-RTX


@pytest.fixture(scope="module")
def rtx_export(tmp_path_factory, rtx_flavor):
    """(export dir, engine cache, stderr) of one export-engine run that built every engine for SM86."""
    root = tmp_path_factory.mktemp("rtx-export")
    out, cache = root / "exp", root / "cache"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = export_engine_main([
            "--model", "tiny-wavllm", "--schedule", "decay", "--start-layer", "1", "--ratio", "0.5",
            "--audio-tokens-range", "1:25:128", "--compute-capability", "8.6", "--max-batch", "2",
            "--max-text-tokens", "32", "--max-new-tokens", "16", "--out", str(out), "--engine-cache", str(cache),
            "--plugin", "off",  # the standard-op body: no plugin build in this test
        ])
    assert code == 0, err.getvalue()
    return out, cache, err.getvalue()


@pytest.mark.tensorrt
def test_export_engine_builds_engines_for_every_graph(rtx_export):
    out, cache, err = rtx_export
    manifest = Manifest.load(out)
    (entry,) = manifest.engines.values()
    assert entry.compute_capability == "8.6"
    assert set(entry.graphs) == {"prefill", "decode", "audio_encoder", "prompt_scale"}  # WavLLM: its scale graph too
    for graph in entry.graphs.values():
        assert (out / graph.file).stat().st_size == graph.bytes > 1000
        assert graph.build_seconds is not None and graph.build_seconds > 0
        assert os.path.samefile(out / graph.file, cache / f"{graph.cache_key}.engine")  # linked, not copied
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left behind
    assert _hidden(cache) == [".locks"]
    for role in ("prefill", "decode", "audio_encoder"):
        assert any(line.startswith(f"[engines] {role}: built in ") for line in _engine_lines(err)), err
    # The long prefill build shows its phases as it goes.
    assert "[engine] prefill: Building engine (" in err and "[engine] prefill: wrote " in err


@pytest.mark.tensorrt
def test_second_run_with_nothing_changed_reuses_every_engine(rtx_export, capsys):
    out, cache, _ = rtx_export
    first = Manifest.load(out)
    config = dataclasses.replace(CONFIG, max_text_tokens=32, max_new_tokens=16, cache_dir=cache)
    second = build_engines_for_export(out, first, config)
    lines = _engine_lines(capsys.readouterr().err)
    assert [line.split(" (key")[0] for line in lines[:4]] == [
        f"[engines] {role}: reused from the engine cache"
        for role in ("prefill", "decode", "audio_encoder", "prompt_scale")]
    (before,), (after,) = first.engines.values(), second.engines.values()
    for role, engine in after.graphs.items():
        assert engine.cache_key == before.graphs[role].cache_key and engine.sha256 == before.graphs[role].sha256
        assert engine.build_seconds is None
    assert len(list(cache.glob("*.engine"))) == 4
    assert Manifest.load(out) == second and not _hidden(out)


# ----------------------------------------------------------------------------------------- fake builder


@pytest.fixture
def export_copy(tiny_llama_export, tmp_path) -> Path:
    out = tmp_path / "exp"
    shutil.copytree(tiny_llama_export, out)
    return out


def test_second_run_reuses_every_engine_with_a_fake_builder(export_copy, tmp_path, capsys):
    fake = FakeBuilder()
    cache = EngineCache(tmp_path / "cache", toolkit=RTX_TOOLKIT, builder=fake)
    first = build_engines_for_export(export_copy, Manifest.load(export_copy), CONFIG, cache=cache)
    second = build_engines_for_export(export_copy, first, CONFIG, cache=cache)
    lines = _engine_lines(capsys.readouterr().err)
    assert len(fake.calls) == 2 and [c["label"] for c in fake.calls] == ["prefill", "decode"]
    assert [re.sub(r" in \d+\.\ds| \(key \w{12}\)", "", line) for line in lines] == [
        "[engines] prefill: built", "[engines] decode: built",
        "[engines] prefill.86.engine, decode.86.engine for tensorrt-rtx-0.0.fake/8.6 recorded in manifest.json",
        "[engines] prefill: reused from the engine cache", "[engines] decode: reused from the engine cache",
        "[engines] prefill.86.engine, decode.86.engine for tensorrt-rtx-0.0.fake/8.6 recorded in manifest.json",
    ]
    entry = second.engines["tensorrt-rtx-0.0.fake/8.6"]
    assert [e.build_seconds for e in entry.graphs.values()] == [None, None]
    assert (export_copy / "prefill.86.engine").read_bytes() == b"ENGINE:fp32"
    assert Manifest.load(export_copy) == second  # saved, and every engine hashes to what it records
    assert not _hidden(export_copy)


def test_engines_from_an_earlier_target_are_not_left_unlisted(export_copy, tmp_path):
    cache = EngineCache(tmp_path / "cache", toolkit=RTX_TOOLKIT, builder=FakeBuilder())
    fresh = Manifest.load(export_copy)
    build_engines_for_export(export_copy, fresh, CONFIG, cache=cache)
    # A new export into the directory starts from a manifest without engines.
    build_engines_for_export(export_copy, fresh, dataclasses.replace(CONFIG, compute_capability="8.9"), cache=cache)
    assert sorted(p.name for p in export_copy.glob("*.engine")) == ["decode.89.engine", "prefill.89.engine"]
    assert list(Manifest.load(export_copy).engines) == ["tensorrt-rtx-0.0.fake/8.9"]


def test_interrupt_before_every_engine_is_built_leaves_the_export_as_it_was(export_copy, tmp_path):
    before = {p.name: p.read_bytes() for p in export_copy.iterdir()}

    def interrupted_on_decode(onnx_path, engine_path, profile, **kw):
        if kw["label"] == "decode":
            raise interrupts.Interrupted(2)
        Path(engine_path).write_bytes(b"ENGINE")

    cache = EngineCache(tmp_path / "cache", toolkit=RTX_TOOLKIT, builder=interrupted_on_decode)
    with pytest.raises(interrupts.Interrupted):
        build_engines_for_export(export_copy, Manifest.load(export_copy), CONFIG, cache=cache)
    assert {p.name: p.read_bytes() for p in export_copy.iterdir()} == before
    assert sorted(p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")) == [".locks"]


def test_without_a_toolkit_one_line_says_why(export_copy, monkeypatch, capsys):
    from fastadasp.engines import toolkit

    def nothing_installed(name):
        raise ImportError(f"simulated: {name} is not installed")

    monkeypatch.setattr(toolkit, "_import_module", nothing_installed)
    monkeypatch.delenv(toolkit.FLAVOR_ENV, raising=False)
    manifest = Manifest.load(export_copy)
    assert build_engines_for_export(export_copy, manifest, CONFIG) is manifest
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("[engines] not built: cannot load an engine builder")
    assert not list(export_copy.glob("*.engine"))


def test_compute_capability_9_9_is_one_line_before_anything_is_exported(fake_trt, tmp_path, capsys):
    with pytest.raises(InvalidOption) as info:
        dataclasses.replace(CONFIG, compute_capability="9.9").validate()
    msg = str(info.value)
    assert msg.startswith("--compute-capability 9.9 is not a TensorRT-RTX 0.0.fake target; choose one of 7.5 (")
    assert "12.0 (RTX 50, RTX PRO Blackwell) or 'current'" in msg
    assert "H100/H200 (9.0) need TensorRT, not TensorRT-RTX" in msg

    out = tmp_path / "exp"
    code = export_engine_main(["--model", "tiny-llama", "--ratio", "0.3", "--compute-capability", "9.9",
                               "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err == f"export-engine: error: {msg}\n"
    assert not out.exists()


def test_bad_profile_bounds_name_the_option():
    with pytest.raises(InvalidOption, match="^--max-batch must be >= 1, got 0$"):
        EngineBuildConfig(max_batch=0).validate()
