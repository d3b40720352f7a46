"""``xcorrflow worker broker``: the commit broker as a Kafka service, exactly once across crashes.

Design (why it is exactly-once):

* **Consume-transform-produce in Kafka transactions.** Each batch of input messages (files topic and S3
  notification topic) is handled inside one transaction holding (a) the FileReady / DirectoryCommitted events
  and dead letters it decided, (b) the state records it changed, written to a *compacted state topic*, and
  (c) the consumed offsets (``send_offsets_to_transaction``). Either all three become visible or none does.
  Consumers read the commits topic with ``isolation.level=read_committed``, so an aborted decision is never seen.
* **State in a compacted topic, not a replay of the files topic.** A restart reads the state topic to its end
  (one small record per file, directory and producer) instead of re-reading every event since the beginning of
  time; compaction keeps it bounded by the number of live keys while the files topic can use time retention.
* **One active broker, fenced.** The broker owns every partition (it is a light aggregator: a few tens of µs
  per event) and uses a fixed ``transactional.id`` derived from the files topic. A restarted (or second)
  instance calls ``init_transactions``, which aborts whatever the previous one left open and fences it off, so
  a zombie can never commit a stale decision. A single owner also sees every directory's whole state even when
  an outside producer partitions differently, and ``on_file`` dependencies across partitions need no routing.
* After an abortable transaction error the in-memory state is rebuilt from the state topic and the consumer
  rewinds to the committed offsets: memory never runs ahead of what Kafka holds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from prometheus_client import Counter, Gauge, Histogram

from commit_broker.core import CommitCore, Effects
from commit_broker.notifications import NotificationError, parse_notification
from commit_broker.rules import RuleSet
from contracts.events import EventDecodeError, decode
from contracts.kafka import consumer_config, dead_letter_for, partitions_of, produce_event, producer_config
from contracts.metrics import EVENTS_IN, EVENTS_OUT, LATENCY_BUCKETS
from contracts.settings import Settings, TopicNames

log = logging.getLogger(__name__)
SERVICE = "broker"

COMMIT_LATENCY = Histogram(
    "xcorrflow_commit_latency_seconds", "first event of a directory → its commit", ["rule"], buckets=LATENCY_BUCKETS
)
OPEN_DIRECTORIES = Gauge("xcorrflow_open_directories", "directories seen but not yet committed")
TXN_SECONDS = Histogram("xcorrflow_broker_transaction_seconds", "one broker transaction", buckets=LATENCY_BUCKETS)
IGNORED = Counter("xcorrflow_broker_ignored", "inputs that changed nothing", ["reason"])

# (key, size) of every object under a prefix; the reconciler's view of the store.
Lister = Callable[[str], Iterable[tuple[str, int]]]


@dataclass(frozen=True)
class BrokerOptions:
    """Tunables of the broker loop."""

    batch_size: int = 500
    poll_timeout: float = 0.02
    tick_interval: float = 1.0
    reconcile_interval: float = 30.0
    notifications: bool = True


class CommitBroker:
    """The commit broker service; :meth:`run` loops until :meth:`stop` is called."""

    def __init__(
        self,
        settings: Settings,
        rules: RuleSet,
        topics: TopicNames,
        *,
        lister: Lister | None = None,
        options: BrokerOptions | None = None,
    ) -> None:
        self.settings = settings
        self.rules = rules
        self.topics = topics
        self.lister = lister
        self.options = options or BrokerOptions()
        self.group = f"xcorrflow-broker.{topics.files}"
        self._stop = threading.Event()
        self.core = CommitCore(rules)
        self.producer = Producer(producer_config(settings, transactional_id=self.group))
        self.consumer = Consumer(consumer_config(settings, self.group, transactional=True, service=SERVICE))
        self.inputs: list[TopicPartition] = []

    def stop(self) -> None:
        """Ask the loop to finish its current transaction and return."""
        self._stop.set()

    # --- start-up ------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Fence any previous instance, restore state and position the consumer. Called by :meth:`run`."""
        self.producer.init_transactions(60)  # aborts the open transaction of a crashed predecessor
        input_topics = [self.topics.files] + ([self.topics.s3_events] if self.options.notifications else [])
        self.inputs = [TopicPartition(t, p) for t in input_topics for p in partitions_of(self.producer, t)]
        self._recover()

    def _recover(self) -> None:
        """Rebuild the in-memory state from the state topic and rewind the inputs to the committed offsets."""
        self.core = CommitCore(self.rules)
        records = list(read_compacted(self.settings, self.topics.broker_state))
        self.core.restore(records)
        committed = self.consumer.committed(self.inputs, timeout=30)
        start = []
        for tp in committed:
            if tp.offset < 0:  # never committed: the files topic from its start, notifications from now
                tp.offset = OFFSET_END if tp.topic == self.topics.s3_events else OFFSET_BEGINNING
            start.append(tp)
        self.consumer.assign(start)
        OPEN_DIRECTORIES.set(self.core.open_directories)
        log.info("broker restored %d state records, %d open directories", len(records), self.core.open_directories)

    # --- loop ----------------------------------------------------------------------------------------------
    def run(self) -> None:
        """Consume, decide and publish until stopped."""
        self.start()
        next_tick = time.monotonic() + self.options.tick_interval
        next_reconcile = time.monotonic() + (1.0 if self.lister else float("inf"))
        try:
            while not self._stop.is_set():
                batch = self.consumer.consume(self.options.batch_size, self.options.poll_timeout)
                if batch:
                    self._transact(lambda b=batch: self._handle_batch(b), with_offsets=True)
                now = time.monotonic()
                if now >= next_tick:
                    self._transact(lambda: self.core.tick(time.time()), with_offsets=False)
                    next_tick = now + self.options.tick_interval
                if now >= next_reconcile:
                    self._transact(self._reconcile, with_offsets=False)
                    next_reconcile = now + self.options.reconcile_interval
        finally:
            self.consumer.close()
            self.producer.flush(10)

    def _handle_batch(self, batch: list[Message]) -> Effects:
        total = Effects()
        for msg in batch:
            if msg.error():
                log.warning("consume error: %s", msg.error())
                continue
            total.merge(self._handle_message(msg))
        return total

    def _handle_message(self, msg: Message) -> Effects:
        now = time.time()
        try:
            if msg.topic() == self.topics.s3_events:
                return self._handle_notification(msg, now)
            event = decode(msg.value())
            EVENTS_IN.labels(service=SERVICE, type=event.type).inc()
            effects = self.core.handle(event, now, msg.partition() or 0)
        except (EventDecodeError, NotificationError, ValueError) as exc:
            letter = dead_letter_for(msg, SERVICE, str(exc))
            produce_event(self.producer, self.topics.dlq, msg.key(), letter)  # inside the transaction
            EVENTS_OUT.labels(service=SERVICE, type="DeadLetter").inc()
            return Effects()
        if effects.ignored:
            IGNORED.labels(reason=effects.ignored).inc()
        return effects

    def _handle_notification(self, msg: Message, now: float) -> Effects:
        total = Effects()
        for created in parse_notification(msg.value()):
            EVENTS_IN.labels(service=SERVICE, type="S3Notification").inc()
            if created.bucket == self.settings.s3_bucket:
                total.merge(self.core.object_seen(created.key, created.size, "s3-notification", now))
        return total

    def _reconcile(self) -> Effects:
        """List the rules' prefixes and count objects whose notification (or event) never came."""
        assert self.lister is not None
        total = Effects()
        now = time.time()
        for prefix in self.rules.listing_prefixes():
            for key, size in self.lister(prefix):
                if key not in self.core.files:
                    total.merge(self.core.object_seen(key, size, "s3-listing", now))
        return total

    def _transact(self, step: Callable[[], Effects], *, with_offsets: bool) -> None:
        """Run ``step`` and publish its effects, state and (optionally) the consumed offsets atomically."""
        t0 = time.monotonic()
        self.producer.begin_transaction()
        try:
            effects = step()
            self._publish(effects)
            if with_offsets:
                positions = self.consumer.position(self.consumer.assignment())
                self.producer.send_offsets_to_transaction(
                    [tp for tp in positions if tp.offset >= 0], self.consumer.consumer_group_metadata()
                )
            self.producer.commit_transaction(30)
        except KafkaException as exc:
            self._on_transaction_error(exc)
            return
        for rule, seconds in effects.commit_latencies:
            COMMIT_LATENCY.labels(rule=rule).observe(seconds)
        OPEN_DIRECTORIES.set(self.core.open_directories)
        TXN_SECONDS.observe(time.monotonic() - t0)

    def _publish(self, effects: Effects) -> None:
        for event in effects.events:
            produce_event(self.producer, self.topics.commits, event.directory, event)
            EVENTS_OUT.labels(service=SERVICE, type=event.type).inc()
        for key, value in effects.state:
            self.producer.produce(self.topics.broker_state, key=key.encode(), value=value)

    def _on_transaction_error(self, exc: KafkaException) -> None:
        error = exc.args[0]
        if error.txn_requires_abort():
            log.warning("aborting broker transaction: %s", error)
            self.producer.abort_transaction(30)
            self._recover()
            return
        if error.retriable():
            log.warning("retriable transaction error, recovering: %s", error)
            self.producer.abort_transaction(30)
            self._recover()
            return
        raise exc  # fatal (e.g. fenced by a newer instance): stop this one


def read_compacted(settings: Settings, topic: str, timeout: float = 60.0) -> Iterable[tuple[str, bytes | None]]:
    """Every (key, value) of ``topic`` from the beginning to its current end, committed records only.

    Raises:
        TimeoutError: the end was not reached within ``timeout`` seconds.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"{topic}.restore",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    try:
        partitions = partitions_of(consumer, topic)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        pending = set(partitions)
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"restoring {topic}: partitions {sorted(pending)} did not reach their end")
            for msg in consumer.consume(1000, 0.2):
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        pending.discard(msg.partition())
                    continue
                yield (msg.key() or b"").decode(), msg.value()
    finally:
        consumer.close()
