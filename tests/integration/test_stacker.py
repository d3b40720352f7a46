"""The stacker on the real Kafka and S3: stacks equal the mean over windows through kill -9 and restarts.

CCF objects are built directly (row objects, as the correlators write them) with known content, and announced
with PairCorrelated events from a plain producer, like an outside correlator would. The stacker runs as a
process (``xcorrflow worker stack``), exactly what an operator starts.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from obspy.io.sac import SACTrace

from consumers.stackstate import StackerState
from contracts.events import DeadLetter, DirectoryCommitted, PairCorrelated
from contracts.settings import Settings, TopicNames
from dsp.ccf import encode_ccfs
from dsp.correlate import CcfBatch, SkippedPair
from dsp.product import Coordinates, StationProduct, encode_product
from dsp.seed import pair_key
from storage import ObjectStore, open_store
from storage.errors import ObjectNotFound
from tests.integration.kafkatools import WorkerProcess, produce, read_events, wait_for

STATIONS = [f"XS.S{i}..HHZ" for i in range(5)]  # S4 is in W2 only, and every pair with it is skipped
WINDOWS = ["20240101T000000Z", "20240101T010000Z", "20240101T020000Z", "20240101T030000Z"]
COORDS = {s: Coordinates(45.0 + 0.1 * i, 7.0 + 0.2 * i, 10.0 * i) for i, s in enumerate(STATIONS)}


class Deployment:
    """One namespace's objects and events: what correlators would have left in the store and the topics."""

    def __init__(self, stack: Settings, topics: TopicNames, ns: str) -> None:
        self.stack, self.topics, self.ns = stack, topics, ns
        self.store: ObjectStore = open_store(stack)
        self.params = stack.processing
        self.ccfs: dict[tuple[str, str], np.ndarray] = {}  # (window, pair) -> CCF

    def write_window(
        self, window: str, stations: list[str], seed: int, dead: str = ""
    ) -> dict[str, list[tuple[str, PairCorrelated]]]:
        """Products and row objects of a window, as correlators write them; returns the events per object.

        Pairs with station ``dead`` are skipped (no CCF, a PairCorrelated with a reason and no key).
        """
        rng = np.random.default_rng(seed)
        for s in stations:
            self.store.put(f"{self.ns}prep/{window}/{s}.npz", encode_product(_product(s, window, self.params)))
        n_lags = 2 * self.params.maxlag + 1
        events: dict[str, list[tuple[str, PairCorrelated]]] = {}
        for i, row in enumerate(stations[:-1]):
            cols = stations[i + 1 :]
            pairs = tuple((row, c) for c in cols if dead not in (row, c))
            skipped = tuple(SkippedPair(row, c, "no common valid sub-window") for c in cols if dead in (row, c))
            ccfs = rng.standard_normal((len(pairs), n_lags)).astype(np.float32)
            batch = CcfBatch(window, self.params.target_fs, self.params.maxlag, pairs, ccfs, np.full(len(pairs), 5),
                             skipped)  # fmt: skip
            digest = hashlib.sha1("\n".join(cols).encode()).hexdigest()[:12]
            key = f"{self.ns}ccf/{window}/{row}.r{digest}.npz"
            self.store.put(key, encode_ccfs(batch))
            events[key] = []
            for (a, b), ccf in zip(batch.pairs, ccfs, strict=True):
                self.ccfs[(window, pair_key(a, b))] = ccf
                ev = PairCorrelated(window=window, a=a, b=b, key=key, n_subwindows=5)
                events[key].append((f"{window}/{pair_key(a, b)}", ev))
            for sk in skipped:
                ev = PairCorrelated(window=window, a=sk.a, b=sk.b, key="", n_subwindows=0, skipped=sk.reason)
                events[key].append((f"{window}/{pair_key(sk.a, sk.b)}", ev))
        return events

    def announce(self, items: list[tuple[str, PairCorrelated]]) -> None:
        """Publish PairCorrelated events on the results topic."""
        produce(self.stack, self.topics.results, items)  # type: ignore[arg-type]

    def commit_directory(self, window: str, stations: list[str]) -> None:
        """Publish the DirectoryCommitted of a window's products (how the stacker learns its pair count)."""
        directory = f"{self.ns}prep/{window}/"
        files = [f"{directory}{s}.npz" for s in stations]
        produce(
            self.stack,
            self.topics.commits,
            [(directory, DirectoryCommitted(directory=directory, files=files, rule="n_files"))],
        )

    def stack_of(self, pair: str) -> SACTrace | None:
        """The stacker's SAC of ``pair``, or None before its first flush."""
        try:
            return SACTrace.read(io.BytesIO(self.store.get(f"{self.ns}stacks/{pair}.sac")))
        except ObjectNotFound:
            return None

    def windows_in(self, pairs: list[str]) -> list[int]:
        """The window count (``user0``) of each pair's SAC (0 before its first flush)."""
        traces = [self.stack_of(p) for p in pairs]
        return [int(t.user0) if t is not None else 0 for t in traces]

    def expected_mean(self, pair: str, windows: list[str]) -> np.ndarray:
        """The mean CCF of ``pair`` over ``windows``."""
        return np.mean([self.ccfs[(w, pair)].astype(np.float64) for w in windows], axis=0)


