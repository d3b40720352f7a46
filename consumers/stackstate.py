"""The stacker's state: running stacks of every pair, and which (window, pair) each stack already holds.

Pure data and codec, no Kafka and no store, so export and tests can use it too. :class:`StackerState` wraps a
:class:`dsp.stack.StackBank` (which grows geometrically as pairs appear) with, per window, a bitmap of the bank
rows already included, the pairs skipped by the correlators, and how many pairs the window will have (from its
DirectoryCommitted). The bitmap is what makes a replayed or duplicated PairCorrelated harmless: a (window,
pair) is added once, whichever event or CCF object brings it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dsp import codec
from dsp.correlate import CcfBatch
from dsp.errors import CorruptProduct, DspError
from dsp.product import Coordinates
from dsp.stack import StackBank

STATE_FORMAT = "xcorrflow.stacker-state"
STATE_VERSION = 1


@dataclass
class WindowProgress:
    """What the stacks hold of one window."""

    included: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # per bank row
    skipped: set[str] = field(default_factory=set)  # pair keys the correlators skipped (or that failed here)
    expected_pairs: int | None = None  # n(n-1)/2 of the stations its DirectoryCommitted lists
    done: bool = False  # every expected pair is included or skipped, and that was flushed

    def has(self, row: int) -> bool:
        """True when bank row ``row`` already holds this window."""
        return row < self.included.size and bool(self.included[row])

    def mark(self, rows: np.ndarray, size: int) -> None:
        """Record rows as included, growing the bitmap to ``size`` rows if needed."""
        if self.included.size < size:
            self.included = np.concatenate([self.included, np.zeros(size - self.included.size, dtype=bool)])
        self.included[rows] = True

    def complete(self) -> bool:
        """True when the pairs included plus skipped reach the expected count."""
        if self.expected_pairs is None:
            return False
        return int(self.included.sum()) + len(self.skipped) >= self.expected_pairs


class StackerState:
    """Running stacks plus the per-window bookkeeping that makes adding a (window, pair) idempotent."""

    def __init__(self, fs: float, maxlag: int, *, phase: bool) -> None:
        """Empty state for CCFs sampled at ``fs`` with lags ``-maxlag..maxlag``; ``phase`` keeps PWS phasors."""
        self.fs = fs
        self.maxlag = maxlag
        self.bank = StackBank([], 2 * maxlag + 1, phase=phase)
        self.windows: dict[str, WindowProgress] = {}
        self.coordinates: dict[str, Coordinates | None] = {}

    def window(self, window: str) -> WindowProgress:
        """The progress record of ``window`` (created empty)."""
        return self.windows.setdefault(window, WindowProgress())

    def included(self, window: str, key: str) -> bool:
        """True when pair ``key`` of ``window`` is in the stacks or was skipped."""
        progress = self.windows.get(window)
        if progress is None:
            return False
        row = self.bank.index.get(key)
        return (row is not None and progress.has(row)) or key in progress.skipped

    def add(self, batch: CcfBatch) -> np.ndarray:
        """Add the pairs of ``batch`` that its window does not hold yet.

        Returns:
            The bank rows that changed.

        Raises:
            DspError: the batch's sampling rate or CCF length differs from the stacks'.
        """
        if batch.fs != self.fs or batch.maxlag != self.maxlag:
            raise DspError(f"CCFs at {batch.fs} Hz ±{batch.maxlag} do not fit stacks at {self.fs} Hz ±{self.maxlag}")
        progress = self.window(batch.window)
        fresh: dict[str, int] = {}
        for i, key in enumerate(batch.keys):
            if key not in fresh and not self.included(batch.window, key):
                fresh[key] = i
        if not fresh:
            return np.zeros(0, dtype=np.int64)
        self.bank.add(list(fresh), batch.ccfs[list(fresh.values())])
        rows = np.array([self.bank.index[k] for k in fresh], dtype=np.int64)
        progress.mark(rows, len(self.bank.keys))
        return rows

    def skip(self, window: str, key: str) -> bool:
        """Record a pair the correlators skipped; False when it was already known."""
        if self.included(window, key):
            return False
        self.window(window).skipped.add(key)
        return True

    def expect(self, window: str, n_stations: int) -> None:
        """Record how many stations (hence pairs) a window has, from its DirectoryCommitted."""
        self.window(window).expected_pairs = n_stations * (n_stations - 1) // 2

    def newly_complete(self) -> list[str]:
        """Windows that just became complete; they are marked done."""
        done = [w for w, p in self.windows.items() if not p.done and p.complete()]
        for w in done:
            self.windows[w].done = True
        return sorted(done)

    # --- codec ------------------------------------------------------------------------------------------------
    def encode(self) -> bytes:
        """Serialise the whole state as one deterministic ``.npz`` (see :mod:`dsp.codec`)."""
        bank, n = self.bank, len(self.bank.keys)
        order = sorted(self.windows)
        included = np.zeros((len(order), n), dtype=bool)
        for i, w in enumerate(order):
            bits = self.windows[w].included[:n]
            included[i, : bits.size] = bits
        header: dict[str, Any] = {
            "fs": self.fs,
            "maxlag": self.maxlag,
            "keys": bank.keys,
            "windows": [_window_header(w, self.windows[w]) for w in order],
            "coordinates": {s: c.to_dict() if c else None for s, c in sorted(self.coordinates.items())},
        }
        arrays = {"count": bank.count, "total": bank.total, "included": included}
        if bank.phasors is not None:
            arrays["phasors"] = bank.phasors
        return codec.pack(STATE_FORMAT, STATE_VERSION, header, arrays)

    @classmethod
    def decode(cls, data: bytes, source: str = "<stacker state>") -> StackerState:
        """Inverse of :meth:`encode`.

        Raises:
            CorruptProduct: damaged or inconsistent bytes.
        """
        header, arrays = codec.unpack(data, STATE_FORMAT, frozenset({STATE_VERSION}), source)
        try:
            fs, maxlag, keys, total = float(header["fs"]), int(header["maxlag"]), list(header["keys"]), arrays["total"]
            if total.shape != (len(keys), 2 * maxlag + 1) or arrays["count"].shape != (len(keys),):
                raise ValueError("keys, counts and sums disagree")
            state = cls(fs, maxlag, phase="phasors" in arrays)
            bank = state.bank = StackBank(keys, 2 * maxlag + 1, phase="phasors" in arrays)
            bank.count[:], bank.total[:] = arrays["count"], total
            if bank.phasors is not None:
                bank.phasors[:] = arrays["phasors"]
            included = arrays["included"]
            if included.shape != (len(header["windows"]), len(keys)):
                raise ValueError("window bitmaps do not match the keys")
            for bits, item in zip(included, header["windows"], strict=True):
                state.windows[str(item["id"])] = _window_from(item, bits)
            state.coordinates = {
                str(s): Coordinates.from_dict(c) if c else None for s, c in header["coordinates"].items()
            }
        except (KeyError, ValueError, IndexError, TypeError) as exc:
            raise CorruptProduct(source, f"inconsistent stacker state: {exc}") from exc
        return state


def _window_header(window: str, p: WindowProgress) -> dict[str, Any]:
    return {"id": window, "expected": p.expected_pairs, "skipped": sorted(p.skipped), "done": p.done}


def _window_from(item: dict[str, Any], bits: np.ndarray) -> WindowProgress:
    expected = item["expected"]
    return WindowProgress(
        included=np.array(bits, dtype=bool),
        skipped={str(k) for k in item["skipped"]},
        expected_pairs=None if expected is None else int(expected),
        done=bool(item["done"]),
    )
