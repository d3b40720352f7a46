"""When is a station done? Raw arrival → the last of its pairs in a window correlated (pure bookkeeping, no I/O).

A station S of window W is *done* when every pair (S, X) of W's stations has been correlated (a skipped
pair counts: it was decided). The number of stations is known only once W's product directory commits
(``DirectoryCommitted.files``), so the latency is observed at the latest of three events: S's FileReady (which
carries its raw arrival time), the directory commit, and S's last pair. The latency is measured from S's raw
arrival to the ``correlated_at`` of its last pair, so a tracker that lags behind the topics still reports
the pipeline's latency, not its own.

In streaming mode the earliest station of a window waits for the last one to arrive, so this latency spans
the whole window's arrival spread; the pair latency (``xcorrflow_pair_latency_seconds``) is the one that shows
what the pipeline adds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

# Windows followed at once; a window whose stations never all complete (a lost event) is dropped, oldest first.
MAX_WINDOWS = 10_000


@dataclass
class _Window:
    """What the tracker knows of one window."""

    stations: int | None = None  # stations in the committed directory; None until it commits
    arrived: dict[str, float] = field(default_factory=dict)  # station → raw arrival (epoch s)
    # station → its finished pairs, counted once per task (a task announced again adds nothing): memory grows
    # with the tasks and stations, not with the N^2 pairs (with a partner set per station, the latency service
    # grew from 53 to 74 MiB between N = 260 and 520)
    paired: dict[str, int] = field(default_factory=dict)
    tasks: set[str] = field(default_factory=set)
    last_done: dict[str, float] = field(default_factory=dict)  # station → correlated_at of its latest pair
    reported: set[str] = field(default_factory=set)


class StationTracker:
    """Turns FileReady, DirectoryCommitted and correlated-pair facts into per-station latencies.

    Every method returns the latencies (seconds) of the stations that became done through that fact, each
    station of a window at most once.
    """

    def __init__(self, max_windows: int = MAX_WINDOWS) -> None:
        self.max_windows = max_windows
        self._windows: dict[str, _Window] = {}

    @property
    def windows(self) -> int:
        """Windows still followed (some station not yet done)."""
        return len(self._windows)

    def ready(self, window: str, station: str, arrived_at: float) -> list[float]:
        """Station ``station`` of ``window`` is ready; its raw data arrived at ``arrived_at`` (epoch s)."""
        w = self._window(window)
        w.arrived.setdefault(station, arrived_at)
        return self._collect(window, [station])

    def committed(self, window: str, stations: int) -> list[float]:
        """The window's product directory committed with ``stations`` files."""
        self._window(window).stations = stations
        return self._collect(window, list(self._windows[window].arrived))

    def task_done(self, window: str, task: str, row: str, columns: Sequence[str], at: float) -> list[float]:
        """The row task ``task`` of ``window`` (its manifest key) has correlated or skipped the pairs of ``row``
        with each of ``columns``, at ``at`` (epoch s). The scheduler gives every pair to one task, so counting
        pairs per station once per task counts each pair once."""
        w = self._window(window)
        if task in w.tasks:
            return []
        w.tasks.add(task)
        for station, pairs in ((row, len(columns)), *((c, 1) for c in columns)):
            w.paired[station] = w.paired.get(station, 0) + pairs
            w.last_done[station] = max(w.last_done.get(station, at), at)
        return self._collect(window, [row, *columns])

    def _window(self, window: str) -> _Window:
        if window not in self._windows:
            while len(self._windows) >= self.max_windows:
                del self._windows[next(iter(self._windows))]  # dicts keep insertion order: the oldest goes
            self._windows[window] = _Window()
        return self._windows[window]

    def _collect(self, window: str, candidates: list[str]) -> list[float]:
        w = self._windows[window]
        latencies = [self._latency(w, s) for s in candidates if self._done(w, s)]
        if w.stations is not None and (w.stations < 2 or len(w.reported) >= w.stations):
            del self._windows[window]  # every station reported (or no pair at all): nothing more can happen
        return latencies

    def _done(self, w: _Window, station: str) -> bool:
        if w.stations is None or w.stations < 2 or station in w.reported or station not in w.arrived:
            return False
        return w.paired.get(station, 0) >= w.stations - 1

    def _latency(self, w: _Window, station: str) -> float:
        w.reported.add(station)
        return max(0.0, w.last_done[station] - w.arrived[station])
