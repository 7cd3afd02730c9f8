"""Atomic writes and whole-directory replacement, including what a killed writer leaves behind."""

import os
import subprocess
import sys

import pytest

from fastadasp.core.files import atomic_write_text, remove_stale_siblings, replaced_directory, sha256_file


def test_atomic_write_and_hash(tmp_path):
    path = tmp_path / "a.txt"
    atomic_write_text(path, "hello")
    assert path.read_text() == "hello" and oct(path.stat().st_mode & 0o777) == "0o644"
    assert sha256_file(path) == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_replaced_directory_swaps_whole_directories(tmp_path):
    out = tmp_path / "export"
    with replaced_directory(out) as staging:
        (staging / "old-model.onnx").write_text("1")
    with replaced_directory(out) as staging:
        (staging / "new-model.onnx").write_text("2")
    assert sorted(os.listdir(out)) == ["new-model.onnx"]  # nothing of the first export survives
    assert sorted(os.listdir(tmp_path)) == ["export"]


def test_missing_parent_directories_are_created(tmp_path):
    out = tmp_path / "artifacts" / "nested" / "export"
    with replaced_directory(out) as staging:
        (staging / "f").write_text("x")
    assert (out / "f").read_text() == "x" and sorted(os.listdir(out.parent)) == ["export"]


def test_failure_keeps_the_previous_directory(tmp_path):
    out = tmp_path / "export"
    with replaced_directory(out) as staging:
        (staging / "f").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with replaced_directory(out) as staging:
            (staging / "f").write_text("half")
            raise KeyboardInterrupt
    assert (out / "f").read_text() == "old" and sorted(os.listdir(tmp_path)) == ["export"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_siblings_of_a_killed_writer_are_cleaned_and_an_orphaned_old_copy_restored(tmp_path):
    out = tmp_path / "export"
    pid = _dead_pid()
    (tmp_path / f".export.staging-{pid}-abc").mkdir()
    old = tmp_path / f".export.old-{pid}-def"
    (old / "previous").mkdir(parents=True)
    (old / "previous" / "manifest.json").write_text("{}")
    alive = tmp_path / f".export.staging-{os.getppid()}-xyz"  # a live writer's staging is left alone
    alive.mkdir()
    removed = remove_stale_siblings(out)
    assert len(removed) == 2
    assert (out / "manifest.json").read_text() == "{}"
    assert sorted(os.listdir(tmp_path)) == sorted(["export", alive.name])
