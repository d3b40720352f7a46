"""Output checks for a run on a synthetic deployment: are the stacks there, exact, and correlated exactly once?

Three views, each read without the pipeline's own readers:

- **the stacks** (``OUT/results.zarr``, group ``stacks``, read with zarr): each expected pair present, its
  peak at the true lag of ``truth.json`` (on the store's own lag axis), and its ``count`` (windows stacked)
  equal to the windows the pair has: a stack that lost a window or counted one twice shows there;
- **the wire**: the run's results topic read ``read_committed`` from the start; every (window, pair) must be
  announced exactly once (one RowCorrelated per row task names its columns and first slot). Records the harness
  injected itself are left out by offset. The stacks topic gives the stacker's StacksUpdated;
- **the per-window CCFs** in the bucket's hierarchy: each announced (window, pair) must be in the slot its
  RowCorrelated names, at the true lag.

Each check returns numbers, not booleans, so a report can say how far off a run was.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from zarr.storage import LocalStore

from contracts.events import Event, EventDecodeError, PairCorrelated, RowCorrelated, StacksUpdated, decode
from contracts.kafka import connection_config, partitions_of

Offset = tuple[int, int]  # (partition, offset) of one record


@dataclass(frozen=True)
class Expectation:
    """What a run's stacks must hold: ``lags`` (pair → true lag in samples) are required and each stacks
    ``windows`` windows; ``optional`` pairs may be there (then at their true lag, with any window count);
    anything else is an extra pair."""

    lags: dict[str, int]
    windows: int
    optional: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_truth(
        cls, truth: dict[str, Any], good: Iterable[str] | None = None, maybe: Iterable[str] = ()
    ) -> Expectation:
        """Expectation from a ``truth.json`` of ``xcorrflow synth`` without gaps (every hour is a window).

        Args:
            truth: the parsed truth.json.
            good: the stations whose pairs are required (default: every station of the truth).
            maybe: stations whose pairs with good stations may be present.
        """
        good_set = set(truth["stations"] if good is None else good)
        maybe_set = set(maybe)
        lags = {k: int(v["lag_samples"]) for k, v in truth["pairs"].items()}
        required = {k: lag for k, lag in lags.items() if set(k.split("__")) <= good_set}
        optional = {
            k: lag for k, lag in lags.items() if k not in required and set(k.split("__")) <= good_set | maybe_set
        }
        return cls(required, int(truth["hours"]), optional)

    @property
    def expected(self) -> int:
        """Number of required pairs."""
        return len(self.lags)

    @property
    def window_pairs(self) -> int:
        """Number of required (window, pair) results."""
        return len(self.lags) * self.windows


@dataclass
class StackCheck:
    """Outcome of :func:`check_stacks`. Lists name pairs; ``present`` counts required pairs found."""

    expected: int = 0
    present: int = 0
    at_true_lag: int = 0
    missing: list[str] = field(default_factory=list)
    off_lag: list[str] = field(default_factory=list)  # required or optional pairs whose peak is elsewhere
    wrong_windows: dict[str, float] = field(default_factory=dict)  # pair -> windows stacked (its count)
    doubled: dict[str, float] = field(default_factory=dict)  # pairs stacked more often than they have windows
    extra: list[str] = field(default_factory=list)  # pairs that should not exist at all
    optional_present: int = 0

    @property
    def exact(self) -> bool:
        """Every required pair present, at its lag, with every window once; nothing extra."""
        return (
            self.present == self.expected == self.at_true_lag
            and not self.off_lag
            and not self.wrong_windows
            and not self.extra
        )


@dataclass(frozen=True)
class Stack:
    """What one stack says: where its peak is (samples from zero lag) and how many windows it holds."""

    lag: int
    windows: float


def read_stacks(root: Path) -> dict[str, Stack]:
    """Every stacked pair of the hierarchy at ``root`` (``OUT/results.zarr``), read with zarr alone.

    The peak's lag comes from the store's own ``lag`` axis (seconds) times its ``fs``; a pair with a count of 0
    was never stacked and is left out. A label that appears twice on the pair axis is summed (and so shows as a
    wrong window count); a stack holding NaN or Inf is given an impossible lag (it shows as off its lag).
    An absent hierarchy, or one without stacks, holds nothing.
    """
    if not (root / "zarr.json").exists():
        return {}
    stacks = _group(zarr.open_group(LocalStore(root, read_only=True), mode="r"), "stacks")
    if stacks is None:
        return {}
    fs = float(stacks.attrs["fs"])  # type: ignore[arg-type]
    lags = np.asarray(_array(stacks, "lag")[:], dtype=np.float64)
    count = np.asarray(_array(stacks, "count")[:])
    a, b = np.asarray(_array(stacks, "a")[:]), np.asarray(_array(stacks, "b")[:])
    linear = _array(stacks, "linear")
    found: dict[str, Stack] = {}
    step = int(linear.chunks[0]) or 1
    for start in range(0, int(count.size), step):
        rows = np.flatnonzero(count[start : start + step] > 0)
        if rows.size == 0:
            continue
        data = np.asarray(linear[start : start + step])[rows]
        for k, row in enumerate(rows.tolist()):
            i = start + row
            values = data[k]
            lag = round(float(lags[int(np.argmax(values))]) * fs) if np.isfinite(values).all() else 1 << 30
            name = f"{a[i]}__{b[i]}"
            before = found.get(name)
            found[name] = Stack(lag, float(count[i]) + (before.windows if before else 0.0))
    return found


def _group(parent: zarr.Group, path: str) -> zarr.Group | None:
    found = parent.get(path)
    return found if isinstance(found, zarr.Group) else None


def _array(parent: zarr.Group, name: str) -> zarr.Array:
    found = parent.get(name)
    if not isinstance(found, zarr.Array):
        raise ValueError(f"{parent.path or 'the root'} has no array {name!r}")
    return found


def check_stacks(root: Path, exp: Expectation) -> StackCheck:
    """Compare the stacks of the hierarchy at ``root`` with the expectation (see :class:`StackCheck`)."""
    found = read_stacks(root)
    check = StackCheck(expected=exp.expected)
    for pair, stack in sorted(found.items()):
        lag = exp.lags.get(pair, exp.optional.get(pair))
        if lag is None:
            check.extra.append(pair)
            continue
        if pair in exp.lags:
            check.present += 1
        else:
            check.optional_present += 1
        if stack.lag != lag:
            check.off_lag.append(pair)
        elif pair in exp.lags:
            check.at_true_lag += 1
        if stack.windows != exp.windows and pair in exp.lags:  # an optional pair may lose a dead-lettered window
            check.wrong_windows[pair] = stack.windows
        if stack.windows > exp.windows:
            check.doubled[pair] = stack.windows
    check.missing = sorted(set(exp.lags) - set(found))
    return check


def complete_stacks(root: Path, exp: Expectation) -> set[str]:
    """Required pairs whose stack holds all their windows."""
    return {p for p, s in read_stacks(root).items() if p in exp.lags and s.windows == exp.windows}


# --- the wire ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One record read back from a topic."""

    partition: int
    offset: int
    value: bytes | None


