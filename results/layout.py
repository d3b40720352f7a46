"""The layout inside xcorrflow's results: one Zarr v3 hierarchy per deployment (or run), written chunk by chunk.

Where the hierarchy's root sits (``<ns>results.zarr`` in the bucket, ``OUT/results.zarr`` on disk) is
:mod:`storage.layout`; this module owns the paths inside it and the pair geometry.

```
<root>.zarr/                        group; attrs: processing parameters and provenance
  windows/<window id>/              one group per processing window; attrs: start time, fs, maxlag
    ccf        (slot, lag) float32  per-window CCFs; each chunk of CHUNK_PAIRS slots is written by one task
    lag        (lag,)      float64  lag in seconds, -maxlag/fs .. +maxlag/fs, zero at the centre sample
    pair, a, b, n_common, pair_index, distance_km (slot,)   what each slot holds (written once the window is stacked)
  stacks/                           running stacks over windows
    linear     (pair, lag) float32  running mean of the pair's CCFs: the linear stack
    phase      (pair, lag) complex64  running mean of unit phasors (with stack = pws): pws = linear * |phase|**nu
    count      (pair,)     int32    windows in each stack
    pair, a, b (pair,)     str      SEED ids with A < B: the peak sits at arrival(B) - arrival(A)
    lag        (lag,)      float64
  stations/                         one row per registered station
    station (station,) str, latitude, longitude, elevation_m (station,) float64
```

**Pairs and slots.** A deployment's stations get a registry index in the order they are first seen (the pair
scheduler assigns it, :mod:`consumers.pairing`). The pair of stations with indices i > j has the canonical
index ``p = i(i-1)/2 + j``: the stacks' pair axis is the lower triangle of the station matrix, row by row, and
grows at its end when a station joins. In a window the scheduler gives each row task a range of *slots* that
starts on a chunk boundary, so each chunk of the window's ``ccf`` array has exactly one writer and correlators
need no coordination; a task's last chunk is padded with NaN. A task's columns are sorted by canonical index,
so its chunks fall into few stack chunks, and a window whose stations arrive in registry order (the first
one, and every cnf or barrier window) maps slot ranges onto stack ranges one to one.

**Codecs.** Arrays use the ``bytes`` codec only: float32 noise does not compress, and the S3 server's and the
workers' CPU is what a run spends. Readers: zarr-python and ``xarray.open_zarr(root, group=...)``.
"""

from __future__ import annotations

import math

import numpy as np

# registry indices a manifest may give: the stacker's plan of a window is dense by canonical pair (15 bytes
# each), so this bounds what a forged manifest can make it allocate (3 GB); at +-200 s and 20 Hz, the stacks of
# this many stations would take 6.4 PB
MAX_STATIONS = 20_000
CHUNK_PAIRS = 64  # slots per chunk of a window's ccf array: 2 MB at +-200 s and 20 Hz
STACK_CHUNK_PAIRS = 128  # pairs per chunk of the stack arrays: 4 MB linear
WINDOWS = "windows"
STACKS = "stacks"
STATIONS = "stations"


def pair_index(i: int, j: int) -> int:
    """Canonical index of the pair of registry indices ``i`` and ``j`` (in either order).

    Raises:
        ValueError: the indices are equal or negative.
    """
    hi, lo = (i, j) if i > j else (j, i)
    if lo < 0 or hi == lo:
        raise ValueError(f"not a pair of distinct registry indices: {i}, {j}")
    return hi * (hi - 1) // 2 + lo


def pair_indices(i: np.ndarray | int, j: np.ndarray) -> np.ndarray:
    """Vectorised :func:`pair_index`, without checks."""
    hi, lo = np.maximum(i, j).astype(np.int64), np.minimum(i, j).astype(np.int64)
    return hi * (hi - 1) // 2 + lo


def stations_of(p: int) -> tuple[int, int]:
    """The registry indices ``(i, j)``, ``i > j``, of canonical pair ``p``."""
    i = (1 + math.isqrt(1 + 8 * p)) // 2
    while i * (i - 1) // 2 > p:
        i -= 1
    return i, p - i * (i - 1) // 2


def stations_of_pairs(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised :func:`stations_of`: ``(i, j)``, ``i > j``, of each canonical pair in ``p``."""
    p = np.asarray(p, dtype=np.int64)
    i = ((1 + np.sqrt(1 + 8 * p.astype(np.float64))) // 2).astype(np.int64)
    i -= i * (i - 1) // 2 > p  # the float square root may land one off either way
    i += (i + 1) * i // 2 <= p
    return i, p - i * (i - 1) // 2


def n_pairs(n_stations: int) -> int:
    """Pairs among ``n_stations`` registered stations: the length of the stacks' pair axis."""
    return n_stations * (n_stations - 1) // 2


def slots_for(n: int, chunk: int = CHUNK_PAIRS) -> int:
    """Slots a task of ``n`` pairs takes: whole chunks, at least one."""
    return max(1, -(-n // chunk)) * chunk


def window_group(window: str) -> str:
    """Path of one window's group inside the hierarchy."""
    return f"{WINDOWS}/{window}"
