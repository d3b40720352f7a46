"""The stacker on the real Kafka and S3: stacks equal the mean over windows through kill -9 and restarts.

Each window's CCFs are written into its ccf array with known content, each task's manifest next to them, and
announced with RowCorrelated events from a plain producer, as correlators would. The stacker runs as a process
(``xcorrflow worker stack``), with tiny stack chunks and a tiny memory budget, so that a window is stacked in
many groups and a kill -9 lands inside one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from contracts.events import DeadLetter, DirectoryCommitted, RowCorrelated
from contracts.settings import Settings, TopicNames
from dsp.product import Coordinates, StationProduct, encode_product
from results.layout import STATIONS as STATIONS_GROUP
from results.layout import pair_index, slots_for
from results.manifest import TaskManifest
from results.stacks import StackStore
from results.windows import WindowStore
from results.zarrio import bucket_root, open_root
from storage import ObjectStore, open_store
from storage.layout import Layout
from tests.integration.kafkatools import WorkerProcess, produce, read_events, wait_for

STATIONS = [f"XS.S{i:02d}..HHZ" for i in range(14)]  # registry order; the last one is in window 2 only
DEAD = STATIONS[-1]  # every pair with it is skipped (no common sub-window)
WINDOWS = ["20240101T000000Z", "20240101T010000Z", "20240101T020000Z", "20240101T030000Z"]
COORDS = {s: Coordinates(45.0 + 0.1 * i, 7.0 + 0.2 * i, 10.0 * i) for i, s in enumerate(STATIONS)}
SMALL = {"XCORRFLOW_STACK_CHUNK_PAIRS": "4", "XCORRFLOW_STACK_MEMORY_MB": "1"}  # groups of ~8 chunks


class Deployment:
    """One namespace's objects and events: what correlators leave in the store and the topics."""

    def __init__(self, stack: Settings, topics: TopicNames, ns: str) -> None:
        self.stack, self.topics, self.ns = stack, topics, ns
        self.store: ObjectStore = open_store(stack)
        self.params = stack.processing
        self.settings = stack.model_copy(update={"namespace": ns.rstrip("/")})
        self.windows = WindowStore(open_root(bucket_root(self.settings), self.settings), self.params)
        self.ccfs: dict[tuple[str, int], np.ndarray] = {}  # (window, canonical pair) -> CCF

    def write_window(self, window: str, stations: list[str], seed: int) -> list[tuple[str, RowCorrelated]]:
        """Products, CCF chunks and manifests of a window's row tasks; returns their RowCorrelated events."""
        rng = np.random.default_rng(seed)
        n_lags = 2 * self.params.maxlag + 1
        for s in stations:
            self.store.put(f"{self.ns}prep/{window}/{s}.npz", encode_product(_product(s, window)))
        events, slot = [], 0
        for k, row in enumerate(stations[1:], start=1):
            cols = stations[:k]
            n_common = [0 if DEAD in (row, c) else 5 for c in cols]
            ccfs = rng.standard_normal((len(cols), n_lags)).astype(np.float32)
            ccfs[np.array(n_common) == 0] = np.nan
            self.windows.ensure(window, slot + slots_for(len(cols)))
            self.windows.write(window, slot, ccfs)
            index = {s: STATIONS.index(s) for s in [row, *cols]}
            pairs = [pair_index(index[row], index[c]) for c in cols]
            for p, ccf, n in zip(pairs, ccfs, n_common, strict=True):
                if n:
                    self.ccfs[(window, p)] = ccf
            key = Layout(self.ns).manifest(window, row, slot)
            skipped = {c: "no common valid sub-window" for c, n in zip(cols, n_common, strict=True) if not n}
            # as a correlator does, the manifest gives the stations' positions (the products here have none)
            positions = {s: COORDS[s].to_dict() for s in [row, *cols]}
            manifest = TaskManifest(
                window, row, slot, cols, pairs, n_common, index=index, skipped=skipped, coordinates=positions
            )
            self.store.put(key, manifest.encode())
            event = RowCorrelated(window=window, row=row, slot=slot, pairs=len(cols), columns=cols, manifest=key)
            events.append((f"{window}/{row}", event))
            slot += slots_for(len(cols))
        return events

    def announce(self, items: list[tuple[str, RowCorrelated]]) -> None:
        """Publish RowCorrelated events on the results topic."""
        produce(self.stack, self.topics.results, items)  # type: ignore[arg-type]

    def commit_directory(self, window: str, stations: list[str], extra: list[str] = ()) -> None:  # type: ignore[assignment]
        """Publish the DirectoryCommitted of a window's products (``extra``: listed files that do not exist)."""
        directory = f"{self.ns}prep/{window}/"
        files = [f"{directory}{s}.npz" for s in [*stations, *extra]]
        commit = DirectoryCommitted(directory=directory, files=files, rule="n_files")
        produce(self.stack, self.topics.commits, [(directory, commit)])

    def stacks(self) -> StackStore:
        """The stacks as they are in the store now."""
        return StackStore(open_root(bucket_root(self.settings), self.settings), self.params)

    def counts(self) -> np.ndarray:
        """Windows per pair in the stacks (empty before the first registration)."""
        return self.stacks().counts()

    def expected_mean(self, p: int, windows: list[str]) -> np.ndarray | None:
        """The mean CCF of canonical pair ``p`` over ``windows`` (None when it never had one)."""
        found = [self.ccfs[(w, p)].astype(np.float64) for w in windows if (w, p) in self.ccfs]
        return np.mean(found, axis=0) if found else None


