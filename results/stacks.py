"""Running stacks in a result hierarchy: ``stacks/`` (pair, lag), updated chunk by chunk as windows come in.

The arrays hold the running **mean** (``linear``, the linear stack), the running mean of unit phasors
(``phase``, when the stack kind is pws: ``pws = linear * |phase| ** nu``) and the number of windows per pair
(``count``), so a reader gets a stack without dividing anything. Chunks are :data:`STACK_CHUNK_PAIRS`
canonical pairs (:mod:`results.layout`); one stacker writes them, whole, one object each.

**Crash semantics** (used by :mod:`consumers.stacker`): before it rewrites a set of chunks for a window the
stacker records the CRC-32 of each chunk as it was (:func:`fingerprint`). An object PUT is atomic, so after a
crash each chunk is either the old one or the new one: a chunk whose CRC still matches is updated again, one
whose CRC moved already holds the window. Chunks are written phase, linear, then count, so a chunk whose
``count`` moved is complete. A window is thus added once to every pair, never twice, never half.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import zarr

from contracts.params import ProcessingParams
from dsp.correlate import lag_axis
from dsp.product import Coordinates
from dsp.stack import unit_phasors
from results.errors import LayoutMismatch
from results.layout import STACK_CHUNK_PAIRS, STACKS, STATIONS, n_pairs, stations_of
from results.zarrio import require, subgroup, values

ARRAYS = ("phase", "linear", "count")  # the write order of one chunk's arrays (see the module docstring)


@dataclass
class StackChunk:
    """One chunk of the stacks: ``linear`` [n, lags] float32, ``count`` [n] int32, ``phase`` [n, lags] or None."""

    index: int
    linear: np.ndarray
    count: np.ndarray
    phase: np.ndarray | None = None

    def add(self, rows: np.ndarray, ccfs: np.ndarray) -> None:
        """Add one window's CCFs to the pairs at local ``rows`` (distinct) of this chunk: running means."""
        if rows.size == 0:
            return
        n = self.count[rows]
        weight = (1.0 / (n + 1)).astype(np.float32)[:, None]
        _update_mean(self.linear, rows, n == 0, ccfs, weight)
        if self.phase is not None:
            _update_mean(self.phase, rows, n == 0, unit_phasors(ccfs).astype(np.complex64), weight)
        self.count[rows] += 1

    def arrays(self) -> dict[str, np.ndarray]:
        """The chunk's arrays by name."""
        out = {"linear": self.linear, "count": self.count}
        if self.phase is not None:
            out["phase"] = self.phase
        return out


def _update_mean(
    means: np.ndarray, rows: np.ndarray, first: np.ndarray, values: np.ndarray, weight: np.ndarray
) -> None:
    """``means[rows] += (values - means[rows]) * weight``, a row's first value replacing whatever the fill held.

    Rows that are one ascending run (a whole chunk, or a station's new pairs) are updated in place through a
    slice; others are gathered and scattered back. Either way one temporary of the rows' size, against four for
    ``(mean * n + value) / (n + 1)``: a 128 x 8001 float32 chunk takes 0.95 ms for its first window instead of
    3.1, and 0.75 instead of 2.5 for later ones.
    """
    one_run = rows[-1] - rows[0] + 1 == rows.size and (rows.size == 1 or bool((np.diff(rows) == 1).all()))
    block = means[rows[0] : rows[-1] + 1] if one_run else means[rows]
    block[first] = 0
    delta = np.subtract(values, block, dtype=block.dtype)
    delta *= weight
    block += delta
    if not one_run:
        means[rows] = block


def fingerprint(values: np.ndarray) -> int:
    """CRC-32 of an array's bytes (NaN-filled chunks included): how a stacker tells old chunks from new.

    zlib reads the array's own buffer: no copy of the chunk (1.8 GB/s here, against 1.1 through ``tobytes``).
    """
    return zlib.crc32(np.ascontiguousarray(values).data)


