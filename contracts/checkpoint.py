"""How a service commits what it consumed: one checkpoint object, three commit modes.

After quix-streams' ``Checkpoint``: a service loop consumes a batch, hands every message to its own ``handle``
(which returns an :class:`Output`), and the checkpoint publishes that output together with the batch's
offsets. The loop owns no offset, no transaction and no rewind; the checkpoint owns all three, with one
policy for every service:

* **Transient failure** (:class:`~contracts.errors.TransientError`: the object store is away): nothing of the
  batch is published; the batch is rewound (:meth:`Checkpoint.rewind`) and consumed again after
  :meth:`contracts.outage.Outage.pause`, which ends the service once ``faults.s3_outage_s`` has passed.
* **A commit that failed, or may have failed**: :meth:`Checkpoint.rewind_unsettled` puts the consumer back where
  the committed state says it is, so what landed is never consumed twice and what did not is consumed again.

The modes, one per kind of service:

=========================  ============================================  ===========================================
mode                       who                                           what a commit is
=========================  ============================================  ===========================================
:class:`StoredOffsets`     preprocess workers, dv/v monitor, latency     produce, wait for every acknowledgement,
                           tracker (idempotent work, at least once)      then ``store_offsets`` (auto-committed)
:class:`MemberTransactions` correlators (a consumer group of many         one Kafka transaction per batch, the
                           members, each with its own producer id)       batch's ``next_offsets``; KIP-447 fencing
:class:`GroupTransactions`  commit broker, pair scheduler, stacker        one transaction with the state records and
                           (fenced singletons with a state topic)        the consumer's positions; empty steps wait
=========================  ============================================  ===========================================

A rewind of a transactional singleton also rebuilds its memory from the state topic (``recover``), since its
``handle`` changed that memory for messages that are now consumed again.
"""

from __future__ import annotations

import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from prometheus_client import Histogram

from contracts.errors import TransientError
from contracts.events import Event
from contracts.kafka import flush_through_outage, produce_event, watch_kafka, with_kafka
from contracts.metrics import EVENTS_OUT, LATENCY_BUCKETS
from contracts.outage import KAFKA, S3
from contracts.txn import Transactions

log = logging.getLogger(__name__)

TXN_SECONDS = Histogram(
    "xcorrflow_transaction_seconds", "one consume-transform-produce transaction", ["service"], buckets=LATENCY_BUCKETS
)


@dataclass
class Output:
    """What one step decided: events per topic (with their Kafka key) and state records."""

    events: list[tuple[str, str, Event]] = field(default_factory=list)
    state: list[tuple[str, bytes | None]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.events or self.state)

    def extend(self, other: Output) -> None:
        """Append another step's output."""
        self.events += other.events
        self.state += other.state


def first_offsets(batch: Iterable[Message]) -> list[TopicPartition]:
    """The offset of the first message of each partition in a batch: where a rewind goes back to."""
    first: dict[tuple[str, int], int] = {}
    for m in batch:
        tp = (m.topic() or "", m.partition() or 0)
        first[tp] = min(first.get(tp, m.offset() or 0), m.offset() or 0)
    return [TopicPartition(t, p, o) for (t, p), o in first.items()]


def next_offsets(batch: Iterable[Message]) -> list[TopicPartition]:
    """The offsets to commit after a batch: one past the last message of each partition in it."""
    last: dict[tuple[str, int], int] = {}
    for m in batch:
        tp = (m.topic() or "", m.partition() or 0)
        last[tp] = max(last.get(tp, -1), m.offset() or 0)
    return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]


