"""Station latency bookkeeping: a station is done when all its pairs of the window are, whatever the order."""

from __future__ import annotations

import itertools
import random

import pytest

from consumers.latency import LatencyTracker
from consumers.stationdone import StationTracker
from contracts.events import DirectoryCommitted, FileReady, RowCorrelated

W = "20240101T000000Z"


def test_each_station_reports_once_from_arrival_to_its_last_pair() -> None:
    t = StationTracker()
    assert t.ready(W, "A", 100.0) == [] and t.ready(W, "B", 110.0) == []
    assert t.task_done(W, "t1", "B", ["A"], 115.0) == [], "the station count is not known before the commit"
    assert t.ready(W, "C", 130.0) == []
    assert t.committed(W, 3) == []
    assert t.task_done(W, "t1", "B", ["A"], 116.0) == [], "a task announced again counts once"
    assert t.task_done(W, "t2", "C", ["A"], 140.0) == [140.0 - 100.0]  # A is done with B and C
    assert sorted(t.task_done(W, "t3", "C", ["B"], 150.0)) == [150.0 - 130.0, 150.0 - 110.0]
    assert t.windows == 0, "a window whose stations are all done is forgotten"
    assert t.task_done(W, "t3", "C", ["B"], 151.0) == [], "a late duplicate reports nothing"


@pytest.mark.parametrize("seed", range(5))
def test_any_order_of_facts_gives_the_same_latencies(seed: int) -> None:
    stations = [f"S{i}" for i in range(6)]
    arrivals = {s: 10.0 * i for i, s in enumerate(stations)}
    pairs = list(itertools.combinations(stations, 2))
    done_at = {p: 100.0 + i for i, p in enumerate(pairs)}
    # row tasks of one or two columns, the first announced twice: (task, row, columns)
    tasks = [(b, (a,)) for a, b in pairs if b in ("S1", "S2", "S3")] + [(s, ("S0", "S1")) for s in ("S4", "S5")]
    tasks += [(s, (p,)) for s in ("S4", "S5") for p in ("S2", "S3")] + [("S5", ("S4",))]
    assert sorted(tuple(sorted((r, c))) for r, cs in tasks for c in cs) == sorted(pairs)
    announced = [(str(k), r, cs) for k, (r, cs) in [*enumerate(tasks), (0, tasks[0])]]
    facts: list[tuple[str, tuple[str, str, tuple[str, ...]]]] = [("ready", ("", s, ())) for s in stations]
    facts += [("task", a) for a in announced] + [("commit", ("", "", ()))]
    random.Random(seed).shuffle(facts)
    t, seen, finished = StationTracker(), [], {}
    for kind, (task, row, columns) in facts:
        if kind == "ready":
            seen += t.ready(W, row, arrivals[row])
        elif kind == "task":
            at = max(done_at[(min(row, c), max(row, c))] for c in columns)  # a task ends with its last pair
            finished.update({(min(row, c), max(row, c)): at for c in columns})
            seen += t.task_done(W, task, row, columns, at)
        else:
            seen += t.committed(W, len(stations))
    expected = [max(at for p, at in finished.items() if s in p) - arrivals[s] for s in stations]
    assert sorted(seen) == sorted(expected)


def test_single_station_window_has_no_pairs_and_is_dropped() -> None:
    t = StationTracker()
    t.ready(W, "A", 1.0)
    assert t.committed(W, 1) == [] and t.windows == 0


def test_windows_that_never_complete_are_bounded() -> None:
    t = StationTracker(max_windows=3)
    for i in range(10):
        t.ready(f"w{i}", "A", 0.0)
    assert t.windows == 3


def test_service_reads_keys_and_ignores_other_namespaces() -> None:
    tracker = LatencyTracker.__new__(LatencyTracker)  # no Kafka: only the event → fact mapping is under test
    tracker.ns, tracker.tracker = "run1/", StationTracker()
    d = f"run1/prep/{W}/"
    ready = [
        FileReady(directory=d, key=f"{d}XX.A..HHZ.npz", arrived_at="2024-01-01T00:00:00+00:00"),
        FileReady(directory=d, key=f"{d}XX.B..HHZ.npz", arrived_at="2024-01-01T00:00:10+00:00"),
        FileReady(directory="other/prep/w/", key="other/prep/w/XX.C..HHZ.npz", arrived_at="2024-01-01T00:00:00+00:00"),
    ]
    for event in ready:
        assert tracker.latencies_of(event) == []
    files = [e.key for e in ready[:2]]
    assert tracker.latencies_of(DirectoryCommitted(directory=d, files=files, rule="n_files")) == []
    foreign = RowCorrelated(
        window=W, row="XX.B..HHZ", columns=["XX.A..HHZ"], slot=0, pairs=1, manifest=f"other/tasks/{W}/x.json"
    )
    assert tracker.latencies_of(foreign) == [], "a task of another namespace does not count"
    row = foreign.model_copy(update={"manifest": f"run1/tasks/{W}/XX.B..HHZ.s0.json"})
    row = row.model_copy(update={"correlated_at": "2024-01-01T00:00:30+00:00"})
    assert sorted(tracker.latencies_of(row)) == [20.0, 30.0]
