"""What the stacker knows of each window, free of Kafka and of the store: which pairs it expects, which slots
hold them, which are already in the stacks, and which ranges of the stacks are ready to take them.

A window's *expected* pairs are those among the stations its DirectoryCommitted lists. Its *received* pairs
come from the manifests of its row tasks (:mod:`results.manifest`): a pair with a CCF (``n_common > 0``), one
skipped for want of common data, or one whose task failed; a pair whose announced CCF the stacker cannot read
back counts as failed too. A *group* is a range of canonical pair indices (a
run of stack chunks that fits the stacker's memory budget); it is ready in a window once every expected pair
in it has been received and some received CCF is not in the stacks yet. Everything here is deterministic, so
a stacker that restarts rebuilds the same plan from its state records and the manifests. The sets are dense
numpy arrays by canonical pair index: at 520 stations a window has 134,940 pairs (1.8 MB of plan), and the
stacker asks about them every loop turn.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field

import numpy as np

from results.layout import pair_indices, stations_of_pairs
from results.manifest import FAILED, TaskManifest
from results.windows import SlotIndex


@dataclass
class WindowPlan:
    """One window: expected stations, the tasks received, the pairs already stacked.

    The received pairs are dense arrays by canonical index (a pair's slot, -1 until a task names it, and its
    ``n_common``), so a task adds its own pairs only and a question about a group reads that group's range.
    Sorted sets rebuilt from every manifest on every event took 7.0 s of one simulated N = 520 window (0.76 s
    now).
    """

    window: str
    expected: list[str] | None = None  # None until the window's directory commits
    tasks: set[tuple[str, int]] = field(default_factory=set)  # (row, slot) of the tasks received
    slots: int = 0  # the window's slots the tasks received span (the end of the furthest)
    included: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # by canonical index
    unreadable: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # announced CCF unreadable
    done: bool = False  # every expected pair is accounted for, and the window's index is written
    _slot: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)  # by pair; -1: none
    _n_common: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32), repr=False)  # by pair
    # (registry size, expected-pair mask by canonical index, registry indices of the expected stations in it)
    _expected: tuple[int, np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    _below: tuple[int, int | float] | None = field(default=None, repr=False)  # (registry size, known_below)

    def add_task(self, manifest: TaskManifest) -> bool:
        """Record a task's manifest; False when it was known already. A pair another task named first keeps
        that task's slot."""
        key = (manifest.row, manifest.slot)
        if key in self.tasks:
            return False
        self.tasks.add(key)  # the manifest itself is not kept: O(N^2) Python objects, 68 MB at N = 520
        self.slots = max(self.slots, manifest.slot + len(manifest.columns))
        pairs, first = np.unique(np.asarray(manifest.pair_index, np.int64), return_index=True)
        if pairs.size:
            top = int(pairs[-1]) + 1
            self._slot, self._n_common = _grow(self._slot, top, -1), _grow(self._n_common, top, 0)
            new = self._slot[pairs] < 0
            self._slot[pairs[new]] = manifest.slot + first[new]
            self._n_common[pairs[new]] = np.asarray(manifest.n_common, np.int32)[first[new]]
        return True

    def slot_index(self, registry: dict[str, int]) -> SlotIndex:
        """What each slot of the window holds, as the tasks received say (their registry indices are the
        registry's): padding, and the slot of a pair another task named first, hold no pair; a received CCF that
        could not be read back counts as failed."""
        pair_index = np.full(self.slots, -1, dtype=np.int64)
        n_common = np.zeros(self.slots, dtype=np.int32)
        pairs = np.flatnonzero(self._slot >= 0)
        held = self._slot[pairs]
        lost = self.is_unreadable(pairs) & (self._n_common[pairs] > 0)
        pair_index[held] = pairs
        n_common[held] = np.where(lost, FAILED, self._n_common[pairs])
        names = np.full(max(registry.values(), default=-1) + 1, "", dtype=object)  # by registry index
        names[list(registry.values())] = list(registry)
        i, j = stations_of_pairs(pairs)
        first = names[i] < names[j]
        a, b = np.full(self.slots, "", dtype=object), np.full(self.slots, "", dtype=object)
        a[held], b[held] = np.where(first, names[i], names[j]), np.where(first, names[j], names[i])
        return SlotIndex(pair_index, a.tolist(), b.tolist(), n_common, np.full(self.slots, np.nan))

    def set_expected(self, stations: list[str]) -> None:
        """The stations the window's directory commit lists (a later, larger commit adds to them)."""
        self.expected = sorted(set(self.expected or []) | set(stations))
        self._expected = self._below = None

    def expected_mask(self, registry: dict[str, int]) -> np.ndarray | None:
        """Which canonical pairs are expected, among the stations with a known registry index (beyond the
        mask's end: none); None until the window's directory commits. The registry only grows, so each new
        station adds its own pairs."""
        if self.expected is None:
            return None
        if self._expected is None or self._expected[0] != len(registry):
            mask, known = self._expected[1:] if self._expected else (np.zeros(0, bool), np.zeros(0, np.int64))
            idx = np.array(sorted(registry[s] for s in self.expected if s in registry), dtype=np.int64)
            new = np.setdiff1d(idx, known, assume_unique=True)
            if new.size:
                mask = _grow(mask, int(idx[-1]) * (int(idx[-1]) + 1) // 2, False)
                a, b = np.repeat(new, idx.size), np.tile(idx, new.size)
                mask[pair_indices(a[a != b], b[a != b])] = True
            self._expected = (len(registry), mask, idx)
        return self._expected[1]

    def known_below(self, registry: dict[str, int]) -> int | float:
        """The canonical index below which every expected pair is known: an expected station whose registry
        index no manifest has told yet takes an index no known station has, so each of its pairs lies at or
        beyond ``m(m-1)/2`` for the first such free index ``m`` (infinite when every station is known)."""
        if self.expected is None:
            return 0
        if self._below is None or self._below[0] != len(registry):
            below: int | float = math.inf
            if not all(s in registry for s in self.expected):
                taken = set(registry.values())
                free = next(i for i in range(len(taken) + 1) if i not in taken)
                below = free * (free - 1) // 2
            self._below = (len(registry), below)
        return self._below[1]

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
        slots = _span(self._slot, start, stop, -1)
        keep = (slots >= 0) & (_span(self._n_common, start, stop, 0) > 0)
        keep &= ~_span(self.included, start, stop, False) & ~_span(self.unreadable, start, stop, False)
        at = np.flatnonzero(keep)
        return at + start, slots[at]

    def ready(self, start: int, stop: int, registry: dict[str, int]) -> bool:
        """Every expected pair in ``[start, stop)`` received, and some CCF there not stacked yet."""
        expected = self.expected_mask(registry)
        if expected is None or stop > self.known_below(registry):
            return False
        if (_span(expected, start, stop, False) & (_span(self._slot, start, stop, -1) < 0)).any():
            return False
        return bool(self.todo(start, stop)[0].size)

    def accounted(self, registry: dict[str, int]) -> tuple[int, int, int, int]:
        """``(stacked, skipped, failed, expected)`` pairs of the window (expected -1 while unknown)."""
        size = self._slot.size
        mask = self.expected_mask(registry)
        counted = self._slot >= 0
        if mask is not None:
            counted &= _span(mask, 0, size, False)
        included = counted & _span(self.included, 0, size, False)
        lost = counted & (self._n_common > 0) & ~included & _span(self.unreadable, 0, size, False)
        stacked = int(np.count_nonzero(included))
        skipped = int(np.count_nonzero(counted & (self._n_common == 0)))
        failed = int(np.count_nonzero(counted & (self._n_common == FAILED)) + np.count_nonzero(lost))
        return stacked, skipped, failed, -1 if mask is None else int(mask.sum())

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


def _grow(values: np.ndarray, size: int, fill: int | bool) -> np.ndarray:
    """``values`` extended with ``fill`` to at least ``size`` entries."""
    if values.size >= size:
        return values
    return np.concatenate([values, np.full(size - values.size, fill, dtype=values.dtype)])


def _span(values: np.ndarray, start: int, stop: int, fill: int | bool) -> np.ndarray:
    """``values[start:stop]``, with ``fill`` where it reaches beyond the array's end."""
    if values.size >= stop:
        return values[start:stop]
    out = np.full(stop - start, fill, dtype=values.dtype)
    if values.size > start:
        out[: values.size - start] = values[start:]
    return out


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
