"""SIGINT / SIGTERM for long commands: the first signal asks every long step to stop at its next safe point;
`Interrupted` (a BaseException, so `except Exception` blocks don't swallow it) unwinds the stack, and every
`finally` on the way removes what was half-written.

Python runs signal handlers between bytecodes, so a handler that raised inside a native call (a TensorRT
build, an ONNX Runtime session) could not stop it and could leave native code in a bad state. Instead the
handler records the request and raises only when Python code is running outside a `native_section()`;
native loops with a callback (TensorRT's IProgressMonitor.step_complete) poll `requested()` and cancel.
"""

from __future__ import annotations

import contextlib
import signal
import threading

_requested: int | None = None  # the signal number that asked us to stop
_native_depth = 0
_lock = threading.Lock()


class Interrupted(BaseException):
    """The user (SIGINT) or the system (SIGTERM) asked the command to stop."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def requested() -> bool:
    return _requested is not None


def raise_if_requested() -> None:
    if _requested is not None:
        raise Interrupted(_requested)


def _handler(signum, _frame) -> None:
    global _requested
    with _lock:
        first = _requested is None
        _requested = signum
        inside_native = _native_depth > 0
    if first and not inside_native:
        raise Interrupted(signum)


@contextlib.contextmanager
def native_section():
    """While native code runs (and may call back into Python), only record signals; raise on exit."""
    global _native_depth
    with _lock:
        _native_depth += 1
    try:
        yield
    finally:
        with _lock:
            _native_depth -= 1
    raise_if_requested()


def install() -> dict:
    """Route SIGINT and SIGTERM through `_handler` (main thread only; a no-op elsewhere). Returns the handlers it
    replaced, for `restore`."""
    global _requested
    _requested = None
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, _handler)
    return previous


def restore(previous: dict) -> None:
    """Put back the handlers `install` replaced (a command run inside a longer-lived process, e.g. a test)."""
    global _requested
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    _requested = None
