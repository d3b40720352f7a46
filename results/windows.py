"""Per-window CCFs: ``windows/<window>/ccf`` (slot, lag), written by row tasks in chunks nobody else writes.

Who writes what (see :mod:`results.layout`):

* the pair scheduler, which allocates slots, creates a window's group and grows its ``ccf`` array to cover the
  slots it hands out, *before* it publishes the tasks (:meth:`WindowStore.ensure`);
* a correlator writes the chunks of its task's slots, padding the last one with NaN (:meth:`WindowStore.write`),
  and only then announces them: a reader never sees a chunk being written (an object PUT is atomic);
* the stacker, once the window is stacked, writes what each slot holds (:meth:`WindowStore.write_index`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr

from contracts.errors import TransientError
from contracts.params import ProcessingParams
from dsp.correlate import SkippedPair, correlate_row, lag_axis
from dsp.product import StationProduct
from dsp.windows import window_start
from results.errors import LayoutMismatch, ResultsError
from results.layout import CHUNK_PAIRS, slots_for, window_group
from results.manifest import FAILED
from results.zarrio import array, require, subgroup, write_whole
from storage.errors import StorageError

# Chunks per read when gathering slots: 32 MB at +-200 s and 20 Hz. zarr fetches the chunks of one read
# concurrently, and the read's block and its fancy-indexed copy are the gather's only memory beyond its result.
GATHER_CHUNKS = 16


@dataclass(frozen=True)
class SlotIndex:
    """What the slots of a window hold: per slot its pair (A < B), canonical pair index and common sub-windows.

    Slots that hold no CCF (padding, skipped or failed pairs) have ``pair_index`` -1 or ``n_common`` 0.
    """

    pair_index: np.ndarray  # int64 per slot, -1 for padding
    a: list[str] = field(default_factory=list)
    b: list[str] = field(default_factory=list)
    n_common: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    distance_km: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))


class WindowStore:
    """The per-window CCF arrays of one result hierarchy."""

    def __init__(self, root: zarr.Group, params: ProcessingParams, chunk_pairs: int = CHUNK_PAIRS) -> None:
        self.root = root
        self.params = params
        self.chunk_pairs = chunk_pairs
        self.n_lags = 2 * params.maxlag + 1
        self._arrays: dict[str, zarr.Array] = {}

    # --- the scheduler -------------------------------------------------------------------------------------
    def ensure(self, window: str, slots: int) -> None:
        """Create the window's group and arrays if needed, and make ``ccf`` at least ``slots`` long.

        Idempotent: a replayed decision writes the same metadata again.

        Raises:
            LayoutMismatch: the window exists with another lag axis.
        """
        array = self._array(window, create=True)
        if array.shape[1] != self.n_lags:
            raise LayoutMismatch(f"window {window} holds CCFs of {array.shape[1]} lags, not {self.n_lags}")
        if array.shape[0] < slots:
            array.resize((slots, self.n_lags))

    def _array(self, window: str, *, create: bool = False) -> zarr.Array:
        cached = self._arrays.get(window)
        if cached is not None:
            return cached
        path = window_group(window)
        if create:
            group = self.root.require_group(path)
            group.attrs.update(self._attributes(window))
            lags = require(
                group, "lag", shape=(self.n_lags,), chunks=(self.n_lags,), dtype="float64", dimension_names=("lag",)
            )
            lags[:] = lag_axis(self.params.target_fs, self.params.maxlag)
            array = require(
                group,
                "ccf",
                shape=(0, self.n_lags),
                chunks=(self.chunk_pairs, self.n_lags),
                dtype="float32",
                fill_value=np.nan,
                compressors=None,
                dimension_names=("slot", "lag"),
                attributes={"long_name": "cross-correlation", "units": "normalised"},
            )
        else:
            array = write_whole(
                zarr.open_array(self.root.store, path=f"{self.root.path}/{path}/ccf".lstrip("/"), mode="r+")
            )
        self._arrays[window] = array
        return array

    def _attributes(self, window: str) -> dict[str, Any]:
        p = self.params
        return {
            "window": window,
            "start": window_start(window, p.window_s),
            "duration_s": p.window_s,
            "fs": p.target_fs,
            "maxlag_s": p.maxlag_s,
        }

    # --- a correlator --------------------------------------------------------------------------------------
    def write(self, window: str, slot: int, ccfs: np.ndarray) -> None:
        """Write a task's CCFs into slots ``slot ..`` (whole chunks, the last one padded with NaN).

        Raises:
            ValueError: ``slot`` does not start a chunk, or the CCFs have another lag count.
        """
        if slot % self.chunk_pairs:
            raise ValueError(f"slot {slot} does not start a chunk of {self.chunk_pairs}")
        if ccfs.ndim != 2 or ccfs.shape[1] != self.n_lags:
            raise ValueError(f"CCFs of shape {ccfs.shape} are not [n, {self.n_lags}]")
        span = max(1, -(-ccfs.shape[0] // self.chunk_pairs)) * self.chunk_pairs
        block = ccfs
        if ccfs.shape[0] != span or ccfs.dtype != np.float32:  # a task block comes padded: no copy of it
            block = np.full((span, self.n_lags), np.nan, dtype=np.float32)
            block[: ccfs.shape[0]] = ccfs
        array = self._array(window)
        if array.shape[0] < slot + span:  # opened before the scheduler grew it
            self._arrays.pop(window)
            array = self._array(window)
        array[slot : slot + span] = block

    # --- readers -------------------------------------------------------------------------------------------
    def read(self, window: str, start: int, stop: int) -> np.ndarray:
        """CCFs of slots ``start:stop`` (NaN where nothing was written)."""
        return np.asarray(self._array(window)[start:stop])

    def chunk_path(self, window: str, chunk: int) -> str:
        """Where chunk ``chunk`` (slots ``chunk * chunk_pairs ..``) of a window's ``ccf`` lives, for messages."""
        return f"{self._array(window).path}/c/{chunk}/0"

    def write_index(self, window: str, index: SlotIndex) -> None:
        """Record what every slot holds, as coordinates of ``ccf`` (once the window is stacked); slots the index
        does not reach (a task's padding) hold no pair."""
        group = subgroup(self.root, window_group(window))
        if group is None:
            raise ResultsError(f"window {window} has no group to index")
        n = max(len(index.pair_index), self._array(window).shape[0])
        pad = n - len(index.pair_index)
        a, b = [*index.a, *[""] * pad], [*index.b, *[""] * pad]
        columns: dict[str, tuple[np.ndarray, str]] = {
            "pair_index": (np.concatenate([np.asarray(index.pair_index, np.int64), np.full(pad, -1)]), "int64"),
            "n_common": (np.concatenate([np.asarray(index.n_common, np.int32), np.zeros(pad, np.int32)]), "int32"),
            "distance_km": (
                np.concatenate([np.asarray(index.distance_km, np.float64), np.full(pad, np.nan)]),
                "float64",
            ),
            "a": (np.array(a, dtype=object), "str"),
            "b": (np.array(b, dtype=object), "str"),
            "pair": (np.array([f"{x}__{y}" if x else "" for x, y in zip(a, b, strict=True)], object), "str"),
        }
        for name, (data, dtype) in columns.items():
            target = require(
                group,
                name,
                shape=(n,),
                chunks=(max(n, 1),),
                dtype=str if dtype == "str" else dtype,
                dimension_names=("slot",),
            )
            if target.shape[0] != n:
                target.resize((n,))
            target[:] = data.astype(target.dtype) if dtype != "str" else data
        array(group, "ccf").attrs["coordinates"] = " ".join(columns)


