"""File helpers with one home: content hashes and atomic writes (a reader sees the old file or the new one,
never a partial one, even when the writer is killed)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
from pathlib import Path

_hash_memo: dict[tuple, str] = {}
_hash_memo_lock = threading.Lock()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """SHA-256 hex digest of a file, memoized per (real path, inode, size, mtime) within this process."""
    real = os.path.realpath(os.fspath(path))
    st = os.stat(real)
    memo_key = (real, st.st_ino, st.st_size, st.st_mtime_ns)
    with _hash_memo_lock:
        if memo_key in _hash_memo:
            return _hash_memo[memo_key]
    digest = hashlib.sha256()
    with open(real, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    value = digest.hexdigest()
    with _hash_memo_lock:
        _hash_memo[memo_key] = value
    return value


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int = 0o644) -> None:
    """Write to a hidden temporary file beside `path`, fsync, then rename over `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)  # mkstemp creates 0600; exported files are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str, mode: int = 0o644) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode)
