"""Streaming export for a pipeline run: stack CCFs as they are announced, write each pair's SAC when final.

Waiting for the last pair and then fetching every CCF object, stacking and writing 8,385 SAC files is a serial
tail of several seconds. The run already follows every PairCorrelated, so the collector fetches each CCF
object the moment its first pair is announced (a thread pool; the data plane streams too), adds it to the
stacks, and writes a pair's SAC file as soon as the pair is final: the pair's CCF of every window that will
have one has been stacked.

**The objects are the truth, the events only say where to look.** What a run counts as done is what the
CCF objects of its namespace hold, never what an event claims: a (window, pair) is stacked once whichever
object or event brings it (:class:`~consumers.stackstate.StackerState` keeps a bitmap per window), a pair the
correlator skipped counts as accounted only when its own object lists the skip, and an event naming an object
that is missing, unreadable or foreign costs a line in the report, not the run. A stack that gains a window
after its SAC was written is written again.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from consumers.stackstate import StackerState
from contracts.errors import TransientError
from dsp.ccf import decode_ccfs
from dsp.errors import DspError
from dsp.params import ProcessingParams
from dsp.product import Coordinates
from dsp.seed import parse_pair_key
from storage import ObjectStore
from storage.errors import StorageError
from xcorrflow.sac import ccf_sac_bytes, write_sac


class StackCollector:
    """Fetches CCF objects, keeps running stacks and writes final SAC stacks, in background threads."""

    def __init__(
        self,
        store: ObjectStore,
        params: ProcessingParams,
        output_dir: Path,
        stations: Iterable[str],
        coordinates: Callable[[str], Coordinates | None],
        threads: int = 4,
        nice: int = 0,
    ) -> None:
        """Collect into ``output_dir`` the stacks of every pair of ``stations`` found in ``store`` (a run's
        namespace); pairs of other stations are ignored."""
        self.stations = frozenset(stations)
        self.state = StackerState(params.target_fs, params.maxlag, phase=params.stack == "pws")
        self.store, self.params, self.output_dir, self.coordinates = store, params, output_dir, coordinates
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="collector", initializer=_lower_priority, initargs=(nice,)
        )
        self._offered: set[str] = set()
        self._futures: list[Future[None]] = []
        self._written: dict[str, int] = {}  # pair key -> windows in its SAC file
        self.failures: list[dict[str, str]] = []  # objects an event named that could not be used, and why

    @property
    def bank(self) -> object:
        """The running stacks (:class:`dsp.stack.StackBank`)."""
        return self.state.bank

    @property
    def written(self) -> dict[str, int]:
        """Pair keys whose SAC file is written, with the number of windows in it."""
        return dict(self._written)

    def offer(self, object_key: str) -> None:
        """A PairCorrelated named this CCF object (a key of the collector's store): fetch and stack it once."""
        if not object_key or object_key in self._offered:
            return
        self._offered.add(object_key)
        if not object_key.startswith("ccf/"):
            self._fail(object_key, "not a CCF object of this run's namespace")
            return
        self._futures.append(self._pool.submit(self._stack, object_key))

    def _stack(self, object_key: str) -> None:
        try:
            batch = decode_ccfs(self.store.get(object_key), object_key)
        except TransientError:
            raise  # the store stayed away longer than the settings allow: the run fails and says so
        except (StorageError, DspError) as exc:
            self._fail(object_key, f"{type(exc).__name__}: {exc}")
            return
        keep = [i for i, (a, b) in enumerate(batch.pairs) if a in self.stations and b in self.stations]
        ours = replace(
            batch,
            pairs=tuple(batch.pairs[i] for i in keep),
            ccfs=batch.ccfs[keep],
            n_common=batch.n_common[keep],
            skipped=tuple(s for s in batch.skipped if s.a in self.stations and s.b in self.stations),
        )
        with self._lock:
            try:
                self.state.add(ours)
            except DspError as exc:
                self._fail(object_key, f"{type(exc).__name__}: {exc}")
                return
            for skipped in ours.skipped:
                self.state.skip(batch.window, f"{skipped.a}__{skipped.b}")

    def _fail(self, object_key: str, reason: str) -> None:
        with self._lock:
            self.failures.append({"source": object_key, "reason": reason})

    def accounted(self, window: str, pair: str) -> bool:
        """True when the window's CCF of ``pair`` is in its stack, or its object lists it as skipped."""
        with self._lock:
            return self.state.included(window, pair)

    def skips(self) -> dict[tuple[str, str], int]:
        """How many windows each pair was skipped in, by pair key ``(A, B)``: confirmed by the objects."""
        counts: dict[tuple[str, str], int] = {}
        with self._lock:
            for progress in self.state.windows.values():
                for key in progress.skipped:
                    a, b = parse_pair_key(key)
                    counts[(a, b)] = counts.get((a, b), 0) + 1
        return counts

    def write_final(self, windows_of_pair: Callable[[str], int]) -> int:
        """Write the SAC stack of every pair that has all its windows, or that gained one since its SAC was
        written; returns how many were written now.

        Args:
            windows_of_pair: how many windows a pair key will have CCFs in (called under the collector's lock:
                it must not call the collector).
        """
        self.raise_failures()
        bank = self.state.bank
        with self._lock:
            counts = bank.count[: len(bank.keys)].copy()
            ready = [
                (row, key)
                for row, key in enumerate(bank.keys)
                if counts[row] > self._written.get(key, 0)
                and (key in self._written or counts[row] >= windows_of_pair(key))
            ]
            rows = np.array([row for row, _ in ready], dtype=np.int64)
            data = bank.stacks(self.params.stack, self.params.pws_power, rows=rows)
            stacks = [(key, data[i], int(counts[row])) for i, (row, key) in enumerate(ready)]
            self._written.update((key, n) for key, _, n in stacks)
        for key, stack, n in stacks:
            self._futures.append(self._pool.submit(self._write, key, stack, n))
        return len(stacks)

    def _write(self, key: str, stack: np.ndarray, n_windows: int) -> None:
        a, b = parse_pair_key(key)
        content = ccf_sac_bytes(
            stack,
            self.params.target_fs,
            a,
            b,
            coords_a=self.coordinates(a),
            coords_b=self.coordinates(b),
            n_windows=n_windows,
            kind=self.params.stack,
        )
        write_sac(self.output_dir / f"{key}.sac", content)

    def raise_failures(self) -> None:
        """Re-raise the first error of a finished background job (a store outage, a failed write)."""
        for future in [f for f in self._futures if f.done()]:
            future.result()
        self._futures = [f for f in self._futures if not f.done()]

    def drain(self) -> None:
        """Wait for every fetch and write submitted so far.

        Raises:
            Exception: the first error of a background job.
        """
        for future in list(self._futures):
            future.result()
        self.raise_failures()

    def finish(self, windows_of_pair: Callable[[str], int] | None = None) -> int:
        """Wait for every fetch, write the stacks not written yet, wait for the writes; returns pairs written.

        Args:
            windows_of_pair: with it, only pairs holding all their windows are written (a run that failed keeps
                what is final, and nothing that is not); without it, whatever a pair has is final (a run that
                completed, e.g. with late data no plan foresaw).
        """
        try:
            self.drain()
            self.write_final(windows_of_pair or (lambda _key: 1))
            self.drain()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
        return len(self._written)


def _lower_priority(nice: int) -> None:
    """Lower the calling thread's CPU priority (Linux schedules threads one by one)."""
    if nice > 0:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
