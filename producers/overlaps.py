"""Files of one channel whose time spans overlap: identical samples are merged, different samples conflict.

Finding overlaps needs headers only (start, end, SEED id), so the common case, where no two files of a channel
overlap, decodes nothing. Only the files that do overlap are decoded, and every sample both cover is compared
exactly: a copy of the same recording (another name, another record length or encoding) has equal sample
values on the same sample grid. Anything else (a value that differs, another rate, a grid shifted by a
fraction of a sample) is a conflict. The module only judges; which file to keep is not guessed here, and the
caller drops both files of a conflict.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import obspy

# Two files share a sample grid when their start times differ by a whole number of samples, to within this
# fraction of a sample: float epoch times hold ~0.1 us, far below 1% of a sample at every accepted rate.
GRID_TOLERANCE = 0.01


@dataclass(frozen=True)
class Span:
    """What the overlap search needs of one file: its channel and time span (epoch s, end exclusive)."""

    seed_id: str
    start: float
    end: float


@dataclass(frozen=True)
class Overlap:
    """Files ``i`` and ``j`` (indexes into the spans given) of one channel share ``seconds`` of time."""

    i: int
    j: int
    seconds: float


def find_overlaps(spans: Sequence[Span]) -> list[Overlap]:
    """Every pair of files of the same channel whose spans overlap (touching ends do not overlap).

    Args:
        spans: one span per file.

    Returns:
        The overlapping pairs, ``i < j`` by start time within a channel, in channel order.
    """
    by_channel: dict[str, list[int]] = defaultdict(list)
    for index, span in enumerate(spans):
        by_channel[span.seed_id].append(index)
    found = []
    for seed_id in sorted(by_channel):
        order = sorted(by_channel[seed_id], key=lambda k: (spans[k].start, spans[k].end))
        for n, i in enumerate(order):
            for j in order[n + 1 :]:
                if spans[j].start >= spans[i].end:
                    break  # sorted by start: no later file reaches back into i
                seconds = min(spans[i].end, spans[j].end) - spans[j].start
                found.append(Overlap(i, j, seconds))
    return found


def sample_conflict(a: obspy.Stream, b: obspy.Stream) -> str | None:
    """Why two decoded files of one channel disagree where they overlap, or None when they agree.

    Args:
        a, b: the decoded streams (one channel each).

    Returns:
        None when every sample both cover is equal on the same grid; otherwise a short description of the
        first disagreement (rate, grid offset, or how many samples differ and when the first one is).
    """
    for ta in a:
        for tb in b:
            problem = _trace_conflict(ta, tb)
            if problem:
                return problem
    return None


def _trace_conflict(ta: obspy.Trace, tb: obspy.Trace) -> str | None:
    """Compare two traces sample by sample over the samples both cover (None: agree or do not overlap)."""
    if ta.stats.endtime < tb.stats.starttime or tb.stats.endtime < ta.stats.starttime:
        return None
    fs = float(ta.stats.sampling_rate)
    if fs != float(tb.stats.sampling_rate):
        return f"sampling rates differ ({fs} vs {tb.stats.sampling_rate} Hz)"
    offset = (ta.stats.starttime - tb.stats.starttime) * fs  # UTCDateTime difference: nanosecond-exact
    shift = round(offset)
    if abs(offset - shift) > GRID_TOLERANCE:
        return f"sample times differ by {abs(offset - shift):.3f} of a sample"
    lo, hi = max(0, -shift), min(ta.stats.npts, tb.stats.npts - shift)  # ta's indexes that tb also covers
    if lo >= hi:
        return None
    xa, xb = ta.data[lo:hi], tb.data[lo + shift : hi + shift]
    differ = np.flatnonzero(xa != xb)
    if differ.size == 0:
        return None
    at = ta.stats.starttime + (lo + int(differ[0])) / fs
    return f"{differ.size} of {hi - lo} common samples differ, the first at {at}"
