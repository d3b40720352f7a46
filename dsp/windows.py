"""Processing-window ids: the UTC start of a window as ``YYYYMMDDTHHMMSSZ`` (sortable, S3-safe).

Windows are aligned to multiples of ``window_s`` since the Unix epoch, so every producer, given the same
length, assigns a sample to the same window without coordination.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from contracts.ids import WINDOW_FORMAT, window_id_problem
from dsp.errors import InvalidWindowId

_FORMAT = WINDOW_FORMAT


def window_start_of(t: float, window_s: float) -> float:
    """Epoch seconds of the start of the window that contains epoch time ``t``."""
    return math.floor(t / window_s) * window_s


def window_id(t: float, window_s: float = 3600.0) -> str:
    """Id of the window containing epoch time ``t`` (seconds, UTC).

    Args:
        t: a time in epoch seconds (``float(UTCDateTime)`` gives it).
        window_s: window length in seconds; ids stay whole seconds, so it must be a whole number.

    Returns:
        The window id, e.g. ``"20100901T130000Z"``.
    """
    start = window_start_of(t, window_s)
    return datetime.fromtimestamp(start, tz=UTC).strftime(_FORMAT)


def window_start(wid: str, window_s: float | None = None) -> float:
    """Epoch seconds of the start of window ``wid``.

    Args:
        wid: a window id as made by :func:`window_id`.
        window_s: when given, the id must also be aligned to this window length.

    Raises:
        InvalidWindowId: the id is malformed, not a real date, or not aligned.
    """
    problem = window_id_problem(wid)
    if problem:
        raise InvalidWindowId(repr(wid), problem)
    start = datetime.strptime(wid, _FORMAT).replace(tzinfo=UTC).timestamp()
    if window_s is not None and start % window_s != 0:
        raise InvalidWindowId(wid, f"not aligned to a multiple of window_s={window_s} s since the epoch")
    return start


def windows_in_span(t0: float, t1: float, window_s: float = 3600.0) -> list[str]:
    """Ids of every window that overlaps the half-open span ``[t0, t1)`` (epoch seconds), in time order.

    Returns an empty list when ``t1 <= t0``.
    """
    if t1 <= t0:
        return []
    first = window_start_of(t0, window_s)
    # epoch floats carry ~1e-7 s of noise: a span ending a hair past a boundary stays out of the next window
    count = math.ceil((t1 - first) / window_s - 1e-9)
    return [window_id(first + i * window_s, window_s) for i in range(count)]
