"""What the stacker knows of each window, free of Kafka and of the store: which pairs it expects, which slots
hold them, which are already in the stacks, and which ranges of the stacks are ready to take them.

A window's *expected* pairs are those among the stations its DirectoryCommitted lists. Its *received* pairs
come from the manifests of its row tasks (:mod:`results.manifest`): a pair with a CCF (``n_common > 0``), one
skipped for want of common data, or one whose task failed; a pair whose announced CCF the stacker cannot read
back counts as failed too. A *group* is a range of canonical pair indices (a
run of stack chunks that fits the stacker's memory budget); it is ready in a window once every expected pair
in it has been received and some received CCF is not in the stacks yet. Everything here is deterministic, so
a stacker that restarts rebuilds the same plan from its state records and the manifests. The sets are numpy
arrays: at 520 stations a window has 134,940 pairs, and the stacker asks about them every loop turn.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field

import numpy as np

from results.layout import pair_indices
from results.manifest import FAILED, TaskManifest


@dataclass
class Received:
    """Every received pair of a window, sorted by canonical index: its slot and its common sub-windows."""

    pairs: np.ndarray  # int64, sorted
    slots: np.ndarray  # int64
    n_common: np.ndarray  # int32 (> 0 CCF, 0 skipped, FAILED)


@dataclass
class WindowPlan:
    """One window: expected stations, the tasks received, the pairs already stacked."""

    window: str
    expected: list[str] | None = None  # None until the window's directory commits
    tasks: dict[tuple[str, int], TaskManifest] = field(default_factory=dict)  # (row, slot) -> manifest
    included: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # by canonical index
    unreadable: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # announced CCF unreadable
    done: bool = False  # every expected pair is accounted for, and the window's index is written
    _received: Received | None = field(default=None, repr=False)
    _expected: tuple[int, np.ndarray] | None = field(default=None, repr=False)  # (registry size, pairs)

    def add_task(self, manifest: TaskManifest) -> bool:
        """Record a task's manifest; False when it was known already."""
        key = (manifest.row, manifest.slot)
        if key in self.tasks:
            return False
        self.tasks[key] = manifest
        self._received = None
        return True

    def set_expected(self, stations: list[str]) -> None:
        """The stations the window's directory commit lists (a later, larger commit adds to them)."""
        self.expected = sorted(set(self.expected or []) | set(stations))
        self._expected = None

    def received(self) -> Received:
        """The received pairs (first task wins if two name the same pair)."""
        if self._received is None:
            ms = list(self.tasks.values())
            pairs = np.concatenate([np.asarray(m.pair_index, np.int64) for m in ms]) if ms else np.zeros(0, np.int64)
            slots = np.concatenate([m.slot + np.arange(len(m.columns)) for m in ms]) if ms else np.zeros(0, np.int64)
            counts = np.concatenate([np.asarray(m.n_common, np.int32) for m in ms]) if ms else np.zeros(0, np.int32)
            pairs, first = np.unique(pairs, return_index=True)
            self._received = Received(pairs, slots[first].astype(np.int64), counts[first])
        return self._received

    def expected_pairs(self, registry: dict[str, int]) -> np.ndarray | None:
        """Sorted canonical indices of the expected pairs among the stations with a known registry index; None
        until the window's directory commits."""
        if self.expected is None:
            return None
        if self._expected is None or self._expected[0] != len(registry):
            idx = np.array(sorted(registry[s] for s in self.expected if s in registry), dtype=np.int64)
            i, j = np.triu_indices(idx.size, k=1)
            self._expected = (len(registry), np.sort(pair_indices(idx[j], idx[i])))
        return self._expected[1]

    def known_below(self, registry: dict[str, int]) -> int | float:
        """The canonical index below which every expected pair is known: an expected station whose registry
        index no manifest has told yet takes an index no known station has, so each of its pairs lies at or
        beyond ``m(m-1)/2`` for the first such free index ``m`` (infinite when every station is known)."""
        if self.expected is None:
            return 0
        if all(s in registry for s in self.expected):
            return math.inf
        taken = set(registry.values())
        free = next(i for i in range(len(taken) + 1) if i not in taken)
        return free * (free - 1) // 2

    def is_included(self, pairs: np.ndarray) -> np.ndarray:
        """Whether each canonical pair's CCF of this window is in the stacks."""
        return _lookup(self.included, pairs)

    def is_unreadable(self, pairs: np.ndarray) -> np.ndarray:
        """Whether each canonical pair's announced CCF of this window could not be read (it counts as failed)."""
        return _lookup(self.unreadable, pairs)

    def include(self, pairs: np.ndarray) -> None:
        """Mark pairs as stacked."""
        self.included = _mark(self.included, pairs)

    def mark_unreadable(self, pairs: np.ndarray) -> None:
        """Mark pairs whose CCF chunk could not be read: they are never stacked, and count as failed."""
        self.unreadable = _mark(self.unreadable, pairs)

    def todo(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Received CCFs of pairs in ``[start, stop)`` not yet stacked: ``(pairs, slots)``, sorted by pair."""
        r = self.received()
        lo, hi = np.searchsorted(r.pairs, [start, stop])
        pairs, slots, counts = r.pairs[lo:hi], r.slots[lo:hi], r.n_common[lo:hi]
        keep = (counts > 0) & ~self.is_included(pairs) & ~self.is_unreadable(pairs)
        return pairs[keep], slots[keep]

    def ready(self, start: int, stop: int, registry: dict[str, int]) -> bool:
        """Every expected pair in ``[start, stop)`` received, and some CCF there not stacked yet."""
        expected = self.expected_pairs(registry)
        if expected is None or stop > self.known_below(registry):
            return False
        lo, hi = np.searchsorted(expected, [start, stop])
        if not np.isin(expected[lo:hi], self.received().pairs, assume_unique=True).all():
            return False
        return bool(self.todo(start, stop)[0].size)

    def accounted(self, registry: dict[str, int]) -> tuple[int, int, int, int]:
        """``(stacked, skipped, failed, expected)`` pairs of the window (expected -1 while unknown)."""
        r = self.received()
        expected = self.expected_pairs(registry)
        mask = np.ones(r.pairs.size, bool) if expected is None else np.isin(r.pairs, expected, assume_unique=True)
        counts, pairs = r.n_common[mask], r.pairs[mask]
        included = self.is_included(pairs)
        lost = (counts > 0) & ~included & self.is_unreadable(pairs)
        stacked = int(included.sum())
        skipped, failed = int((counts == 0).sum()), int((counts == FAILED).sum() + lost.sum())
        return stacked, skipped, failed, -1 if expected is None else int(expected.size)

    def complete(self, registry: dict[str, int]) -> bool:
        """Every expected pair is stacked, skipped or failed (every expected station's index known)."""
        stacked, skipped, failed, expected = self.accounted(registry)
        known = self.known_below(registry) == math.inf
        return known and expected >= 0 and stacked + skipped + failed >= expected

    # --- state records -------------------------------------------------------------------------------------
    def record(self) -> bytes:
        """The durable part (the tasks are re-read from their manifests): 17 KB of bitmap at 520 stations."""
        record = {"expected": self.expected, "included": _pack(self.included), "done": self.done}
        if self.unreadable.any():
            record["unreadable"] = _pack(self.unreadable)
        return json.dumps(record).encode()

    @classmethod
    def from_record(cls, window: str, value: bytes) -> WindowPlan:
        """Inverse of :meth:`record`."""
        data = json.loads(value)
        return cls(
            window,
            data["expected"],
            included=_unpack(data["included"]),
            unreadable=_unpack(data.get("unreadable", "")),
            done=bool(data["done"]),
        )


def _lookup(bits: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    inside = pairs < bits.size
    out = np.zeros(pairs.size, dtype=bool)
    out[inside] = bits[pairs[inside]]
    return out


def _mark(bits: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    if pairs.size == 0:
        return bits
    top = int(pairs.max()) + 1
    if bits.size < top:
        bits = np.concatenate([bits, np.zeros(top - bits.size, dtype=bool)])
    bits[pairs] = True
    return bits


def _pack(bits: np.ndarray) -> str:
    return base64.b64encode(np.packbits(bits, bitorder="little").tobytes()).decode()


def _unpack(packed: str) -> np.ndarray:
    return np.unpackbits(np.frombuffer(base64.b64decode(packed), np.uint8), bitorder="little").astype(bool)


def groups(n_pairs: int, group_pairs: int) -> list[tuple[int, int]]:
    """The stacker's groups: ``[start, stop)`` ranges of ``group_pairs`` canonical pairs covering ``n_pairs``."""
    return [(start, min(start + group_pairs, n_pairs)) for start in range(0, n_pairs, group_pairs)]