def read_topic(bootstrap: str, topic: str, *, timeout: float = 60.0, idle: float = 3.0) -> list[Record]:
    """Every record of ``topic`` visible to a ``read_committed`` reader, from the start to the end.

    Stops when every partition is read to its high watermark, after ``idle`` seconds without a record
    (an open transaction holds the end back), or after ``timeout``. A missing topic reads as empty.
    """
    consumer = Consumer(
        {
            **connection_config(bootstrap),
            "group.id": f"chaos-check-{time.monotonic_ns()}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "log_level": 0,
        }
    )
    try:
        tps = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in _partitions(consumer, topic)]
        ends = {tp.partition: _high_watermark(consumer, tp, timeout) for tp in tps}
        consumer.assign(tps)
        return _drain(consumer, ends, timeout, idle)
    finally:
        consumer.close()


def _partitions(consumer: Consumer, topic: str, patience: float = 15.0) -> list[int]:
    """The topic's partitions; none when it does not exist. A broker that just restarted may answer without
    leaders for a while, so an error is asked again for ``patience`` seconds before the topic counts as absent."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return partitions_of(consumer, topic)
        except (KeyError, KafkaException):
            if time.monotonic() > deadline:
                return []
            time.sleep(0.5)


def _high_watermark(consumer: Consumer, tp: TopicPartition, timeout: float) -> int:
    """The partition's end offset, asked again while the broker is still electing leaders (just restarted).

    Raises:
        KafkaException: still failing after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return int(consumer.get_watermark_offsets(tp, timeout=10)[1])
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _drain(consumer: Consumer, ends: dict[int, int], timeout: float, idle: float) -> list[Record]:
    records: list[Record] = []
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - last < idle:
        batch = [m for m in consumer.consume(1000, 0.3) if not m.error()]
        records += [Record(m.partition() or 0, m.offset() or 0, m.value()) for m in batch]
        if batch:
            last = time.monotonic()
        elif all(tp.offset >= ends[tp.partition] for tp in consumer.position(consumer.assignment())):
            break
    return records


def decode_quietly(value: bytes | None) -> Event | None:
    """The event, or None for anything that does not decode (including a decoder that recurses too deep)."""
    try:
        return decode(value)
    except (EventDecodeError, RecursionError, ValueError):
        return None


@dataclass(frozen=True)
class Correlated:
    """One (window, pair) result announced on the results topic: by a RowCorrelated (the task's ``slot`` + the
    column's position in it) or, from older runs, a PairCorrelated (``slot`` -1)."""

    window: str
    pair: str
    slot: int
    at: float  # when it was correlated (Unix seconds; 0 when the field is not a timestamp)
    skipped: bool = False


