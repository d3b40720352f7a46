"""What a pipeline run expects, what it has seen, and which claims of failure it believes.

A run is complete when every (window, pair) of its **plan** is accounted for: stacked from a CCF object of
the run's namespace, or listed as skipped (no common valid sub-window) by such an object. The plan is the
inventory the run scanned itself: the stations ingested in each window, less the station-windows that
verifiably cannot be processed. Only two things may shrink the plan, and neither is an event anyone could
publish:

* the run's own ingest failing on a real file (it read the file and could not cut it);
* a preprocess dead letter for the run's own raw object that the run *confirms* by preprocessing the same
  bytes itself and failing the same way (the DSP is deterministic). A dead letter it cannot confirm is
  reported as untrusted and changes nothing.

The monitor follows the run's commits, results and dead-letter topics (``read_committed``); events there are
hints of where to look and what to check, never the truth itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from confluent_kafka import Consumer, TopicPartition

from contracts.events import (
    DeadLetter,
    DirectoryCommitted,
    EventDecodeError,
    FileReady,
    PairCorrelated,
    RawFileArrived,
    decode,
)
from contracts.kafka import client_config, partitions_of
from contracts.outage import KAFKA
from contracts.settings import Settings, TopicNames
from dsp.errors import DspError
from dsp.preprocess import preprocess_bytes
from producers.ingest import RawObject, raw_bytes
from storage.keys import raw_key
from xcorrflow.collector import StackCollector

log = logging.getLogger(__name__)
MAX_LISTED = 1000  # missing pairs and dead letters listed one by one in report.json; the rest are counted


@dataclass
class RunState:
    """The plan of a run and what the monitor has seen of it."""

    plan: dict[str, set[str]] = field(default_factory=dict)  # window -> stations ingested there
    lost: set[tuple[str, str]] = field(default_factory=set)  # (window, station) that cannot be processed
    ready: dict[str, set[str]] = field(default_factory=dict)  # window -> stations with FileReady (progress)
    committed: set[str] = field(default_factory=set)  # windows
    pairs_announced: int = 0  # PairCorrelated events seen (progress)
    skipped: list[dict[str, str]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    untrusted: list[dict[str, str]] = field(default_factory=list)  # claims the run did not confirm
    first_result_at: float | None = None
    first_ready_at: float | None = None
    last_ready_at: float | None = None
    last_pair_at: float | None = None
    timeline: list[float] = field(default_factory=list)  # wall time of each correlated pair

    def expected(self, window: str) -> set[str]:
        """Stations of ``window`` whose pairs must be accounted for."""
        return {s for s in self.plan.get(window, set()) if (window, s) not in self.lost}

    def windows_of_pair(self, key: str, skips: dict[tuple[str, str], int] | None = None) -> int:
        """Windows in which pair ``A__B`` will have a CCF: both stations are expected there, less the windows
        where its objects list it as skipped. Known from the start, so a pair's stack can be written the
        moment its last window is in, long before the last station arrives."""
        a, _, b = key.partition("__")
        both = sum(1 for w in self.plan if a in self.plan[w] and b in self.plan[w] and not self._lost(w, a, b))
        return both - (skips or {}).get((a, b), 0)

    def _lost(self, window: str, a: str, b: str) -> bool:
        return (window, a) in self.lost or (window, b) in self.lost

    def pairs_expected(self) -> int:
        """Pairs the plan expects, over every window."""
        return sum(n * (n - 1) // 2 for n in (len(self.expected(w)) for w in self.plan))

    def accounted(self, collector: StackCollector) -> int:
        """(window, pair)s of the plan that the collector holds or saw skipped by an object."""
        return sum(self._accounted_in(w, collector) for w in self.plan)

    def _accounted_in(self, window: str, collector: StackCollector) -> int:
        progress = collector.state.windows.get(window)
        if progress is None:
            return 0
        return int(progress.included.sum()) + len(progress.skipped)

    def done(self, collector: StackCollector) -> bool:
        """Every expected (window, pair) is accounted for (checked pair by pair once the counts agree)."""
        for window in self.plan:
            n = len(self.expected(window))
            if self._accounted_in(window, collector) < n * (n - 1) // 2:
                return False
        return not self.missing(collector, limit=1)

    def missing(self, collector: StackCollector, limit: int = MAX_LISTED) -> list[dict[str, str]]:
        """Expected (window, pair)s not accounted for, up to ``limit``."""
        out: list[dict[str, str]] = []
        for window in sorted(self.plan):
            stations = sorted(self.expected(window))
            for i, a in enumerate(stations):
                for b in stations[i + 1 :]:
                    if not collector.accounted(window, f"{a}__{b}"):
                        out.append({"window": window, "pair": f"{a}__{b}"})
                        if len(out) >= limit:
                            return out
        return out


class FailureCheck:
    """Confirms preprocess dead letters by preprocessing the same bytes in the run process.

    A confirmed failure is a real bad file: its station leaves the window's plan. An unconfirmed one (the
    bytes preprocess fine, or the letter names an object this run never ingested) is reported as untrusted.
    Each station-window is checked at most once, in a background thread.
    """

    def __init__(self, settings: Settings, objects: dict[tuple[str, str], RawObject], namespace: str) -> None:
        self.settings, self.objects, self.namespace = settings, objects, namespace
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="verify")
        self._checks: dict[tuple[str, str], Future[str | None]] = {}

    def claim(self, letter: DeadLetter) -> str | None:
        """Start checking a preprocess dead letter; returns why it is not believed, or None while it may be."""
        try:
            failed = decode(letter.payload.encode())
        except EventDecodeError:
            return "its payload is not a RawFileArrived"
        if not isinstance(failed, RawFileArrived):
            return "its payload is not a RawFileArrived"
        ident = (failed.window, failed.station)
        if ident not in self.objects or failed.key != f"{self.namespace}{raw_key(*ident)}":
            return f"{failed.key!r} is not a raw object this run ingested"
        if ident not in self._checks:
            self._checks[ident] = self._pool.submit(self._reproduce, ident)
        return None

    def _reproduce(self, ident: tuple[str, str]) -> str | None:
        obj = self.objects[ident]
        try:
            data = raw_bytes(obj, self.settings.processing.window_s)
            preprocess_bytes([data], obj.window, self.settings.processing, sources=[s.source for s in obj.items])
        except (DspError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    def confirmed(self) -> list[tuple[tuple[str, str], str | None]]:
        """Checks finished since the last call: ``((window, station), reason)``; reason None = not confirmed."""
        done = [(ident, f) for ident, f in self._checks.items() if f.done() and not getattr(f, "reported", False)]
        for _, future in done:
            future.reported = True  # type: ignore[attr-defined]
        return [(ident, future.result()) for ident, future in done]

    def close(self) -> None:
        """Stop checking."""
        self._pool.shutdown(wait=False, cancel_futures=True)


class RunMonitor:
    """Follows a run's commits, results and dead-letter topics (read_committed) and keeps a :class:`RunState`."""

    def __init__(self, settings: Settings, topics: TopicNames, namespace: str, on_result: Callable[[str], None]):
        """Read the run's topics from their beginning; ``on_result`` gets each CCF object key (namespace-relative)
        a PairCorrelated names."""
        self.topics = topics
        self.namespace = namespace
        self.on_result = on_result
        self.state = RunState()
        config = {
            "group.id": f"{topics.commits}.monitor",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 500,
        }
        self.consumer = Consumer(client_config(settings, **config))
        wanted = [topics.commits, topics.results, topics.dlq]
        self.consumer.assign([TopicPartition(t, p, 0) for t in wanted for p in partitions_of(self.consumer, t)])

    def poll(self, timeout: float = 0.1) -> list[DeadLetter]:
        """Consume what is there; returns the new preprocess dead letters (claims that a station-window failed)."""
        claims = []
        for msg in self.consumer.consume(1000, timeout):
            if msg.error():
                continue
            KAFKA.succeeded()
            try:
                event = decode(msg.value())
            except EventDecodeError as exc:
                self.state.untrusted.append({"source": f"{msg.topic()}@{msg.offset()}", "reason": exc.reason})
                continue
            if isinstance(event, DeadLetter):
                self.state.dead_letters.append(event)
                if event.service == "preprocess":
                    claims.append(event)
            else:
                self._apply(event)
        return claims

    def _apply(self, event: object) -> None:
        s, now = self.state, time.time()
        if isinstance(event, FileReady):
            window = event.directory.rstrip("/").rsplit("/", 1)[-1]
            station = event.key.rsplit("/", 1)[-1].rsplit(".", 1)[0]
            if station in s.plan.get(window, ()):
                s.ready.setdefault(window, set()).add(station)
                s.first_ready_at = s.first_ready_at or _ts(event.ready_at, now)
                s.last_ready_at = _ts(event.ready_at, now)
        elif isinstance(event, DirectoryCommitted):
            s.committed.add(event.directory.rstrip("/").rsplit("/", 1)[-1])
        elif isinstance(event, PairCorrelated):
            self._result(event, now)

    def _result(self, event: PairCorrelated, now: float) -> None:
        s = self.state
        s.pairs_announced += 1
        if event.skipped:
            s.skipped.append({"window": event.window, "item": f"{event.a}__{event.b}", "reason": event.skipped})
        if not event.key:
            return
        if not event.key.startswith(f"{self.namespace}ccf/"):
            s.untrusted.append({"source": event.key, "reason": "a result outside this run's ccf/ prefix"})
            return
        self.on_result(event.key[len(self.namespace) :])
        if not event.skipped:
            at = min(_ts(event.correlated_at, now), now)
            s.first_result_at = min(s.first_result_at or at, at)
            s.last_pair_at = max(s.last_pair_at or at, at)
            s.timeline.append(at)

    def close(self) -> None:
        """Leave (nothing is committed: the monitor always reads from the start)."""
        self.consumer.close()


def _ts(iso: str, default: float) -> float:
    try:
        return datetime.fromisoformat(iso).timestamp()
    except (ValueError, TypeError):
        return default
