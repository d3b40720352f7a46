"""Progressive all-pairs scheduling, free of Kafka: FileReady / DirectoryCommitted in, PairTasks out.

Modes (DESIGN.md §2):

* ``streaming``: each station that becomes ready in a window is paired at once with every station already
  there (a row of the pair matrix), so the first pair exists as soon as two stations are ready.
* ``cnf``: a window's pairs are released when its directory commits (Commit-n-Files).
* ``barrier``: nothing is released until every expected window has committed (the traditional two-phase run).

A station that becomes ready after its window was released (a late file) is paired like in streaming mode,
so no pair is ever lost. Each decision comes with the state records that make a restart repeat nothing.

The core also owns where results go (:mod:`results.layout`): it gives every station a registry index the first
time it sees it, and every task a chunk-aligned range of slots in its window's ccf array, with the columns in
canonical pair order. Released windows (cnf, barrier) go row by row in registry order, so the tasks of a row
fill one row of the stacks' lower triangle. A row of more than ``Settings.task_columns`` columns is split into
tasks of that many (whole chunks of slots each), which bounds a correlator's memory per task however large the
array.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

from contracts.events import DirectoryCommitted, FileReady, PairTask
from contracts.settings import Settings
from results.layout import CHUNK_PAIRS, pair_index, slots_for
from storage.layout import Layout

Mode = Literal["streaming", "cnf", "barrier"]


@dataclass
class StationEntry:
    """A station that is ready in one window."""

    station: str
    key: str
    ready_at: str = ""
    arrived_at: str = ""
    seq: int = 0


@dataclass
class WindowState:
    """The stations of one window and whether its pairs were released."""

    window: str
    directory: str
    committed: bool = False
    released: bool = False
    slots: int = 0  # slots handed out so far in the window's ccf array
    stations: dict[str, StationEntry] = field(default_factory=dict)


@dataclass
class Decision:
    """Tasks to publish and state records to persist."""

    tasks: list[PairTask] = field(default_factory=list)
    state: list[tuple[str, bytes | None]] = field(default_factory=list)
    ignored: str = ""
    refused: list[str] = field(default_factory=list)  # product keys a commit listed that do not exist
    grown: dict[str, int] = field(default_factory=dict)  # window -> slots its ccf array must now hold


def _always(_key: str) -> bool:
    return True


class PairingCore:
    """The scheduler's state machine. Not thread-safe; one instance per scheduler."""

    def __init__(
        self,
        mode: Mode,
        *,
        namespace: str = "",
        windows_expected: int | None = None,
        task_columns: int = Settings.model_fields["task_columns"].default,
    ) -> None:
        if mode == "barrier" and not windows_expected:
            raise ValueError("barrier mode needs the number of windows of the run (windows_expected)")
        if task_columns < 1 or task_columns % CHUNK_PAIRS:
            raise ValueError(f"task_columns must be a positive multiple of {CHUNK_PAIRS}, not {task_columns}")
        self.mode = mode
        self.task_columns = task_columns
        self.namespace = namespace
        self.layout = Layout(namespace)
        self.windows_expected = windows_expected
        self.windows: dict[str, WindowState] = {}
        self.registry: dict[str, int] = {}  # station -> registry index, in the order first seen
        self._seq = 0

    # --- restore -------------------------------------------------------------------------------------------
    def restore(self, records: list[tuple[str, bytes | None]]) -> None:
        """Rebuild from state records (latest per key)."""
        for key, value in records:
            kind, _, name = key.partition(":")
            if value is None:
                continue
            data = json.loads(value)
            if kind == "w":
                stations = self.windows[name].stations if name in self.windows else {}
                self.windows[name] = WindowState(**data, stations=stations)
            elif kind == "s":
                window = name.split("|", 1)[0]
                entry = StationEntry(**data)
                self.windows.setdefault(window, WindowState(window, "")).stations[entry.station] = entry
                self._seq = max(self._seq, entry.seq)
            elif kind == "r":
                self.registry[name] = int(data)

    # --- inputs --------------------------------------------------------------------------------------------
    def file_ready(self, event: FileReady, exists: Callable[[str], bool] = _always) -> Decision:
        """A station's product may be read.

        Args:
            event: the FileReady.
            exists: whether a product key names a stored object; asked once per new station, so an event for
                an object that is not there never becomes a task.

        Raises:
            ValueError: the key is not a product key of this namespace, or names no stored object.
        """
        directory, window, station = self.layout.parse_product(event.key)
        w = self.windows.get(window)
        decision = Decision()
        if w is not None and station in w.stations:
            decision.ignored = "duplicate"
            return decision
        if not exists(event.key):
            raise ValueError(f"FileReady names {event.key!r}, which is not in the store")
        w = self._window(window, directory)
        self._seq += 1
        entry = StationEntry(station, event.key, event.ready_at, event.arrived_at, self._seq)
        earlier = sorted(w.stations.values(), key=lambda s: s.seq)
        w.stations[station] = entry
        decision.state.append(self._station_record(w, entry))
        self._register(station, decision)
        if self.mode == "streaming" or w.released:
            decision.tasks += self._row(w, entry, earlier, decision)
        return decision

    def directory_committed(self, event: DirectoryCommitted, exists: Callable[[str], bool] = _always) -> Decision:
        """A window's directory is complete (n_files, deadline, ...).

        Files the commit lists that this scheduler has not seen ready are added only if ``exists(key)``; the
        others are listed in ``Decision.refused``.
        """
        decision = Decision()
        try:
            window = self.layout.parse_product_dir(event.directory)
        except ValueError:
            decision.ignored = "not a prep directory"
            return decision
        w = self._window(window, event.directory)
        if w.committed:
            decision.ignored = "duplicate"
            return decision
        for key in event.files:  # files the commit lists but whose FileReady this scheduler has not seen
            _, file_window, station = self.layout.parse_product(key)
            if file_window != window or (station not in w.stations and not exists(key)):
                decision.refused.append(key)
            elif station not in w.stations:
                self._seq += 1
                w.stations[station] = StationEntry(station, key, event.committed_at, "", self._seq)
                decision.state.append(self._station_record(w, w.stations[station]))
                self._register(station, decision)
        w.committed = True
        decision.state.append(self._window_record(w))
        if self.mode == "cnf":
            self._release(w, decision)
        elif self.mode == "barrier":
            self._release_all_if_complete(decision)
        return decision

    # --- helpers -------------------------------------------------------------------------------------------
    def _release(self, w: WindowState, decision: Decision) -> None:
        """All pairs of a window, one task per row of the lower triangle in registry order."""
        if w.released:
            return
        if self.mode != "streaming":
            ordered = sorted(w.stations.values(), key=lambda s: self.registry[s.station])
            for i, row in enumerate(ordered[1:], start=1):
                decision.tasks += self._row(w, row, ordered[:i], decision)
        w.released = True
        decision.state.append(self._window_record(w))

    def _release_all_if_complete(self, decision: Decision) -> None:
        committed = [w for w in self.windows.values() if w.committed]
        if self.windows_expected is not None and len(committed) >= self.windows_expected:
            for w in sorted(committed, key=lambda w: w.window):
                self._release(w, decision)

    def _row(
        self, w: WindowState, row: StationEntry, columns: list[StationEntry], decision: Decision
    ) -> list[PairTask]:
        """``row`` against ``columns`` (in canonical pair order), at the window's next free slots: one task per
        ``task_columns`` of them, so what a correlator holds for a task has a bound."""
        if not columns:
            return []
        mine = self.registry[row.station]
        columns = sorted(columns, key=lambda c: pair_index(mine, self.registry[c.station]))
        tasks = []
        for start in range(0, len(columns), self.task_columns):
            batch = columns[start : start + self.task_columns]
            everyone = [row, *batch]
            tasks.append(
                PairTask(
                    window=w.window,
                    directory=w.directory,
                    row=row.station,
                    columns=[c.station for c in batch],
                    keys={s.station: s.key for s in everyone},
                    ready_at=max(s.ready_at for s in everyone),
                    arrived_at=max(s.arrived_at for s in everyone),
                    slot=w.slots,
                    index={s.station: self.registry[s.station] for s in everyone},
                )
            )
            w.slots += slots_for(len(batch))  # a whole number of chunks: every batch but the last fills its own
        decision.grown[w.window] = w.slots
        decision.state.append(self._window_record(w))
        return tasks

    def _register(self, station: str, decision: Decision) -> None:
        """Give a station seen for the first time the next registry index."""
        if station not in self.registry:
            self.registry[station] = len(self.registry)
            decision.state.append((f"r:{station}", json.dumps(self.registry[station]).encode()))

    def _window(self, window: str, directory: str) -> WindowState:
        w = self.windows.setdefault(window, WindowState(window, directory))
        if not w.directory:
            w.directory = directory
        return w

    def _window_record(self, w: WindowState) -> tuple[str, bytes]:
        data = {
            "window": w.window,
            "directory": w.directory,
            "committed": w.committed,
            "released": w.released,
            "slots": w.slots,
        }
        return f"w:{w.window}", json.dumps(data).encode()

    def _station_record(self, w: WindowState, entry: StationEntry) -> tuple[str, bytes]:
        return f"s:{w.window}|{entry.station}", json.dumps(asdict(entry)).encode()

    @property
    def pending_windows(self) -> int:
        """Windows with ready stations whose pairs are not all released yet (cnf/barrier)."""
        return sum(1 for w in self.windows.values() if not w.released and self.mode != "streaming")
