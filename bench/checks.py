"""Output checks for a run on a synthetic deployment: are the stacks there, exact, and correlated exactly once?

Two independent views:

- **the stacks** (``OUT/<A>__<B>.sac``): each expected pair present, its peak at the true lag of
  ``truth.json``, and its header ``user0`` (windows stacked) equal to the windows the pair has: a stack that
  lost a window or counted one twice shows there;
- **the wire**: the run's results topic read ``read_committed`` from the start; every (window, A, B) must be
  announced by exactly one PairCorrelated. Records the harness injected itself are left out by offset.

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
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from obspy.io.sac import SACTrace

from contracts.events import Event, EventDecodeError, PairCorrelated, decode
from contracts.kafka import partitions_of

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
    wrong_windows: dict[str, float] = field(default_factory=dict)  # pair -> windows stacked (user0)
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
    """What one SAC stack says: where its peak is (samples from zero lag) and how many windows it holds."""

    lag: int
    windows: float


def read_stack(path: Path) -> Stack:
    """Read a SAC stack: the lag axis starts at ``b = -maxlag``, so the peak index minus maxlag·fs is the lag.

    Raises:
        OSError, ValueError: unreadable or not SAC.
    """
    sac = SACTrace.read(str(path))
    zero = round(-float(sac.b) / float(sac.delta))
    return Stack(int(np.argmax(sac.data)) - zero, float(sac.user0))


def check_stacks(out: Path, exp: Expectation) -> StackCheck:
    """Compare the SAC stacks in ``out`` with the expectation (see :class:`StackCheck`)."""
    found = {p.stem: p for p in out.glob("*__*.sac")}
    check = StackCheck(expected=exp.expected)
    for pair, path in sorted(found.items()):
        lag = exp.lags.get(pair, exp.optional.get(pair))
        if lag is None:
            check.extra.append(pair)
            continue
        if pair in exp.lags:
            check.present += 1
        else:
            check.optional_present += 1
        try:
            stack = read_stack(path)
        except (OSError, ValueError):
            check.off_lag.append(pair)
            continue
        if stack.lag != lag:
            check.off_lag.append(pair)
        elif pair in exp.lags:
            check.at_true_lag += 1
        if stack.windows != exp.windows and pair in exp.lags:  # an optional pair may lose a dead-lettered window
            check.wrong_windows[pair] = stack.windows
    check.missing = sorted(set(exp.lags) - set(found))
    return check


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
            "bootstrap.servers": bootstrap,
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


def correlated(records: list[Record], injected: Iterable[Offset] = ()) -> list[PairCorrelated]:
    """The PairCorrelated events among ``records``, leaving out those at the ``injected`` offsets."""
    skip = set(injected)
    events = (decode_quietly(r.value) for r in records if (r.partition, r.offset) not in skip)
    return [e for e in events if isinstance(e, PairCorrelated)]


def wire_duplicates(events: list[PairCorrelated]) -> int:
    """How many PairCorrelated repeat a (window, A, B) already announced (0 when exactly once)."""
    counts = Counter((e.window, e.a, e.b) for e in events)
    return sum(n - 1 for n in counts.values())


def wire_coverage(events: list[PairCorrelated], exp: Expectation) -> int:
    """How many required (window, pair) results were announced at least once (skipped ones included)."""
    announced = {(e.window, f"{e.a}__{e.b}") for e in events}
    return sum(1 for _, pair in announced if pair in exp.lags)


def stamp(event: PairCorrelated) -> float:
    """When the pair was correlated (Unix seconds); 0 when the field is not a timestamp."""
    try:
        return datetime.fromisoformat(event.correlated_at).timestamp()
    except ValueError:
        return 0.0


def recovery_s(events: list[PairCorrelated], fault_end: float) -> float | None:
    """Seconds from the end of a fault to the next pair correlated, or None when none followed it."""
    after = [t for t in (stamp(e) for e in events if not e.skipped) if t >= fault_end]
    return round(min(after) - fault_end, 3) if after else None


def durable_pairs(events: list[PairCorrelated], exp: Expectation, before: float) -> set[str]:
    """Required pairs whose every window was correlated (and committed) before ``before``: their stacks
    could be written from durable CCFs, whatever happened afterwards."""
    windows: dict[str, set[str]] = {}
    for e in events:
        if not e.skipped and stamp(e) < before:
            windows.setdefault(f"{e.a}__{e.b}", set()).add(e.window)
    return {p for p, w in windows.items() if p in exp.lags and len(w) >= exp.windows}
