"""Streaming export for a pipeline run: stack CCFs as they are announced, write each pair's SAC when final.

Waiting for the last pair and then fetching every CCF object, stacking and writing 8,385 SAC files is a serial
tail of several seconds. The run already follows every PairCorrelated, so the collector fetches each CCF
object the moment its first pair is announced (a thread pool; the data plane streams too), adds it to the
stacks, and writes a pair's SAC file as soon as the pair is final: every window of the run has committed
and the pair's CCF of every window holding both of its stations has been stacked.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from dsp.ccf import decode_ccfs
from dsp.params import ProcessingParams
from dsp.product import Coordinates
from dsp.seed import pair_key, parse_pair_key
from dsp.stack import StackBank
from storage import ObjectStore
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
        ids = sorted(set(stations))
        keys = [pair_key(a, b) for i, a in enumerate(ids) for b in ids[i + 1 :]]
        self.bank = StackBank(keys, 2 * params.maxlag + 1, phase=params.stack == "pws")
        self.store, self.params, self.output_dir, self.coordinates = store, params, output_dir, coordinates
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="collector", initializer=_lower_priority, initargs=(nice,)
        )
        self._offered: set[str] = set()
        self._futures: list[Future[None]] = []
        self._written: set[str] = set()

    def offer(self, object_key: str) -> None:
        """A PairCorrelated named this CCF object: fetch and stack it once, in the background."""
        if object_key and object_key not in self._offered:
            self._offered.add(object_key)
            self._futures.append(self._pool.submit(self._stack, object_key))

    def _stack(self, object_key: str) -> None:
        batch = decode_ccfs(self.store.get(object_key), object_key)
        if batch.pairs:
            with self._lock:
                self.bank.add(batch.keys, batch.ccfs)

    def write_final(self, windows_of_pair: Callable[[str], int]) -> int:
        """Write the SAC stack of every pair that has all its windows; returns how many were written now.

        Args:
            windows_of_pair: how many windows a pair key will have CCFs in.
        """
        self.raise_failures()
        with self._lock:
            ready = [
                (row, key)
                for row, key in enumerate(self.bank.keys)
                if key not in self._written and 0 < self.bank.count[row] >= windows_of_pair(key)
            ]
            rows = np.array([row for row, _ in ready], dtype=np.int64)
            data = self.bank.stacks(self.params.stack, self.params.pws_power, rows=rows)
            stacks = [(key, data[i], int(self.bank.count[row])) for i, (row, key) in enumerate(ready)]
            self._written.update(key for _, key in ready)
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
        """Re-raise the first error of a finished background job (a fetch or a write)."""
        for future in [f for f in self._futures if f.done()]:
            future.result()
        self._futures = [f for f in self._futures if not f.done()]

    def finish(self) -> int:
        """Wait for every fetch, write every stack not written yet, wait for the writes; returns pairs written.

        The run is over, so whatever a pair has is final (e.g. late data no plan foresaw).
        """
        for future in list(self._futures):
            future.result()
        self.write_final(lambda _key: 1)
        for future in list(self._futures):
            future.result()
        self._pool.shutdown()
        return len(self._written)


def _lower_priority(nice: int) -> None:
    """Lower the calling thread's CPU priority (Linux schedules threads one by one)."""
    if nice > 0:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