class Checkpoint(ABC):
    """The consume-handle-commit step of one service loop (see the module docstring for the policy)."""

    def __init__(self, consumer: Consumer, *, service: str) -> None:
        self.consumer = consumer
        self.service = service
        self.commits = 0  # transactions (or acknowledged publications) so far: services update gauges on change

    def consume(self, max_messages: int, timeout: float) -> list[Message]:
        """Up to ``max_messages`` records; consume errors (end of partition, a broker going away) are dropped."""
        batch = self.consumer.consume(max_messages, timeout)
        watch_kafka(self.consumer)
        good = []
        for msg in batch:
            if msg.error():
                log.debug("%s: consume error %s", self.service, msg.error())
                continue
            good.append(msg)
        if good:
            KAFKA.succeeded()
        return good

    def step(self, batch: list[Message], handle: Callable[[Message], Output]) -> bool | None:
        """Handle every message of ``batch`` and commit their output with the batch's offsets.

        Returns:
            None for an empty batch; True when the batch is committed; False when it was rolled back and will be
            consumed again.

        Raises:
            ProducerFenced: a newer instance took over. DependencyUnavailable: Kafka or S3 stayed away too long.
        """
        if not batch:
            return None
        return self.run(lambda: _handle_all(batch, handle), batch)

    def run(self, work: Callable[[], Output], batch: list[Message]) -> bool:
        """Do ``work`` (which consumed ``batch``, possibly empty) and commit its output: the one failure policy."""
        try:
            out = work()
        except TransientError as exc:
            S3.failed(exc)
            log.warning("%s: store unavailable (%s); %d message(s) will be consumed again", self.service, exc,
                        len(batch))  # fmt: skip
            self.rewind(batch)
            S3.pause()
            return False
        if not self.commit(out, batch):
            self.rewind_unsettled(batch)
            return False
        return True

    @abstractmethod
    def commit(self, out: Output, batch: list[Message]) -> bool:
        """Publish ``out`` with the offsets of ``batch``; False when it did not land, or may not have."""

    def landed(self, out: Output, started: float | None = None) -> bool:
        """Account for ``out`` once it landed: its events count as published (an aborted transaction's are
        consumed and sent again, so they are not counted before), one more commit, and a transaction's duration
        when it ``started`` (monotonic seconds)."""
        for _, _, event in out.events:
            EVENTS_OUT.labels(service=self.service, type=event.type).inc()
        self.commits += 1
        if started is not None:
            TXN_SECONDS.labels(service=self.service).observe(time.monotonic() - started)
        return True

    def rewind(self, batch: list[Message]) -> None:
        """Seek every partition of ``batch`` back to its first message, so the batch is consumed again.

        Going back to the batch's own first offsets (not to the committed ones) also covers partitions that have
        no committed offset yet. A partition revoked meanwhile belongs to another member now: its seek is skipped.
        """
        for tp in first_offsets(batch):
            with contextlib.suppress(KafkaException):
                self.consumer.seek(tp)

    def rewind_unsettled(self, batch: list[Message]) -> None:
        """After a commit whose fate is unknown: go back to where the committed state says the input is."""
        self.rewind(batch)

    def close(self) -> None:
        """Leave the group (a stored-offsets consumer commits what it stored first)."""
        self.consumer.close()


def _handle_all(batch: list[Message], handle: Callable[[Message], Output]) -> Output:
    out = Output()
    for msg in batch:
        out.extend(handle(msg))
    return out


def _publish(producer: Producer, out: Output, state_topic: str = "") -> None:
    for topic, key, event in out.events:
        produce_event(producer, topic, key, event)
    for key, value in out.state:
        producer.produce(state_topic, key=key.encode(), value=value)


