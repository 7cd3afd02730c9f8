"""File helpers with one home: content hashes and atomic writes (a reader sees the old file or the new one,
never a partial one, even when the writer is killed)."""

from __future__ import annotations

import contextlib
import shutil
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


# --------------------------------------------------------------------------------------------- directories
# A directory is replaced as a whole: everything is written into `.<name>.staging-<pid>-*` beside it, then
# the old directory is renamed to `.<name>.old-<pid>-*`, the staging directory takes its name, and the old
# one is deleted. A reader therefore sees the previous complete directory, the new complete one, or (for
# the instant between the two renames) none. A process killed outright (SIGKILL, power loss) leaves its
# hidden siblings behind; the next writer removes those whose process is gone, and puts an orphaned
# `.old-*` back if the directory itself is missing.

_STAGING = "staging"
_OLD = "old"


def _sibling_prefix(final: Path, kind: str) -> str:
    return f".{final.name}.{kind}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _owner_pid(path: Path, prefix: str) -> int | None:
    head = path.name[len(prefix):].split("-", 1)[0]
    return int(head) if head.isdigit() else None


def remove_stale_siblings(final: str | os.PathLike) -> list[Path]:
    """Clean up after writers of `final` that were killed: returns what was removed or restored."""
    final = Path(final).absolute()
    touched: list[Path] = []
    if not final.parent.is_dir():
        return touched
    for kind in (_OLD, _STAGING):  # restore an orphaned old copy before deleting anything
        prefix = _sibling_prefix(final, kind)
        for path in sorted(final.parent.glob(prefix + "*")):
            pid = _owner_pid(path, prefix)
            if pid is None or pid == os.getpid() or _pid_alive(pid):
                continue
            if kind == _OLD and not final.exists() and (path / "previous").is_dir():
                os.rename(path / "previous", final)
                shutil.rmtree(path, ignore_errors=True)
            else:
                shutil.rmtree(path, ignore_errors=True)
            touched.append(path)
    return touched


@contextlib.contextmanager
def replaced_directory(final: str | os.PathLike):
    """Yield an empty staging directory; when the block completes it replaces `final` as a whole. If the
    block raises (KeyboardInterrupt and SystemExit included) `final` is left as it was and the staging
    directory is removed."""
    final = Path(final).absolute()
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_siblings(final)
    staging = Path(tempfile.mkdtemp(prefix=f"{_sibling_prefix(final, _STAGING)}{os.getpid()}-", dir=final.parent))
    try:
        yield staging
        os.chmod(staging, 0o755)  # mkdtemp creates 0700; an export is meant to be shared
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f"{_sibling_prefix(final, _OLD)}{os.getpid()}-", dir=final.parent))
            os.rename(final, old / "previous")  # a rename within one file system: instant, never partial
        try:
            os.rename(staging, final)
        except BaseException:
            if old is not None and not final.exists():
                os.rename(old / "previous", final)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
