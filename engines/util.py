"""Small helpers the engine modules share: one-line messages, temporary names that say which process owns
them, and a TensorRT stream writer that writes an engine straight to a file."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

log = logging.getLogger("fastadasp.engines")

# `.<name>.pid<pid>.<random>.tmp` (a file) or `.building` (a folder). The pid lets a later run tell the
# leftovers of a killed process (SIGKILL runs no cleanup) from the work of a process that is still running.
_OWNED_TEMP = re.compile(r"^\..+\.pid(\d+)\.[A-Za-z0-9_]+\.(tmp|building)$")


def one_line(text: Any, limit: int = 300) -> str:
    """`text` with every run of whitespace (newlines included) collapsed to one space, cut to `limit` chars."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def temp_file(directory: Path, name: str) -> tuple[int, Path]:
    """(fd, path) of a new hidden file beside where `name` will go, tagged with this process's pid."""
    fd, path = tempfile.mkstemp(prefix=f".{name}.pid{os.getpid()}.", suffix=".tmp", dir=directory)
    return fd, Path(path)


def temp_dir(directory: Path, name: str) -> Path:
    """A new hidden folder in `directory` for work on `name`, tagged with this process's pid."""
    return Path(tempfile.mkdtemp(prefix=f".{name}.pid{os.getpid()}.", suffix=".building", dir=directory))


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    except (OverflowError, ValueError):  # not a pid this system could have
        return False
    return True


def remove_stale_temps(directory: Path) -> list[Path]:
    """Remove the temporary files and folders in `directory` whose owning process has exited.

    Ours are kept even when this process did not make them: another thread may be writing them.
    """
    removed = []
    try:
        entries = list(directory.iterdir())
    except FileNotFoundError:
        return removed
    for entry in entries:
        match = _OWNED_TEMP.match(entry.name)
        if match is None:
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or process_alive(pid):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        log.info("removed %s, left by process %d which no longer runs", entry, pid)
        removed.append(entry)
    return removed


def make_stream_writer(trt, fh: BinaryIO):
    """An IStreamWriter that appends the serialized engine to `fh`, so a large engine is never held twice in
    memory. A write error is kept in `.error` (an exception must not cross into TensorRT's C++)."""

    class FileStreamWriter(trt.IStreamWriter):
        def __init__(self):
            trt.IStreamWriter.__init__(self)
            self.written = 0
            self.error: BaseException | None = None

        def write(self, data):
            try:
                n = fh.write(data)
            except BaseException as exc:
                self.error = exc
                return 0
            self.written += n
            return n

    return FileStreamWriter()