class StackStore:
    """The ``stacks/`` and ``stations/`` groups of one hierarchy."""

    def __init__(self, root: zarr.Group, params: ProcessingParams, chunk_pairs: int = STACK_CHUNK_PAIRS) -> None:
        """Open (or create) the stacks of ``root``; ``chunk_pairs`` applies to new arrays only (an existing
        hierarchy keeps its chunking)."""
        self.root = root
        self.params = params
        self.n_lags = 2 * params.maxlag + 1
        self.phase = params.stack == "pws"
        self.group = root.require_group(STACKS)
        self._check()
        self.group.attrs.update(
            {"fs": params.target_fs, "maxlag_s": params.maxlag_s, "stack": params.stack, "pws_power": params.pws_power}
        )
        lags = require(
            self.group, "lag", shape=(self.n_lags,), chunks=(self.n_lags,), dtype="float64", dimension_names=("lag",)
        )
        lags[:] = lag_axis(params.target_fs, params.maxlag)
        existing = self.group.get("count")
        self.chunk_pairs = int(existing.chunks[0]) if isinstance(existing, zarr.Array) else chunk_pairs
        self.arrays = {name: self._require(name) for name in ARRAYS if name != "phase" or self.phase}
        self.labels = {name: self._require_labels(name) for name in ("pair", "a", "b")}

    def _check(self) -> None:
        attrs = self.group.attrs.asdict()
        if attrs and (attrs.get("fs"), attrs.get("maxlag_s"), attrs.get("stack")) != (
            self.params.target_fs,
            self.params.maxlag_s,
            self.params.stack,
        ):
            raise LayoutMismatch(
                f"the stacks hold {attrs.get('stack')} stacks at {attrs.get('fs')} Hz ±{attrs.get('maxlag_s')} s; "
                f"the settings want {self.params.stack} at {self.params.target_fs} Hz ±{self.params.maxlag_s} s"
            )

    def _require(self, name: str) -> zarr.Array:
        if name == "count":
            return require(
                self.group,
                name,
                shape=(0,),
                chunks=(self.chunk_pairs,),
                dtype="int32",
                fill_value=0,
                dimension_names=("pair",),
            )
        dtype = "complex64" if name == "phase" else "float32"
        array = require(
            self.group,
            name,
            shape=(0, self.n_lags),
            chunks=(self.chunk_pairs, self.n_lags),
            dtype=dtype,
            fill_value=np.nan,
            compressors=None,
            dimension_names=("pair", "lag"),
        )
        array.attrs["coordinates"] = "pair a b"
        return array

    def _require_labels(self, name: str) -> zarr.Array:
        return require(self.group, name, shape=(0,), chunks=(self.chunk_pairs,), dtype=str, dimension_names=("pair",))

    @property
    def n_pairs(self) -> int:
        """Length of the pair axis."""
        return int(self.arrays["count"].shape[0])

    @property
    def n_chunks(self) -> int:
        """Chunks along the pair axis."""
        return -(-self.n_pairs // self.chunk_pairs)

    # --- registry ------------------------------------------------------------------------------------------
    def register(self, stations: list[str], coordinates: dict[str, Coordinates | None] | None = None) -> None:
        """Grow the pair axis to the stations of the registry (in registry order) and label the new pairs.

        Raises:
            LayoutMismatch: ``stations`` does not extend the registry already stored.
        """
        known = self.stations()
        if stations[: len(known)] != known:
            raise LayoutMismatch("the station registry of the stacks is not a prefix of the scheduler's")
        if len(stations) == len(known):
            return
        start, end = n_pairs(len(known)), n_pairs(len(stations))
        for name, array in {**self.arrays, **self.labels}.items():
            array.resize((end, *array.shape[1:]))
            del name
        a, b = [], []
        for p in range(start, end):
            i, j = stations_of(p)
            x, y = sorted((stations[i], stations[j]))
            a.append(x)
            b.append(y)
        self.labels["a"][start:end] = np.array(a, dtype=object)
        self.labels["b"][start:end] = np.array(b, dtype=object)
        self.labels["pair"][start:end] = np.array([f"{x}__{y}" for x, y in zip(a, b, strict=True)], dtype=object)
        self._write_stations(stations, coordinates or {})

    def _write_stations(self, stations: list[str], coordinates: dict[str, Coordinates | None]) -> None:
        group = self.root.require_group(STATIONS)
        n = len(stations)
        names = require(group, "station", shape=(n,), chunks=(max(n, 1),), dtype=str, dimension_names=("station",))
        names.resize((n,))
        names[:] = np.array(stations, dtype=object)
        for field in ("latitude", "longitude", "elevation_m"):
            array = require(group, field, shape=(n,), chunks=(max(n, 1),), dtype="float64", fill_value=np.nan,
                                        dimension_names=("station",))  # fmt: skip
            # a station without a position given now keeps the one stored when it registered (a stacker passes
            # the positions of the joining stations only)
            stored = np.asarray(array[:], dtype=np.float64)
            values = [
                getattr(coordinates[s], field) if coordinates.get(s) else stored[k] if k < stored.size else np.nan
                for k, s in enumerate(stations)
            ]
            array.resize((n,))
            array[:] = np.asarray(values, dtype=np.float64)

    def stations(self) -> list[str]:
        """The station registry stored with the stacks (registry order)."""
        group = subgroup(self.root, STATIONS)
        if group is None or "station" not in group:
            return []
        return [str(s) for s in values(group, "station")]

    # --- chunks --------------------------------------------------------------------------------------------
    def read(self, index: int) -> StackChunk:
        """Stack chunk ``index`` (NaN and 0 where no window was added yet)."""
        rows = slice(index * self.chunk_pairs, (index + 1) * self.chunk_pairs)
        phase = self.arrays.get("phase")
        # zarr hands back a fresh array of the stored dtype: asarray keeps it (np.array copied each 4 MB again)
        return StackChunk(
            index,
            np.asarray(self.arrays["linear"][rows], dtype=np.float32),
            np.asarray(self.arrays["count"][rows], dtype=np.int32),
            None if phase is None else np.asarray(phase[rows], dtype=np.complex64),
        )

    def write(self, chunk: StackChunk, names: tuple[str, ...] = ARRAYS) -> None:
        """Write the named arrays of a chunk, in the order of :data:`ARRAYS`."""
        rows = slice(chunk.index * self.chunk_pairs, chunk.index * self.chunk_pairs + len(chunk.count))
        arrays = chunk.arrays()
        for name in ARRAYS:
            if name in names and name in arrays:
                self.arrays[name][rows] = arrays[name]

    def counts(self) -> np.ndarray:
        """Windows in each stack, for every pair."""
        return np.asarray(self.arrays["count"][:], dtype=np.int32)

    def labels_of(self, start: int, stop: int) -> tuple[list[str], list[str]]:
        """SEED ids ``(a, b)`` of pairs ``start:stop``."""
        rows = slice(start, stop)
        return [str(x) for x in values(self.group, "a", rows)], [str(x) for x in values(self.group, "b", rows)]


def apply(
    stacks: StackStore,
    pairs: np.ndarray,
    ccfs: np.ndarray,
    crcs: dict[int, dict[str, int]],
    chunks: dict[int, StackChunk] | None = None,
) -> int:
    """Add one window's CCFs of ``pairs`` (canonical, distinct) to the stacks, exactly once per chunk array.

    ``crcs`` holds each touched chunk's fingerprints as they were *before* (recorded durably by the caller): an
    array whose fingerprint moved already holds the window and is left alone; a chunk whose ``count`` moved is
    complete. So calling this again after a crash anywhere in a previous call finishes the update, never
    doubles it.

    Args:
        stacks: the stack arrays.
        pairs, ccfs: the window's CCFs ``[n, lags]`` of the canonical ``pairs``.
        crcs: chunk index -> {array name: CRC-32 before the update}.
        chunks: the chunks ``crcs`` were just taken from, or None (after a crash). Given, every array of them is
            pending by construction, so neither a read nor a fingerprint is taken again.

    Returns:
        How many chunks were written.
    """
    written = 0
    ordered = pairs.size < 2 or bool((np.diff(pairs) > 0).all())
    for k in sorted(crcs):
        if chunks is not None:
            chunk = chunks[k]
            pending = tuple(chunk.arrays())
        else:
            chunk = stacks.read(k)
            pending = tuple(n for n, a in chunk.arrays().items() if fingerprint(a) == crcs[k].get(n))
        if "count" not in pending:
            continue  # count is written last: this chunk already holds the window
        if ordered:  # the chunk's pairs are one run of the sorted pairs: views, no copy of their CCFs
            lo, hi = np.searchsorted(pairs, [k * stacks.chunk_pairs, (k + 1) * stacks.chunk_pairs])
            mine: slice | np.ndarray = slice(int(lo), int(hi))
        else:
            mine = pairs // stacks.chunk_pairs == k
        chunk.add(pairs[mine] - k * stacks.chunk_pairs, ccfs[mine])
        stacks.write(chunk, pending)
        written += 1
    return written