def _product(seed_id: str, window: str, params: object) -> StationProduct:
    return StationProduct(
        seed_id=seed_id, window=window, fs=20.0, nfft=64, k0=1, cc_len=32, step=16,
        spectra=np.zeros((1, 4), np.complex64), valid=np.ones(1, bool), gap_fraction=np.zeros(1, np.float32),
        coordinates=COORDS[seed_id],
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
    args = ["stack", "--topic-prefix", unique, "--namespace", unique, "--flush-interval", "0.5"]
    args += ["--checkpoint-interval", "3600"]  # only window completions checkpoint: replay is what is tested

    def start() -> WorkerProcess:
        worker = WorkerProcess(args, log=tmp_path / "stack.log").start().wait_log("stacker ready", 90)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


PAIRS = [pair_key(a, b) for i, a in enumerate(STATIONS[:4]) for b in STATIONS[i + 1 : 4]]


def _flat(events: dict[str, list[tuple[str, PairCorrelated]]]) -> list[tuple[str, PairCorrelated]]:
    return [item for items in events.values() for item in items]


def test_stacks_survive_kill_9_between_and_within_windows(
    stack: Settings,
    topics: TopicNames,
    deployment: Deployment,
    stacker,  # type: ignore[no-untyped-def]
) -> None:
    dep = deployment
    w1, w2, w3, w4 = WINDOWS
    first = stacker()

    # Window 1 complete: its checkpoint (state + offsets) is written at completion.
    ev1 = dep.write_window(w1, STATIONS[:4], seed=1)
    dep.announce(_flat(ev1))
    dep.commit_directory(w1, STATIONS[:4])
    wait_for(lambda: dep.windows_in(PAIRS) == [1] * 6, "window 1 is in every stack", timeout=60)
    wait_for(lambda: dep.store.exists(f"{dep.ns}stacks/_stacker/state.npz"), "the state is checkpointed", 30)
    first.kill9()

    # Window 2 arrives while the stacker is down, with a replay of window 1's events (a duplicate publisher).
    ev2 = dep.write_window(w2, STATIONS, seed=2, dead=STATIONS[4])
    dep.announce(_flat(ev2) + _flat(ev1))
    dep.commit_directory(w2, STATIONS)
    second = stacker()
    wait_for(lambda: dep.windows_in(PAIRS) == [2] * 6, "window 2 is in every stack", timeout=60)

    # Window 3: half its objects, a periodic flush (stacks ahead of the last checkpoint), kill -9, the rest.
    ev3 = dep.write_window(w3, STATIONS[:4], seed=3)
    objects = list(ev3)
    dep.announce(ev3[objects[0]])
    early = [pair_key(a, b) for _, e in ev3[objects[0]] for a, b in [(e.a, e.b)]]
    wait_for(lambda: dep.windows_in(early) == [3] * len(early), "part of window 3 is flushed", timeout=60)
    second.kill9()
    dep.announce([item for key in objects[1:] for item in ev3[key]])
    dep.commit_directory(w3, STATIONS[:4])
    stacker()
    wait_for(lambda: dep.windows_in(PAIRS) == [3] * 6, "window 3 is in every stack", timeout=60)

    # Window 4: a stack that lost (or doubled) part of window 3 in its state, behind SACs written before the
    # kill, shows it now.
    dep.announce(_flat(dep.write_window(w4, STATIONS[:4], seed=4)))
    dep.commit_directory(w4, STATIONS[:4])
    wait_for(lambda: dep.windows_in(PAIRS) == [4] * 6, "window 4 is in every stack", timeout=60)
    time.sleep(2.0)  # a late double count would show up as a fifth window
    _assert_stacks(dep, [w1, w2, w3, w4])
    letters = read_events(stack, topics.dlq, until=lambda ev: True, timeout=5, settle=1)
    assert not [e for e in letters if isinstance(e, DeadLetter)], letters


def _assert_stacks(dep: Deployment, windows: list[str]) -> None:
    for pair in PAIRS:
        trace = dep.stack_of(pair)
        assert trace is not None and int(trace.user0) == len(windows), pair
        np.testing.assert_allclose(trace.data, dep.expected_mean(pair, windows), rtol=1e-5, atol=1e-6)
        assert trace.b == pytest.approx(-dep.params.maxlag_s) and trace.delta == pytest.approx(1 / dep.params.target_fs)
        a, b = pair.split("__")
        assert trace.evla == pytest.approx(COORDS[a].latitude) and trace.stlo == pytest.approx(COORDS[b].longitude)
        assert trace.dist is not None and trace.dist > 0
    assert all(dep.stack_of(pair_key(a, STATIONS[4])) is None for a in STATIONS[:4]), "skipped pairs have no stack"


def test_an_unreadable_object_is_dead_lettered_and_its_window_still_completes(
    stack: Settings,
    topics: TopicNames,
    deployment: Deployment,
    stacker,  # type: ignore[no-untyped-def]
) -> None:
    dep = deployment
    w = WINDOWS[0]
    events = dep.write_window(w, STATIONS[:4], seed=5)
    broken = next(iter(events))  # row S0: pairs S0-S1, S0-S2, S0-S3
    dep.store.put(broken, b"not a CCF batch")
    stacker()
    dep.announce(_flat(events))
    dep.commit_directory(w, STATIONS[:4])
    good = [p for p in PAIRS if not p.startswith(f"{STATIONS[0]}__")]
    wait_for(lambda: dep.windows_in(good) == [1] * len(good), "the readable pairs are stacked", timeout=60)
    state_key = f"{dep.ns}stacks/_stacker/state.npz"
    wait_for(lambda: dep.store.exists(state_key), "the window's checkpoint", timeout=30)
    state = StackerState.decode(dep.store.get(state_key))
    assert state.windows[w].done and len(state.windows[w].skipped) == 3
    letters = read_events(stack, topics.dlq, until=lambda ev: len(ev) >= 3, timeout=30)
    assert len(letters) == 3 and all(isinstance(e, DeadLetter) and e.source == broken for e in letters)
    assert all(dep.stack_of(p) is None for p in PAIRS if p.startswith(f"{STATIONS[0]}__"))