class StoredOffsets(Checkpoint):
    """At least once: publish, wait for every acknowledgement, then store the batch's offsets for auto-commit.

    For idempotent work only (a redelivered message is done again to the same result): a crash between the
    acknowledgement and the next auto-commit repeats the message, never loses it.
    """

    def __init__(self, consumer: Consumer, producer: Producer | None = None, *, service: str) -> None:
        super().__init__(consumer, service=service)
        self.producer = producer

    def commit(self, out: Output, batch: list[Message]) -> bool:
        if out.events and not self._deliver(out):
            KAFKA.pause()
            return False
        for msg in batch:
            try:
                self.consumer.store_offsets(message=msg)
            except KafkaException as exc:  # revoked meanwhile: the new owner starts from the committed offset
                log.info("offset of %s[%s]@%s not stored (%s); it will be redelivered", msg.topic(), msg.partition(),
                         msg.offset(), exc.args[0].str())  # fmt: skip
        return self.landed(out)

    def _deliver(self, out: Output) -> bool:
        if self.producer is None:
            raise RuntimeError(f"{self.service}: a stored-offsets checkpoint without a producer cannot publish")
        failed: list[KafkaError] = []

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failed.append(err)

        try:
            for topic, key, event in out.events:
                produce_event(self.producer, topic, key, event, on_delivery=on_delivery)
            flush_through_outage(self.producer, f"{self.service} output")
        except KafkaException as exc:
            failed.append(exc.args[0])
        if failed:
            KAFKA.failed(failed[0].str())
            log.warning("%s: output not delivered (%s); the batch will be consumed again", self.service,
                        failed[0].str())  # fmt: skip
            return False
        return True


class MemberTransactions(Checkpoint):
    """One transaction per batch for a member of a consumer group: its events and the batch's next offsets.

    The transaction carries the group's generation (KIP-447), so a zombie from an older generation cannot
    commit. After a commit whose fate is unknown, the committed offsets say exactly what landed.
    """

    def __init__(self, consumer: Consumer, txn: Transactions, *, service: str) -> None:
        super().__init__(consumer, service=service)
        self.txn = txn

    def commit(self, out: Output, batch: list[Message]) -> bool:
        t0 = time.monotonic()
        if not self.txn.commit(lambda p: _publish(p, out), lambda: next_offsets(batch), self.consumer):
            return False
        return self.landed(out, t0)

    def rewind_unsettled(self, batch: list[Message]) -> None:
        rewind_to_committed(self.consumer)


class GroupTransactions(Checkpoint):
    """One transaction per step for a fenced singleton: its events, its state records and the consumer's positions.

    A step that outputs nothing (a duplicate, a notification no rule covers) changes no state, so its offsets
    need no transaction of their own: they ride with the next transaction (a tick's at the latest). A crash
    before then replays those messages, which again produce nothing. Every rewind rebuilds the service's memory
    from its state topic and Kafka's committed offsets (``recover``).
    """

    def __init__(
        self, consumer: Consumer, txn: Transactions, *, service: str, state_topic: str, recover: Callable[[], None]
    ) -> None:
        super().__init__(consumer, service=service)
        self.txn = txn
        self.state_topic = state_topic
        self.recover = recover
        self.offsets_pending = False  # consumed messages whose offsets no transaction has committed yet

    def commit(self, out: Output, batch: list[Message]) -> bool:
        if not out and batch:
            self.offsets_pending = True
            return True
        with_offsets = bool(batch) or self.offsets_pending
        if not out and not with_offsets:
            return True
        t0 = time.monotonic()
        offsets = self._positions if with_offsets else None
        if not self.txn.commit(lambda p: _publish(p, out, self.state_topic), offsets, self.consumer):
            return False
        self.offsets_pending = self.offsets_pending and not with_offsets
        return self.landed(out, t0)

    def rewind(self, batch: list[Message]) -> None:
        self.recover()

    def rewind_unsettled(self, batch: list[Message]) -> None:
        self.recover()

    def _positions(self) -> list[TopicPartition]:
        positions = self.consumer.position(self.consumer.assignment())
        return [tp for tp in positions if tp.offset >= 0]


def rewind_to_committed(consumer: Consumer) -> None:
    """Seek every assigned partition to its committed offset (after a transaction whose fate was unknown).

    Partitions without a committed offset go back to their beginning (``auto.offset.reset=earliest``).
    """
    assigned = consumer.assignment()
    if not assigned:
        return
    committed = with_kafka("committed offsets", lambda: consumer.committed(assigned, timeout=30))
    for tp in committed:
        tp.offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
        with contextlib.suppress(KafkaException):  # revoked meanwhile: its new owner starts from the same place
            consumer.seek(tp)
