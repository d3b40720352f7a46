"""What a pipeline run expects, what it has seen, and which claims of failure it believes.

A run is complete when every (window, pair) of its **plan** is accounted for in the stacks: its CCF added,
or the pair skipped for want of common valid sub-windows, as the objects of the run's namespace say (the
stacks' counts and each window's slot index, see :mod:`xcorrflow.orchestration.verify`). The plan is the inventory
the run scanned itself: the stations ingested in each window, less the station-windows that verifiably cannot be
processed. Only two things may shrink the plan, and neither is an event anyone could publish:

* the run's own ingest failing on a real file (it read the file and could not cut it);
* a preprocess dead letter for the run's own raw object that the run *confirms* by preprocessing the same
  bytes itself and failing the same way (the DSP is deterministic). A dead letter it cannot confirm is
  reported as untrusted and changes nothing.

The monitor follows the run's commits, results, stacks and dead-letter topics (``read_committed``): the
stacker's StacksUpdated say when to look, the objects say what is there.
"""

from __future__ import annotations

import contextlib
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from confluent_kafka import Consumer, TopicPartition

from contracts.events import (
    DeadLetter,
    DirectoryCommitted,
    EventDecodeError,
    FileReady,
    RawFileArrived,
    RowCorrelated,
    StacksUpdated,
    decode,
)
from contracts.kafka import client_config, partitions_of
from contracts.outage import KAFKA
from contracts.settings import Settings, TopicNames
from dsp.errors import DspError
from dsp.preprocess import preprocess_bytes
from producers.ingest import RawObject, raw_bytes
from storage.layout import Layout

log = logging.getLogger(__name__)
MAX_LISTED = 1000  # missing pairs and dead letters listed one by one in report.json; the rest are counted


@dataclass
class RunState:
    """The plan of a run and what the monitor has seen of it."""

    plan: dict[str, set[str]] = field(default_factory=dict)  # window -> stations ingested there
    lost: set[tuple[str, str]] = field(default_factory=set)  # (window, station) that cannot be processed
    ready: dict[str, set[str]] = field(default_factory=dict)  # window -> stations with FileReady (progress)
    committed: set[str] = field(default_factory=set)  # windows
    pairs_correlated: int = 0  # pairs of RowCorrelated events seen (progress)
    stacks: dict[str, StacksUpdated] = field(default_factory=dict)  # window -> the stacker's latest word
    dead_letters: list[DeadLetter] = field(default_factory=list)
    untrusted: list[dict[str, str]] = field(default_factory=list)  # claims the run did not confirm
    first_result_at: float | None = None
    first_ready_at: float | None = None
    last_ready_at: float | None = None
    last_pair_at: float | None = None
    timeline: list[tuple[float, int]] = field(default_factory=list)  # (wall time, pairs) of each row task

    def expected(self, window: str) -> set[str]:
        """Stations of ``window`` whose pairs must be accounted for."""
        return {s for s in self.plan.get(window, set()) if (window, s) not in self.lost}

    def pairs_expected(self, window: str | None = None) -> int:
        """Pairs the plan expects in ``window`` (default: over every window)."""
        windows = [window] if window is not None else list(self.plan)
        return sum(n * (n - 1) // 2 for n in (len(self.expected(w)) for w in windows))

    def stacked(self) -> int:
        """Pairs the stacker reports as in the stacks, skipped or failed, over the planned windows."""
        return sum(u.stacked + u.skipped + u.failed for w, u in self.stacks.items() if w in self.plan)

    def stacker_done(self) -> bool:
        """The stacker reports every planned window with pairs complete, with the pair count the plan expects."""
        for window in self.plan:
            wanted = self.pairs_expected(window)
            update = self.stacks.get(window)
            if wanted and (update is None or not update.complete or update.expected != wanted):
                return False
        return True


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
        if ident not in self.objects or failed.key != Layout(self.namespace).raw(*ident):
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
    """Follows a run's commits, results, stacks and dead-letter topics (read_committed) into a :class:`RunState`."""

    def __init__(self, settings: Settings, topics: TopicNames, namespace: str) -> None:
        """Read the run's topics from their beginning."""
        self.topics = topics
        self.layout = Layout(namespace)
        self.state = RunState()
        config = {
            "group.id": f"{topics.commits}.monitor",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 500,
        }
        self.consumer = Consumer(client_config(settings, **config))
        wanted = [topics.commits, topics.results, topics.stacks, topics.dlq]
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
            try:
                _, window, station = self.layout.parse_product(event.key)
            except ValueError:  # not one of this run's products: it cannot advance the run
                return
            if station in s.plan.get(window, ()):
                s.ready.setdefault(window, set()).add(station)
                s.first_ready_at = s.first_ready_at or _ts(event.ready_at, now)
                s.last_ready_at = _ts(event.ready_at, now)
        elif isinstance(event, DirectoryCommitted):
            with contextlib.suppress(ValueError):  # only product directories are the run's windows
                s.committed.add(self.layout.parse_product_dir(event.directory))
        elif isinstance(event, RowCorrelated) and event.window in s.plan:
            at = min(_ts(event.correlated_at, now), now)
            s.pairs_correlated += event.pairs
            s.first_result_at = min(s.first_result_at or at, at)
            s.last_pair_at = max(s.last_pair_at or at, at)
            s.timeline.append((at, event.pairs))
        elif isinstance(event, StacksUpdated) and event.window in s.plan:
            s.stacks[event.window] = event

    def close(self) -> None:
        """Leave (nothing is committed: the monitor always reads from the start)."""
        self.consumer.close()


def _ts(iso: str, default: float) -> float:
    try:
        return datetime.fromisoformat(iso).timestamp()
    except (ValueError, TypeError):
        return default
