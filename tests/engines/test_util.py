"""Temporary names that say which process owns them, and removing those of processes that have exited."""

from __future__ import annotations

import os
import subprocess

from fastadasp.engines.util import one_line, process_alive, remove_stale_temps, temp_dir, temp_file


def _exited_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_one_line():
    assert one_line("a\n  b\tc") == "a b c"
    assert one_line("x" * 50, limit=10) == "xxxxxxx..."


def test_temp_names_carry_the_pid(tmp_path):
    fd, path = temp_file(tmp_path, "prefill.86.engine")
    os.close(fd)
    folder = temp_dir(tmp_path, "a7ab72f61b414130")
    assert path.name.startswith(f".prefill.86.engine.pid{os.getpid()}.") and path.name.endswith(".tmp")
    assert folder.name.startswith(f".a7ab72f61b414130.pid{os.getpid()}.") and folder.name.endswith(".building")


def test_only_leftovers_of_exited_processes_are_removed(tmp_path):
    dead = _exited_pid()
    assert not process_alive(dead) and process_alive(os.getppid())
    stale_dir = tmp_path / f".a7ab72f61b414130.pid{dead}.k2j3h4g5.building"
    (stale_dir / "sub").mkdir(parents=True)
    (stale_dir / "sub" / "partial.engine").write_bytes(b"")
    stale_file = tmp_path / f".prefill.86.engine.pid{dead}.x1y2z3w4.tmp"
    stale_file.write_bytes(b"")
    kept = [
        tmp_path / f".decode.86.engine.pid{os.getpid()}.abcdefgh.tmp",  # ours: another thread may be writing it
        tmp_path / f".decode.86.engine.pid{os.getppid()}.abcdefgh.tmp",  # a running process's
        tmp_path / ".manifest.json.abcdefgh.tmp",  # not a name this package makes
        tmp_path / "prefill.86.engine",
    ]
    for path in kept:
        path.write_bytes(b"x")
    assert sorted(remove_stale_temps(tmp_path)) == sorted([stale_dir, stale_file])
    assert sorted(tmp_path.iterdir()) == sorted(kept)
    assert remove_stale_temps(tmp_path / "missing") == []