def _pair(a: str, b: str) -> str:
    return "__".join(sorted((a, b)))


def correlated(records: list[Record], injected: Iterable[Offset] = ()) -> list[Correlated]:
    """The (window, pair) results announced among ``records``, leaving out those at the ``injected`` offsets."""
    skip = set(injected)
    events = (decode_quietly(r.value) for r in records if (r.partition, r.offset) not in skip)
    out: list[Correlated] = []
    for e in events:
        if isinstance(e, RowCorrelated):
            at = stamp(e.correlated_at)
            out += [Correlated(e.window, _pair(e.row, c), e.slot + k, at) for k, c in enumerate(e.columns)]
        elif isinstance(e, PairCorrelated):
            out.append(Correlated(e.window, _pair(e.a, e.b), -1, stamp(e.correlated_at), bool(e.skipped)))
    return out


def stacks_updated(records: list[Record], injected: Iterable[Offset] = ()) -> list[StacksUpdated]:
    """The StacksUpdated events among ``records`` (the stacker's word), leaving out the ``injected`` ones."""
    skip = set(injected)
    events = (decode_quietly(r.value) for r in records if (r.partition, r.offset) not in skip)
    return [e for e in events if isinstance(e, StacksUpdated)]


def wire_duplicates(events: list[Correlated]) -> int:
    """How many announcements repeat a (window, pair) already announced (0 when exactly once)."""
    counts = Counter((e.window, e.pair) for e in events)
    return sum(n - 1 for n in counts.values())


def wire_coverage(events: list[Correlated], exp: Expectation) -> int:
    """How many required (window, pair) results were announced at least once (skipped ones included)."""
    announced = {(e.window, e.pair) for e in events}
    return sum(1 for _, pair in announced if pair in exp.lags)


def stamp(text: str) -> float:
    """A timestamp field as Unix seconds; 0 when it is not a timestamp."""
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0


def recovery_s(events: list[Correlated], fault_end: float) -> float | None:
    """Seconds from the end of a fault to the next pair correlated, or None when none followed it."""
    after = [e.at for e in events if not e.skipped and e.at >= fault_end]
    return round(min(after) - fault_end, 3) if after else None


def stacks_recovery_s(updates: list[StacksUpdated], fault_end: float) -> float | None:
    """Seconds from the end of a fault to the stacker's next StacksUpdated, or None when none followed it."""
    after = [t for t in (stamp(u.updated_at) for u in updates) if t >= fault_end]
    return round(min(after) - fault_end, 3) if after else None


def durable(events: list[Correlated], before: float) -> list[Correlated]:
    """(window, pair) results announced (so committed, their CCFs written first) before ``before``."""
    return [e for e in events if not e.skipped and e.at < before]


@dataclass
class CcfCheck:
    """Outcome of :func:`check_ccfs`: announced per-window CCFs looked up in the store where the announcement
    says they are."""

    checked: int = 0
    absent: list[str] = field(default_factory=list)  # "window pair": no finite CCF in the announced slot
    off_lag: list[str] = field(default_factory=list)  # "window pair": a CCF whose peak is not at the true lag


def check_ccfs(root: zarr.Group | None, events: list[Correlated], exp: Expectation) -> CcfCheck:
    """Each announced CCF of a required or optional pair must be in its window's ``ccf`` array, in the slot its
    RowCorrelated names, with its peak at the true lag: what the wire says is durable is there, and right.

    ``root`` is the run's hierarchy in the bucket (None: nothing readable, so every announcement is absent).
    """
    check = CcfCheck()
    by_window: dict[str, list[Correlated]] = {}
    for e in events:
        if e.slot >= 0 and (e.pair in exp.lags or e.pair in exp.optional):
            by_window.setdefault(e.window, []).append(e)
    for window, announced in sorted(by_window.items()):
        group = _group(root, f"windows/{window}") if root is not None else None
        ccf = group.get("ccf") if group is not None else None
        lag = group.get("lag") if group is not None else None
        lags = np.asarray(lag[:], dtype=np.float64) if isinstance(lag, zarr.Array) else None
        fs = float(group.attrs.get("fs", 0.0)) if group is not None else 0.0  # type: ignore[arg-type]
        data = np.asarray(ccf[:]) if isinstance(ccf, zarr.Array) else None  # one read per window (tens of MB)
        for e in announced:
            check.checked += 1
            name = f"{window} {e.pair}"
            if data is None or lags is None or e.slot >= data.shape[0]:
                check.absent.append(name)
                continue
            values = data[e.slot]
            if not np.isfinite(values).all():
                check.absent.append(name)
                continue
            peak = round(float(lags[int(np.argmax(values))]) * fs)
            if peak != exp.lags.get(e.pair, exp.optional.get(e.pair)):
                check.off_lag.append(name)
    return check
