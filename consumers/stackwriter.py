"""The stacker's writes to the object store: SAC stacks of dirty pairs, station coordinates, the state object.

Kept apart from the Kafka loop (:mod:`consumers.stacker`) so that the costly part, thousands of small PUTs per
window, is one place to measure and tune. The local S3 server is latency-bound: PUT throughput grows with
concurrent requests (about 170 PUT/s with 8 threads and 250-450 with 32 on the shared 2-core host), so SACs
are written by a thread pool with an HTTP pool of the same size.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from consumers.stackstate import StackerState
from contracts.settings import Settings
from dsp.params import ProcessingParams
from dsp.product import PRODUCT_EXT
from storage import ObjectStore
from storage.errors import ObjectNotFound
from xcorrflow.export import product_coordinates, stack_sac

STATE_KEY = "stacks/_stacker/state.npz"
_ROWS_PER_CHUNK = 512  # stacks are computed this many rows at a time: bounded temporaries at 8,385 pairs


def open_stacker_store(settings: Settings, connections: int) -> ObjectStore:
    """The settings' S3 bucket with an HTTP pool of ``connections``, one per writing thread.

    The default pool keeps 10 connections; more threads would open and discard a connection per request.

    Raises:
        StorageUnavailable: the server cannot be reached to check the bucket.
    """
    from storage.s3 import S3Store

    return S3Store.from_settings(settings, max_connections=max(10, connections))


class StackWriter:
    """Writes one namespace's stacks, coordinates lookups and state, ``pool`` requests at a time."""

    def __init__(self, store: ObjectStore, namespace: str, params: ProcessingParams, pool: ThreadPoolExecutor) -> None:
        self.store, self.ns, self.params, self.pool = store, namespace, params, pool
        self.state_key = f"{namespace}{STATE_KEY}"

    def load_state(self) -> StackerState | None:
        """The stored state, or None when the namespace has none yet.

        Raises:
            CorruptProduct: the state object is damaged. StorageUnavailable: the store did not answer.
        """
        try:
            return StackerState.decode(self.store.get(self.state_key), self.state_key)
        except ObjectNotFound:
            return None

    def put_state(self, state: StackerState) -> int:
        """Write the state object (one atomic PUT); returns its size in bytes."""
        data = state.encode()
        self.store.put(self.state_key, data)
        return len(data)

    def write_sacs(self, state: StackerState, dirty: set[int]) -> int:
        """Write ``stacks/<A>__<B>.sac`` of every row in ``dirty``, removing rows from it as they are written.

        Returns:
            How many SACs were written.

        Raises:
            StorageUnavailable: a PUT failed after its retries; the rows not yet written stay in ``dirty``.
        """
        rows = np.array(sorted(dirty), dtype=np.int64)
        for start in range(0, rows.size, _ROWS_PER_CHUNK):
            chunk = rows[start : start + _ROWS_PER_CHUNK]
            stacks = state.bank.stacks(self.params.stack, self.params.pws_power, rows=chunk)
            list(self.pool.map(lambda row, data: self._put_sac(state, row, data), chunk.tolist(), stacks))
            dirty.difference_update(chunk.tolist())
        return int(rows.size)

    def resolve_coordinates(self, state: StackerState, where: Mapping[str, str]) -> None:
        """Read the coordinates of stations new to ``state`` from one product each (``where``: station → window)."""
        todo = {s: w for s, w in where.items() if s not in state.coordinates}
        keys = [f"{self.ns}prep/{w}/{s}{PRODUCT_EXT}" for s, w in todo.items()]
        found = self.pool.map(lambda k: product_coordinates(self.store, k), keys)
        for station, coords in zip(todo, found, strict=True):
            state.coordinates[station] = coords

    def _put_sac(self, state: StackerState, row: int, data: np.ndarray) -> None:
        content = stack_sac(state.bank, row, data, self.params, state.coordinates.get)
        self.store.put(f"{self.ns}stacks/{state.bank.keys[row]}.sac", content, content_type="application/x-sac")