def gather(
    windows: WindowStore, window: str, slots: np.ndarray, max_chunks: int = GATHER_CHUNKS
) -> tuple[np.ndarray, dict[int, str]]:
    """The CCFs in ``slots`` of a window, in the order of ``slots``, and the chunks that could not be read
    (chunk number -> why): one that does not decode (its slots read as NaN), or one where an asked-for slot
    reads as NaN (a missing chunk reads as its fill value). Each chunk is read once, at most ``max_chunks``
    consecutive chunks per read, so the memory it takes beyond its result is bounded whatever ``slots`` spans.

    Raises:
        TransientError: the store did not answer.
    """
    out = np.empty((slots.size, windows.n_lags), dtype=np.float32)
    chunk = windows.chunk_pairs
    bad: dict[int, str] = {}
    order = np.argsort(slots)
    runs = np.split(order, np.flatnonzero(np.diff(slots[order] // chunk) > 1) + 1)
    for run in runs:
        if run.size == 0:
            continue
        chunks = slots[run] // chunk
        for piece in np.split(run, np.flatnonzero(np.diff((chunks - chunks[0]) // max_chunks)) + 1):
            first, last = int(slots[piece[0]]) // chunk * chunk, int(slots[piece[-1]])
            out[piece] = _read_tolerant(windows, window, first, last + 1, bad)[slots[piece] - first]
    for k in np.unique(slots[np.isnan(out).any(axis=1)] // chunk):
        bad.setdefault(int(k), "an announced CCF reads as NaN (its chunk is missing or holds no CCF there)")
    return out, bad


def _read_tolerant(windows: WindowStore, window: str, start: int, stop: int, bad: dict[int, str]) -> np.ndarray:
    """Slots ``start:stop``; when the block does not decode, chunk by chunk, noting each bad chunk in ``bad``."""
    try:
        return windows.read(window, start, stop)
    except TransientError:
        raise
    except (ValueError, StorageError):
        pass
    chunk = windows.chunk_pairs
    block = np.full((stop - start, windows.n_lags), np.nan, dtype=np.float32)
    for k in range(start // chunk, (stop - 1) // chunk + 1):
        lo, hi = max(k * chunk, start), min((k + 1) * chunk, stop)
        try:
            block[lo - start : hi - start] = windows.read(window, lo, hi)
        except TransientError:
            raise
        except (ValueError, StorageError) as exc:
            bad[k] = f"{type(exc).__name__}: {exc}"
    return block


@dataclass(frozen=True)
class TaskBlock:
    """Columns ``offset .. offset + len(n_common) - 1`` of a row task: their CCFs, one row per column in the
    task's order (NaN where there is none), padded with NaN rows to whole chunks, and each column's common
    sub-window count (0: skipped, :data:`~results.manifest.FAILED`: its product could not be read)."""

    offset: int
    chunks: np.ndarray  # [slots_for(len(n_common)), lags] float32
    n_common: list[int]
    skipped: tuple[SkippedPair, ...]

    @property
    def ccfs(self) -> np.ndarray:
        """The block's CCFs without the padding: ``[len(n_common), lags]``."""
        return self.chunks[: len(self.n_common)]


def task_blocks(
    row: StationProduct,
    columns: list[str],
    products: Mapping[str, StationProduct],
    maxlag: int,
    *,
    min_common: int = 1,
    workers: int | None = None,
    block_columns: int = 2 * CHUNK_PAIRS,
) -> Iterator[TaskBlock]:
    """Correlate a row task ``block_columns`` columns at a time (:func:`dsp.correlate.correlate_row`).

    Each block starts a chunk of the task's slots, so it can be written as soon as it is computed, and what a
    task holds at once no longer grows with its width (a row at N = 520 took ~17 MB per copy of its CCFs, and
    four copies were alive at the peak). A column's CCF does not depend on the others in its block: the blocks
    give the same bits as one call over the whole row. Columns without a product in ``products`` count as
    failed.

    Raises:
        ValueError: ``block_columns`` is not a positive multiple of the chunk size.
        IncompatibleProducts: the products differ, or maxlag does not fit the FFT size.
    """
    if block_columns < 1 or block_columns % CHUNK_PAIRS:
        raise ValueError(f"block_columns must be a positive multiple of {CHUNK_PAIRS}, not {block_columns}")
    for offset in range(0, len(columns), block_columns):
        names = columns[offset : offset + block_columns]
        batch = correlate_row(
            row, [products[n] for n in names if n in products], maxlag, min_common=min_common, workers=workers
        )
        where = {b if a == row.seed_id else a: k for k, (a, b) in enumerate(batch.pairs)}
        chunks = np.full((slots_for(len(names)), 2 * maxlag + 1), np.nan, dtype=np.float32)
        counts = []
        for k, name in enumerate(names):
            found = where.get(name)
            if found is not None:
                chunks[k] = batch.ccfs[found]
            counts.append(FAILED if name not in products else 0 if found is None else int(batch.n_common[found]))
        yield TaskBlock(offset, chunks, counts, batch.skipped)
