"""Progress for long steps: a bar redrawn in place on a terminal, a plain line every few seconds otherwise
(logs, CI), nothing when quiet. Always on stderr, so stdout stays machine-readable (--json)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

QUIET = False  # set by the CLI's --quiet


class Progress:
    def __init__(self, label: str, total: int | None = None, *, stream: TextIO | None = None,
                 quiet: bool | None = None, every_seconds: float = 5.0):
        self.label, self.total = label, total
        self.stream = stream or sys.stderr
        self.quiet = QUIET if quiet is None else quiet
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = every_seconds
        self.start = time.perf_counter()
        self._last = -1e9
        self.done = 0

    def _text(self) -> str:
        elapsed = time.perf_counter() - self.start
        if self.total:
            width = 24
            filled = int(width * self.done / self.total)
            bar = "#" * filled + "." * (width - filled)
            return f"{self.label} [{bar}] {self.done}/{self.total} ({elapsed:.1f}s)"
        return f"{self.label}: {self.done} ({elapsed:.1f}s)"

    def update(self, done: int) -> None:
        self.done = done
        if self.quiet:
            return
        now = time.perf_counter()
        if self.tty:
            self.stream.write("\r" + self._text())
            self.stream.flush()
        elif now - self._last >= self.every:
            self._last = now
            print(self._text(), file=self.stream, flush=True)

    def close(self) -> None:
        if self.quiet:
            return
        if self.tty:
            self.stream.write("\r" + self._text() + "\n")
        else:
            print(self._text(), file=self.stream)
        self.stream.flush()


def say(line: str) -> None:
    """A status line on stderr (suppressed by --quiet)."""
    if not QUIET:
        print(line, file=sys.stderr, flush=True)