def _product(seed_id: str, window: str) -> StationProduct:
    return StationProduct(
        seed_id=seed_id, window=window, fs=20.0, nfft=64, k0=1, cc_len=32, step=16,
        spectra=np.zeros((1, 4), np.complex64), valid=np.ones(1, bool), gap_fraction=np.zeros(1, np.float32),
        coordinates=None,
    )  # fmt: skip


@pytest.fixture
def deployment(stack: Settings, topics: TopicNames, unique: str) -> Iterator[Deployment]:
    dep = Deployment(stack, topics, f"{unique}/")
    yield dep
    for info in list(dep.store.list(dep.ns)):
        dep.store.delete(info.key)


@pytest.fixture
def stacker(unique: str, tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    workers: list[WorkerProcess] = []
    args = ["stack", "--topic-prefix", unique, "--namespace", unique]

    def start() -> WorkerProcess:
        worker = WorkerProcess(args, env=SMALL, log=tmp_path / "stack.log").start().wait_log("stack ready", 90)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


N4 = len(STATIONS) - 1  # stations in windows 1, 3 and 4
PAIRS4 = N4 * (N4 - 1) // 2


def _stacked(dep: Deployment, n: int) -> bool:
    counts = dep.counts()
    return counts.size >= PAIRS4 and bool((counts[:PAIRS4] == n).all())


def test_stacks_survive_kill_9_between_and_within_windows(
    stack: Settings,
    topics: TopicNames,
    deployment: Deployment,
    stacker,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    dep = deployment
    w1, w2, w3, w4 = WINDOWS
    first = stacker()

    dep.announce(dep.write_window(w1, STATIONS[:N4], seed=1))
    dep.commit_directory(w1, STATIONS[:N4])
    wait_for(lambda: _stacked(dep, 1), "window 1 is in every stack", timeout=90)
    first.kill9()

    # Window 2 arrives while the stacker is down, with a replay of window 1's events (a duplicate publisher).
    ev2 = dep.write_window(w2, STATIONS, seed=2)
    dep.announce(ev2 + dep.write_window(w1, STATIONS[:N4], seed=1))
    dep.commit_directory(w2, STATIONS)
    second = stacker()
    wait_for(lambda: _stacked(dep, 2), "window 2 is in every stack", timeout=90)

    # Window 3: kill -9 as soon as its first group is being stacked, then again while the rest is.
    dep.announce(dep.write_window(w3, STATIONS[:N4], seed=3))
    dep.commit_directory(w3, STATIONS[:N4])
    log = tmp_path / "stack.log"
    wait_for(lambda: f"stacking window {w3}" in log.read_text(), "window 3's first group", timeout=90)
    second.kill9()
    third = stacker()
    wait_for(lambda: log.read_text().count(f"stacking window {w3}") >= 3, "more of window 3", timeout=90)
    third.kill9()
    stacker()
    wait_for(lambda: _stacked(dep, 3), "window 3 is in every stack", timeout=90)

    dep.announce(dep.write_window(w4, STATIONS[:N4], seed=4))
    dep.commit_directory(w4, STATIONS[:N4])
    wait_for(lambda: _stacked(dep, 4), "window 4 is in every stack", timeout=90)
    _assert_stacks(dep, [w1, w2, w3, w4])
    letters = read_events(stack, topics.dlq, until=lambda ev: True, timeout=5, settle=1)
    assert not [e for e in letters if isinstance(e, DeadLetter)], letters


def _assert_stacks(dep: Deployment, windows: list[str]) -> None:
    stacks = dep.stacks()
    counts = stacks.counts()
    a, b = stacks.labels_of(0, stacks.n_pairs)
    for k in range(stacks.n_chunks):
        chunk = stacks.read(k)
        for row, n in enumerate(chunk.count):
            p = k * stacks.chunk_pairs + row
            expected = dep.expected_mean(p, windows)
            if expected is None:
                assert n == 0 and (DEAD in (a[p], b[p])), f"pair {p} has no CCF and no stack"
                continue
            assert counts[p] == len(windows), (a[p], b[p], counts[p])
            np.testing.assert_allclose(chunk.linear[row], expected, rtol=1e-5, atol=1e-6)
    assert stacks.stations() == STATIONS
    positions = stacks.root[STATIONS_GROUP]
    for field in ("latitude", "longitude", "elevation_m"):
        got = np.asarray(positions[field][:], dtype=np.float64)
        np.testing.assert_allclose(got, [getattr(COORDS[s], field) for s in STATIONS], err_msg=field)


def test_a_missing_manifest_is_dead_lettered_and_the_groups_without_it_are_stacked(
    stack: Settings,
    topics: TopicNames,
    deployment: Deployment,
    stacker,  # type: ignore[no-untyped-def]
) -> None:
    """10 stations, 45 pairs. Row 9's manifest is lost: station 9 is never registered and its pairs (36-44)
    never arrive. Everything below them is known complete, so it is stacked; nothing waits on the ghost listed
    in the commit, and the window is not declared complete."""
    dep = deployment
    w = WINDOWS[0]
    events = dep.write_window(w, STATIONS[:10], seed=5)
    lost = events[-1][1]
    dep.store.delete(lost.manifest)
    forged = lost.model_copy(update={"manifest": f"{dep.ns}tasks/{w}/../x.json"})
    stacker()
    dep.announce([*events, (f"{w}/x", forged)])
    dep.commit_directory(w, STATIONS[:10], extra=["XS.GHOST..HHZ"])  # a listed product that does not exist
    wait_for(lambda: dep.counts().size >= 36 and bool((dep.counts()[:36] == 1).all()), "rows 1-8", timeout=90)
    letters = read_events(stack, topics.dlq, until=lambda ev: len(ev) >= 2, timeout=30)
    reasons = sorted(e.reason for e in letters if isinstance(e, DeadLetter))
    assert [r.split(":")[0] for r in reasons] == ["ObjectNotFound", "ValueError"], reasons
    assert dep.counts().size == 36, "the station whose row was lost is not in the stacks"
    updates = read_events(stack, topics.stacks, until=lambda ev: True, timeout=5, settle=1)
    assert updates and not any(getattr(u, "complete", False) for u in updates), "the window is not complete"


def test_an_unreadable_ccf_chunk_is_dead_lettered_and_its_window_still_completes(
    stack: Settings,
    topics: TopicNames,
    deployment: Deployment,
    stacker,  # type: ignore[no-untyped-def]
) -> None:
    """10 stations, 45 pairs; each row task owns one chunk. Row 5's chunk is truncated (it does not decode) and
    row 7's is deleted (it would read as NaN, its fill value): their 5 + 7 pairs count as failed, with one dead
    letter per chunk, and every other pair is stacked once. The window completes, so the run can report the
    twelve pairs missing instead of waiting for them."""
    dep = deployment
    w = WINDOWS[0]
    events = dep.write_window(w, STATIONS[:10], seed=6)
    slots = {ev.row: ev.slot for _, ev in events}
    chunk = dep.windows.chunk_pairs
    root = Layout(dep.ns).results_root()
    truncated = f"{root}/{dep.windows.chunk_path(w, slots[STATIONS[5]] // chunk)}"
    deleted = f"{root}/{dep.windows.chunk_path(w, slots[STATIONS[7]] // chunk)}"
    dep.store.put(truncated, dep.store.get(truncated)[:100])
    dep.store.delete(deleted)
    stacker()
    dep.announce(events)
    dep.commit_directory(w, STATIONS[:10])
    updates = read_events(stack, topics.stacks, until=lambda ev: any(u.complete for u in ev), timeout=90)
    final = [u for u in updates if u.complete][-1]
    assert (final.stacked, final.failed, final.skipped, final.expected) == (45 - 12, 12, 0, 45)

    counts = dep.counts()
    lost = {pair_index(5, c) for c in range(5)} | {pair_index(7, c) for c in range(7)}
    assert [p for p in range(45) if counts[p] != (0 if p in lost else 1)] == []
    letters = [e for e in read_events(stack, topics.dlq, until=lambda ev: True, timeout=5, settle=1)]
    reasons = sorted(e.reason for e in letters if isinstance(e, DeadLetter))
    assert len(reasons) == 2 and all(r.startswith("UnreadableChunk: ") for r in reasons), reasons
    assert any("NaN" in r for r in reasons) and any("ValueError" in r for r in reasons), reasons
