"""Progressive all-pairs scheduling: every pair exactly once in every mode, also across restarts."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.pairing import Decision, PairingCore
from contracts.events import DirectoryCommitted, FileReady, PairTask

NS = "run1/"


def ready(window: str, station: str) -> FileReady:
    d = f"{NS}prep/{window}/"
    return FileReady(directory=d, key=f"{d}{station}.npz", ready_at=f"t-{station}")


def committed(window: str, stations: list[str]) -> DirectoryCommitted:
    d = f"{NS}prep/{window}/"
    return DirectoryCommitted(directory=d, files=[f"{d}{s}.npz" for s in stations], rule="n_files")


def pairs_of(tasks: list[PairTask]) -> list[tuple[str, str, str]]:
    return [(t.window, *sorted((t.row, c))) for t in tasks for c in t.columns]


def feed(core: PairingCore, events: list) -> Decision:  # type: ignore[type-arg]
    out = Decision()
    for e in events:
        d = core.file_ready(e) if isinstance(e, FileReady) else core.directory_committed(e)
        out.tasks += d.tasks
        out.state += d.state
    return out


def run_events(windows: dict[str, list[str]], rng: random.Random) -> list:  # type: ignore[type-arg]
    events: list = []  # type: ignore[type-arg]
    for window, stations in windows.items():
        order = stations[:]
        rng.shuffle(order)
        events += [ready(window, s) for s in order] + [committed(window, stations)]
    return events


def expected_pairs(windows: dict[str, list[str]]) -> set[tuple[str, str, str]]:
    return {(w, a, b) for w, ss in windows.items() for a, b in itertools.combinations(sorted(ss), 2)}


WINDOWS = {"W1": [f"XX.S{i:02d}..HHZ" for i in range(7)], "W2": [f"XX.S{i:02d}..HHZ" for i in range(4)]}


@pytest.mark.parametrize("mode", ["streaming", "cnf", "barrier"])
def test_every_pair_exactly_once(mode: str) -> None:
    core = PairingCore(mode, namespace=NS, windows_expected=2)  # type: ignore[arg-type]
    tasks = feed(core, run_events(WINDOWS, random.Random(1))).tasks
    found = pairs_of(tasks)
    assert len(found) == len(set(found)), "no pair twice"
    assert set(found) == expected_pairs(WINDOWS)


def test_streaming_pairs_each_new_station_with_those_already_there() -> None:
    core = PairingCore("streaming", namespace=NS)
    assert not core.file_ready(ready("W1", "A")).tasks
    (task,) = core.file_ready(ready("W1", "B")).tasks
    assert (task.row, task.columns) == ("B", ["A"])
    (task,) = core.file_ready(ready("W1", "C")).tasks
    assert (task.row, task.columns, task.ready_at) == ("C", ["A", "B"], "t-C")
    assert set(task.keys) == {"A", "B", "C"}


def test_cnf_waits_for_the_commit_and_barrier_for_every_window() -> None:
    cnf = PairingCore("cnf", namespace=NS)
    assert not feed(cnf, [ready("W1", "A"), ready("W1", "B")]).tasks
    assert pairs_of(cnf.directory_committed(committed("W1", ["A", "B"])).tasks) == [("W1", "A", "B")]
    barrier = PairingCore("barrier", namespace=NS, windows_expected=2)
    assert not feed(barrier, [ready("W1", "A"), ready("W1", "B"), committed("W1", ["A", "B"])]).tasks
    done = feed(barrier, [ready("W2", "A"), ready("W2", "B"), committed("W2", ["A", "B"])])
    assert set(pairs_of(done.tasks)) == {("W1", "A", "B"), ("W2", "A", "B")}


def test_late_station_after_release_is_still_paired() -> None:
    core = PairingCore("cnf", namespace=NS)
    feed(core, [ready("W1", "A"), ready("W1", "B"), committed("W1", ["A", "B"])])
    (task,) = core.file_ready(ready("W1", "C")).tasks
    assert (task.row, sorted(task.columns)) == ("C", ["A", "B"])


def test_commit_listing_a_file_whose_ready_was_not_seen_still_pairs_it() -> None:
    core = PairingCore("cnf", namespace=NS)
    decision = feed(core, [ready("W1", "A"), committed("W1", ["A", "B"])])
    assert pairs_of(decision.tasks) == [("W1", "A", "B")]
    assert not core.file_ready(ready("W1", "B")).tasks, "B was paired already"


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), mode=st.sampled_from(["streaming", "cnf", "barrier"]), cut=st.integers(0, 30))
def test_restart_at_any_point_repeats_and_loses_nothing(seed: int, mode: str, cut: int) -> None:
    events = run_events(WINDOWS, random.Random(seed))
    cut = min(cut, len(events))
    first = PairingCore(mode, namespace=NS, windows_expected=2)  # type: ignore[arg-type]
    before = feed(first, events[:cut])
    second = PairingCore(mode, namespace=NS, windows_expected=2)  # type: ignore[arg-type]
    second.restore(before.state)
    after = feed(second, events[cut:])
    found = pairs_of(before.tasks + after.tasks)
    assert sorted(found) == sorted(expected_pairs(WINDOWS))


def test_barrier_needs_the_window_count() -> None:  # the product-key half moved to test_storage_layout.py
    with pytest.raises(ValueError, match="barrier"):
        PairingCore("barrier")


@pytest.mark.parametrize("mode", ["streaming", "cnf"])
def test_a_long_row_is_split_into_tasks_of_whole_chunks(mode: str) -> None:
    stations = [f"XX.S{i:03d}..HHZ" for i in range(300)]
    core = PairingCore(mode, namespace=NS, task_columns=128)  # type: ignore[arg-type]
    tasks = feed(core, [ready("W1", s) for s in stations] + [committed("W1", stations)]).tasks
    last = [t for t in tasks if t.row == stations[-1]]
    assert [len(t.columns) for t in last] == [128, 128, 43]
    assert [t.slot - last[0].slot for t in last] == [0, 128, 256], "each task starts a chunk, none shares one"
    assert all(t.slot % 64 == 0 for t in tasks)
    assert [c for t in last for c in t.columns] == stations[:-1], "canonical pair order across the row's tasks"
    assert all(set(t.keys) == {t.row, *t.columns} == set(t.index) for t in last), "each names only its stations"
    found = pairs_of(tasks)
    assert len(found) == len(set(found)) and set(found) == expected_pairs({"W1": stations})
    assert max(t.slot + len(t.columns) for t in tasks) <= core.windows["W1"].slots


def test_task_columns_are_whole_chunks() -> None:
    with pytest.raises(ValueError, match="multiple of 64"):
        PairingCore("streaming", task_columns=100)
