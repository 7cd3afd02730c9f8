"""What an engine build shows while it runs, and where it can be cancelled.

TensorRT reports phases through an IProgressMonitor; we print the outer ones. Some phases run for tens of
seconds without a callback (the tiny WavLLM prefill spends ~15 s in "Determining refit engines" on a CPU),
so a heartbeat thread says every ~10 s that the build still runs; TensorRT releases the GIL while it builds,
so the thread gets to print. ``step_complete`` is where TensorRT asks whether to go on: it answers "no" once
an interrupt was requested (see fastadasp/core/interrupts.py), and TensorRT cancels the build.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from typing import Iterator

from fastadasp.core import interrupts
from fastadasp.core import progress as core_progress

log = logging.getLogger("fastadasp.engines")

HEARTBEAT_SECONDS = 10.0


class BuildProgress:
    """Lines ``[engine] <label>: <message> (<elapsed>s)`` on stderr; only logged with ``enabled=False`` or
    the CLI's --quiet (``fastadasp.core.progress.QUIET``)."""

    def __init__(self, enabled: bool, label: str):
        self.enabled, self.label = enabled and not core_progress.QUIET, label
        self.t0 = self._last = time.perf_counter()
        self._lock = threading.Lock()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def quiet_for(self) -> float:
        """Seconds since the last line."""
        with self._lock:
            return time.perf_counter() - self._last

    def __call__(self, msg: str) -> None:
        line = f"[engine] {self.label}: {msg} ({self.elapsed():.1f}s)"
        with self._lock:
            self._last = time.perf_counter()
        if self.enabled:
            print(line, file=sys.stderr, flush=True)
        else:
            log.info(line)


def make_progress_monitor(trt, progress: BuildProgress, max_depth: int = 1):
    """An IProgressMonitor that prints phases up to ``max_depth`` levels deep (deeper ones come by the hundred)
    and cancels the build when an interrupt is requested.

    TensorRT calls it from C++: an exception must not escape into it, so one raised here (a display problem,
    or KeyboardInterrupt where no interrupt handler is installed) is kept in ``.error``, cancels the build, and
    is for the caller to raise once the build has returned.
    """

    class Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self._open: list[tuple[str, int]] = []  # (phase, depth), outermost first
            self._lock = threading.Lock()
            self.cancelled = False
            self.error: BaseException | None = None

        @property
        def current_phase(self) -> str | None:
            with self._lock:
                return self._open[-1][0] if self._open else None

        def phase_start(self, phase_name, parent_phase, num_steps):
            try:
                with self._lock:
                    depths = dict(self._open)
                    depth = depths[parent_phase] + 1 if parent_phase in depths else 0
                    self._open.append((phase_name, depth))
                if depth <= max_depth:
                    progress("  " * depth + f"{phase_name} ({num_steps} steps)")
            except BaseException as exc:
                self._keep(exc)

        def step_complete(self, phase_name, step):
            try:
                if self.error is None and not interrupts.requested():
                    return True
                if not self.cancelled:
                    self.cancelled = True
                    progress("interrupted: cancelling the build")
            except BaseException as exc:
                self._keep(exc)
            return False

        def phase_finish(self, phase_name):
            try:
                with self._lock:
                    depth = self._pop(phase_name)
                if depth == 0:
                    progress(f"{phase_name} done")
            except BaseException as exc:
                self._keep(exc)

        def _pop(self, phase_name) -> int | None:
            for i in range(len(self._open) - 1, -1, -1):
                if self._open[i][0] == phase_name:
                    return self._open.pop(i)[1]
            return None

        def _keep(self, exc: BaseException) -> None:
            if self.error is None:
                self.error = exc

    return Monitor()


@contextlib.contextmanager
def heartbeat(progress: BuildProgress, monitor=None, every: float = HEARTBEAT_SECONDS) -> Iterator[None]:
    """While the body runs, print "still building" whenever no line was printed for `every` seconds."""
    if not progress.enabled:
        yield
        return
    stop = threading.Event()

    def beat():
        while not stop.wait(min(every, 1.0)):
            if progress.quiet_for() >= every:
                phase = getattr(monitor, "current_phase", None)
                progress("still building" + (f": {phase}" if phase else ""))

    thread = threading.Thread(target=beat, name="engine-build-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
