"""A small progress bar on stderr that stays quiet when stderr is not a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Progress over a known amount of work units.

    On a TTY it redraws one line at most ~10 times a second; otherwise it prints nothing until :meth:`close`,
    which writes one summary line, so logs are not flooded.
    """

    def __init__(self, total: int, label: str = "", stream: TextIO | None = None) -> None:
        """Start a bar for ``total`` units (``stream`` defaults to stderr)."""
        self.total = max(int(total), 1)
        self.done = 0
        self.label = label
        self.note = ""
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.t0 = time.monotonic()
        self._last = 0.0

    def advance(self, units: int = 1, note: str | None = None) -> None:
        """Count ``units`` more done, optionally changing the note shown after the bar."""
        self.done = min(self.done + units, self.total)
        if note is not None:
            self.note = note
        now = time.monotonic()
        if self.tty and (now - self._last > 0.1 or self.done == self.total):
            self._last = now
            self.stream.write("\r" + self._line(now))
            self.stream.flush()

    def set_total(self, units: int) -> None:
        """Set the amount of work once it becomes known (e.g. after scanning the input)."""
        self.total = max(int(units), 1)

    def close(self) -> None:
        """Finish the line (TTY) or print a one-line summary (non-TTY)."""
        line = self._line(time.monotonic())
        self.stream.write(("\r" + line + "\n") if self.tty else (line + "\n"))
        self.stream.flush()

    def _line(self, now: float) -> str:
        frac = self.done / self.total
        filled = int(frac * 30)
        bar = "#" * filled + "-" * (30 - filled)
        return f"{self.label} [{bar}] {frac:6.1%} {now - self.t0:7.1f}s {self.note}"[:120]
