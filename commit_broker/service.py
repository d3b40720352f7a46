"""``xcorrflow worker broker``: the commit broker as a Kafka service, exactly once across crashes.

Design (why it is exactly-once):

* **Consume-transform-produce in Kafka transactions** (:mod:`contracts.loop`). Each batch of input messages
  (files topic and S3 notification topic) is handled inside one transaction holding (a) the FileReady /
  DirectoryCommitted events and dead letters it decided, (b) the state records it changed, written to a
  *compacted state topic*, and (c) the consumed offsets. Either all three become visible or none does.
  Consumers read the commits topic with ``isolation.level=read_committed``, so an aborted decision is never seen.
  A batch that decides nothing (duplicates, notifications no rule covers) changes no state and gets no
  transaction: its offsets ride with the next one, or the next tick; a crash before that replays it, to the
  same nothing.
* **State in a compacted topic, not a replay of the files topic.** A restart reads the state topic to its end
  (one small record per file, directory and producer) instead of re-reading every event since the beginning of
  time; compaction keeps it bounded by the number of live keys while the files topic can use time retention.
* **One active broker, fenced.** The broker owns every partition (it is a light aggregator: tens of µs per
  event) and uses a fixed ``transactional.id`` derived from the files topic. A restarted (or second) instance
  calls ``init_transactions``, which aborts whatever the previous one left open and fences it off, so a zombie
  can never commit a stale decision. A single owner also sees every directory's whole state even when an
  outside producer partitions differently, and ``on_file`` dependencies across partitions need no routing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from confluent_kafka import Message
from prometheus_client import Counter, Gauge, Histogram

from commit_broker.core import CommitCore, Effects
from commit_broker.notifications import NotificationError, parse_notification
from commit_broker.rules import RuleSet
from contracts.checkpoint import Output
from contracts.events import EventDecodeError, decode
from contracts.kafka import dead_letter
from contracts.loop import TransactionalLoop
from contracts.metrics import EVENTS_IN, LATENCY_BUCKETS
from contracts.settings import Settings, TopicNames

log = logging.getLogger(__name__)
SERVICE = "broker"

COMMIT_LATENCY = Histogram(
    "xcorrflow_commit_latency_seconds", "first event of a directory → its commit", ["rule"], buckets=LATENCY_BUCKETS
)
for _rule in ("n_files", "on_termination", "on_file"):  # at 0 from the start: a run's first commit shows in rate()
    COMMIT_LATENCY.labels(rule=_rule)
OPEN_DIRECTORIES = Gauge("xcorrflow_open_directories", "directories seen but not yet committed")
NEXT_DEADLINE = Gauge(
    "xcorrflow_open_directory_next_deadline_timestamp_seconds",
    "earliest deadline of an open directory (Unix time; +Inf when none has one)",
)
NEXT_DEADLINE.set(float("inf"))
IGNORED = Counter("xcorrflow_broker_ignored", "inputs that changed nothing", ["reason"])

# (key, size) of every object under a prefix: the reconciler's view of the store.
Lister = Callable[[str], Iterable[tuple[str, int]]]


@dataclass(frozen=True)
class BrokerOptions:
    """Tunables of the broker loop."""

    reconcile_interval: float = 30.0
    notifications: bool = True
    tick_interval: float = 1.0


class CommitBroker(TransactionalLoop):
    """The commit broker service; :meth:`run` loops until :meth:`stop` is called."""

    service = SERVICE

    def __init__(
        self,
        settings: Settings,
        rules: RuleSet,
        topics: TopicNames,
        *,
        lister: Lister | None = None,
        options: BrokerOptions | None = None,
    ) -> None:
        self.options = options or BrokerOptions()
        inputs = [topics.files] + ([topics.s3_events] if self.options.notifications else [])
        super().__init__(
            settings,
            group=f"xcorrflow-broker.{topics.files}",
            inputs=inputs,
            state_topic=topics.broker_state,
            start_at_end=[topics.s3_events],  # older notifications are covered by the listing
            tick_interval=self.options.tick_interval,
        )
        self.rules = rules
        self.topics = topics
        self.lister = lister
        self.core = CommitCore(rules)
        self._pending_latencies: list[tuple[str, float]] = []
        self._next_reconcile = time.monotonic() + 1.0

    def reset(self, records: list[tuple[str, bytes | None]]) -> None:
        """Rebuild the decision core from the state topic."""
        self.core = CommitCore(self.rules)
        self.core.restore(records)
        self._pending_latencies = []
        OPEN_DIRECTORIES.set(self.core.open_directories)
        NEXT_DEADLINE.set(self.core.next_deadline)

    def handle(self, msg: Message) -> Output:
        """One message of the files topic or of the notification topic."""
        now = time.time()
        try:
            if msg.topic() == self.topics.s3_events:
                return self._output(self._notification(msg, now))
            event = decode(msg.value())
            EVENTS_IN.labels(service=SERVICE, type=event.type).inc()
            effects = self.core.handle(event, now, msg.partition() or 0)
        except (EventDecodeError, NotificationError, ValueError) as exc:
            return Output(events=[dead_letter(msg, SERVICE, self.topics.dlq, f"{type(exc).__name__}: {exc}")])
        if effects.ignored:
            IGNORED.labels(reason=effects.ignored).inc()
        return self._output(effects)

    def tick(self, now: float) -> Output:
        """Deadlines every tick; a listing of the rules' prefixes every ``reconcile_interval`` seconds."""
        effects = self.core.tick(now)
        if self.lister is not None and time.monotonic() >= self._next_reconcile:
            effects.merge(self._reconcile(now))
            self._next_reconcile = time.monotonic() + self.options.reconcile_interval
        return self._output(effects)

    def after_commit(self) -> None:
        """Publish the commit latencies of what just became visible."""
        for rule, seconds in self._pending_latencies:
            COMMIT_LATENCY.labels(rule=rule).observe(seconds)
        self._pending_latencies = []
        OPEN_DIRECTORIES.set(self.core.open_directories)
        NEXT_DEADLINE.set(self.core.next_deadline)

    def _notification(self, msg: Message, now: float) -> Effects:
        total = Effects()
        for created in parse_notification(msg.value()):
            EVENTS_IN.labels(service=SERVICE, type="S3Notification").inc()
            if created.bucket == self.settings.s3_bucket:
                total.merge(self.core.object_seen(created.key, created.size, "s3-notification", now))
        return total

    def _reconcile(self, now: float) -> Effects:
        """Count objects whose notification (or event) never came."""
        assert self.lister is not None
        total = Effects()
        for prefix in self.rules.listing_prefixes():
            for key, size in self.lister(prefix):
                if key not in self.core.files:
                    total.merge(self.core.object_seen(key, size, "s3-listing", now))
        return total

    def _output(self, effects: Effects) -> Output:
        self._pending_latencies += effects.commit_latencies
        events = [(self.topics.commits, e.directory, e) for e in effects.events]
        return Output(events=events, state=effects.state)  # type: ignore[arg-type]
