"""Progressive all-pairs scheduling, free of Kafka: FileReady / DirectoryCommitted in, PairTasks out.

Modes (DESIGN.md §2):

* ``streaming``: each station that becomes ready in a window is paired at once with every station already
  there (a row of the pair matrix), so the first pair exists as soon as two stations are ready.
* ``cnf``: a window's pairs are released when its directory commits (Commit-n-Files).
* ``barrier``: nothing is released until every expected window has committed (the traditional two-phase run).

A station that becomes ready after its window was released (a late file) is paired like in streaming mode,
so no pair is ever lost. Each decision comes with the state records that make a restart repeat nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

from contracts.events import DirectoryCommitted, FileReady, PairTask

Mode = Literal["streaming", "cnf", "barrier"]
PREP = "prep/"


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
    stations: dict[str, StationEntry] = field(default_factory=dict)


@dataclass
class Decision:
    """Tasks to publish and state records to persist."""

    tasks: list[PairTask] = field(default_factory=list)
    state: list[tuple[str, bytes | None]] = field(default_factory=list)
    ignored: str = ""
    refused: list[str] = field(default_factory=list)  # product keys a commit listed that do not exist


def _always(_key: str) -> bool:
    return True


def parse_product_key(key: str, namespace: str = "") -> tuple[str, str, str]:
    """Split ``<ns>prep/<window>/<station>.<ext>`` into (directory, window, station).

    Raises:
        ValueError: the key is not a product key under ``namespace``.
    """
    rest = key.removeprefix(namespace)
    parts = rest.split("/")
    if not key.startswith(namespace) or len(parts) != 3 or parts[0] != PREP.rstrip("/") or "." not in parts[2]:
        raise ValueError(f"not a product key under {namespace or 'the bucket root'}: {key!r}")
    station = parts[2].rsplit(".", 1)[0]
    if not parts[1] or not station:
        raise ValueError(f"not a product key: {key!r}")
    return f"{namespace}{PREP}{parts[1]}/", parts[1], station


class PairingCore:
    """The scheduler's state machine. Not thread-safe; one instance per scheduler."""

    def __init__(self, mode: Mode, *, namespace: str = "", windows_expected: int | None = None) -> None:
        if mode == "barrier" and not windows_expected:
            raise ValueError("barrier mode needs the number of windows of the run (windows_expected)")
        self.mode = mode
        self.namespace = namespace
        self.windows_expected = windows_expected
        self.windows: dict[str, WindowState] = {}
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
        directory, window, station = parse_product_key(event.key, self.namespace)
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
        if self.mode == "streaming" or w.released:
            decision.tasks += self._row(w, entry, earlier)
        return decision

    def directory_committed(self, event: DirectoryCommitted, exists: Callable[[str], bool] = _always) -> Decision:
        """A window's directory is complete (n_files, deadline, ...).

        Files the commit lists that this scheduler has not seen ready are added only if ``exists(key)``; the
        others are listed in ``Decision.refused``.
        """
        decision = Decision()
        try:
            directory, window, _ = parse_product_key(event.directory + "x.x", self.namespace)
        except ValueError:
            decision.ignored = "not a prep directory"
            return decision
        w = self._window(window, directory)
        if w.committed:
            decision.ignored = "duplicate"
            return decision
        for key in event.files:  # files the commit lists but whose FileReady this scheduler has not seen
            _, file_window, station = parse_product_key(key, self.namespace)
            if file_window != window or (station not in w.stations and not exists(key)):
                decision.refused.append(key)
            elif station not in w.stations:
                self._seq += 1
                w.stations[station] = StationEntry(station, key, event.committed_at, "", self._seq)
                decision.state.append(self._station_record(w, w.stations[station]))
        w.committed = True
        decision.state.append(self._window_record(w))
        if self.mode == "cnf":
            self._release(w, decision)
        elif self.mode == "barrier":
            self._release_all_if_complete(decision)
        return decision

    # --- helpers -------------------------------------------------------------------------------------------
    def _release(self, w: WindowState, decision: Decision) -> None:
        """All pairs of a window, one task per row of the upper triangle."""
        if w.released:
            return
        if self.mode != "streaming":
            ordered = sorted(w.stations.values(), key=lambda s: s.station)
            for i, row in enumerate(ordered[:-1]):
                decision.tasks += self._row(w, row, ordered[i + 1 :])
        w.released = True
        decision.state.append(self._window_record(w))

    def _release_all_if_complete(self, decision: Decision) -> None:
        committed = [w for w in self.windows.values() if w.committed]
        if self.windows_expected is not None and len(committed) >= self.windows_expected:
            for w in sorted(committed, key=lambda w: w.window):
                self._release(w, decision)

    def _row(self, w: WindowState, row: StationEntry, columns: list[StationEntry]) -> list[PairTask]:
        if not columns:
            return []
        everyone = [row, *columns]
        return [
            PairTask(
                window=w.window,
                directory=w.directory,
                row=row.station,
                columns=[c.station for c in columns],
                keys={s.station: s.key for s in everyone},
                ready_at=max(s.ready_at for s in everyone),
                arrived_at=max(s.arrived_at for s in everyone),
            )
        ]

    def _window(self, window: str, directory: str) -> WindowState:
        w = self.windows.setdefault(window, WindowState(window, directory))
        if not w.directory:
            w.directory = directory
        return w

    def _window_record(self, w: WindowState) -> tuple[str, bytes]:
        data = {"window": w.window, "directory": w.directory, "committed": w.committed, "released": w.released}
        return f"w:{w.window}", json.dumps(data).encode()

    def _station_record(self, w: WindowState, entry: StationEntry) -> tuple[str, bytes]:
        return f"s:{w.window}|{entry.station}", json.dumps(asdict(entry)).encode()

    @property
    def pending_windows(self) -> int:
        """Windows with ready stations whose pairs are not all released yet (cnf/barrier)."""
        return sum(1 for w in self.windows.values() if not w.released and self.mode != "streaming")
