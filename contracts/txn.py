"""Exactly-once consume-transform-produce: the transactional producer and the loop of the singleton services.

:class:`Transactions` owns a transactional producer and its error policy; every transactional service (commit
broker, pair scheduler, correlators) commits through it. :class:`TransactionalLoop` is the loop the commit
broker and the pair scheduler share: a subclass says what a batch of input messages (and a periodic tick)
produces, events for output topics and records for its compacted state topic, and the loop publishes them
together with the consumed offsets in one Kafka transaction, restores the state from the state topic at
start-up, and after an aborted transaction rebuilds memory from Kafka, so the in-memory state never runs
ahead of what Kafka holds.

Commit order of one step (all inside ``begin_transaction`` … ``commit_transaction``):
  1. produce the output events;  2. produce the state records;  3. ``send_offsets_to_transaction``.
Readers use ``isolation.level=read_committed`` and never see a step that did not commit.

A batch that produces nothing (a duplicate, a bucket notification for an object no rule covers) changes no
state, so its offsets need no transaction of their own: they ride with the next transaction, or with the
next tick (every ``tick_interval``). A crash before then replays those messages, which again produce nothing.
On this stack a transaction costs Kafka ~6 ms of CPU against ~0.2 ms for a plain produce, and a pipeline
run sends the broker hundreds of such messages.

**Broker restarts.** Every call that waits on the cluster has a timeout; while the cluster is unreachable the
same call is repeated with a growing pause (:mod:`contracts.outage`) until ``faults.kafka_outage_s``, after
which :class:`~contracts.outage.DependencyUnavailable` ends the service with a message that says so. What a
broker restart does to an open transaction decides the rest (see :class:`Transactions`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from prometheus_client import Counter, Histogram

from contracts.errors import TransientError, XcorrflowError
from contracts.events import Event
from contracts.kafka import (
    REAL_CLIENTS,
    KafkaClients,
    client_config,
    consumer_config,
    partitions_of,
    produce_event,
    producer_config,
    unreachable,
    watch_kafka,
    with_kafka,
)
from contracts.metrics import EVENTS_OUT, LATENCY_BUCKETS
from contracts.outage import KAFKA, S3
from contracts.settings import Settings

log = logging.getLogger(__name__)

TXN_SECONDS = Histogram(
    "xcorrflow_transaction_seconds", "one consume-transform-produce transaction", ["service"], buckets=LATENCY_BUCKETS
)
TXN_ABORTED = Counter("xcorrflow_transactions_aborted", "transactions aborted and retried", ["service", "reason"])
_FENCED = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED})
API_TIMEOUT_S = 10.0  # librdkafka's timeout of one transactional call; a call that times out is repeated
STUCK_GRACE_S = 10.0  # how much longer a call may take before its producer is given up as stuck


class _Stuck(Exception):
    """A transactional call did not return within its timeout and grace."""


class ProducerFenced(XcorrflowError):
    """A newer instance with the same ``transactional.id`` took over; this one must stop."""


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


class Transactions:
    """A transactional producer that rides through broker restarts.

    What librdkafka says after a failed transactional call, and what is done about it:

    * abortable (``txn_requires_abort``: a message timed out in the queue, the consumer group moved to a newer
      generation): abort; the caller rewinds its input to the committed offsets and rebuilds its memory.
    * fatal and fenced: a newer instance with this ``transactional.id`` exists: :class:`ProducerFenced`.
    * anything else (a timeout while the broker is away, another fatal error such as ``INVALID_TXN_STATE``
      after the coordinator aborted our transaction on its timeout): the transaction's fate is unknown. A new
      producer with the same ``transactional.id`` is started once the broker answers; its
      ``init_transactions`` settles the old transaction (completing a commit that reached the coordinator,
      aborting one that did not), and the caller rewinds to the committed offsets, which then say exactly
      what landed. So nothing is published twice, even when a commit timed out after it succeeded.
    * a call that does not return: librdkafka 2.16's ``send_offsets_to_transaction`` can block for good,
      whatever its timeout, once the coordinator broker went away (librdkafka issues #5456 and #5511; seen
      here on every broker restart, even for calls made after the broker was back). Each call runs in a helper
      thread and is given ``API_TIMEOUT_S + STUCK_GRACE_S``; past that the producer is abandoned (its thread
      stays blocked) and replaced as above. To avoid the wait, a producer that lived through an outage is
      replaced before its next transaction.
    """

    def __init__(
        self,
        settings: Settings,
        transactional_id: str,
        *,
        timeout_ms: int = 60000,
        service: str = "",
        clients: KafkaClients = REAL_CLIENTS,
    ) -> None:
        """Prepare (no request is sent until :meth:`start`); ``clients`` makes the producer."""
        self.settings = settings
        self.clients = clients
        self.transactional_id = transactional_id
        self.timeout_ms = timeout_ms
        self.service = service or transactional_id
        self.producer: Producer | None = None
        self._generation = -1  # the outage generation the producer was started in

    def start(self) -> Producer:
        """Create the producer and fence predecessors (``init_transactions``), waiting for the broker.

        Raises:
            ProducerFenced: refused as fenced (cannot happen for a fresh producer unless ids collide).
            DependencyUnavailable: the broker stayed away longer than the limit.
        """
        config = producer_config(
            self.settings, transactional_id=self.transactional_id, **{"transaction.timeout.ms": self.timeout_ms}
        )
        while True:
            self._generation = KAFKA.generation
            producer = self.clients.producer(config)
            try:
                init = functools.partial(producer.init_transactions, API_TIMEOUT_S)
                _bounded("init_transactions", init, API_TIMEOUT_S + STUCK_GRACE_S)
            except _Stuck as exc:
                KAFKA.failed(str(exc))
                KAFKA.pause()
                continue
            except KafkaException as exc:
                error = exc.args[0]
                if error.code() in _FENCED:
                    raise ProducerFenced(f"{self.transactional_id}: fenced at start ({error.str()})") from exc
                if error.fatal() or not unreachable(exc):
                    raise
                KAFKA.failed(f"init_transactions: {error.str()}")
                KAFKA.pause()
                continue
            KAFKA.succeeded()
            self.producer = producer
            return producer

    def commit(
        self,
        publish: Callable[[Producer], None],
        offsets: Callable[[], list[TopicPartition]] | None = None,
        group: Consumer | None = None,
    ) -> bool:
        """One transaction: ``publish(producer)``, then the consumed ``offsets()`` of ``group``, then commit.

        Returns:
            True when it committed; False when it did not, or may not have: rewind to the committed offsets.

        Raises:
            ProducerFenced: a newer instance took over.
            DependencyUnavailable: the broker stayed away longer than the limit.
        """
        if self.producer is not None and self._generation != KAFKA.generation and not KAFKA.down:
            self.renew()  # it lived through an outage: its next send_offsets may never return
        producer = self.producer or self.start()
        try:
            producer.begin_transaction()
            publish(producer)
            if offsets is not None and group is not None:
                metadata = group.consumer_group_metadata()
                positions = offsets()
                call = functools.partial(producer.send_offsets_to_transaction, positions, metadata, API_TIMEOUT_S)
                _bounded("send_offsets", call, API_TIMEOUT_S + STUCK_GRACE_S)
            _bounded(
                "commit", functools.partial(producer.commit_transaction, API_TIMEOUT_S), API_TIMEOUT_S + STUCK_GRACE_S
            )
        except KafkaException as exc:
            self._recover(exc)
            return False
        except _Stuck as exc:
            self._unsettled(f"{exc} did not return")
            return False
        KAFKA.succeeded()
        return True

    def _recover(self, exc: KafkaException) -> None:
        error: KafkaError = exc.args[0]
        if error.code() in _FENCED:
            raise ProducerFenced(f"{self.transactional_id}: fenced by a newer instance ({error.str()})") from exc
        if not error.txn_requires_abort():
            if unreachable(exc):
                KAFKA.failed(error.str())
            self._unsettled(error.str())
            return
        TXN_ABORTED.labels(service=self.service, reason=error.name() or str(error.code())).inc()
        log.warning("%s: aborting transaction after %s", self.service, error.str())
        try:
            _bounded("abort", functools.partial(self._producer().abort_transaction, API_TIMEOUT_S), API_TIMEOUT_S * 2)
        except KafkaException as abort_exc:
            if abort_exc.args[0].code() in _FENCED:
                raise ProducerFenced(f"{self.transactional_id}: fenced while aborting") from abort_exc
            self._unsettled(f"abort failed: {abort_exc.args[0].str()}")
        except _Stuck as stuck:
            self._unsettled(f"{stuck} did not return")

    def _unsettled(self, why: str) -> None:
        """The transaction's fate is unknown: a new producer settles it (see the class docstring)."""
        TXN_ABORTED.labels(service=self.service, reason="unsettled").inc()
        log.warning("%s: transaction unsettled (%s); a new producer will settle it", self.service, why)
        while KAFKA.down:
            KAFKA.pause()  # raises past faults.kafka_outage_s
            with contextlib.suppress(KafkaException):
                self._producer().list_topics(timeout=1.0)
                KAFKA.succeeded()
        self.renew()

    def renew(self) -> Producer:
        """Replace the producer by a new one with the same id (its ``init_transactions`` settles what was open).

        The old producer is dropped without a flush: a stuck one would block it, and what it held is settled by
        the new one.
        """
        self.producer = None
        return self.start()

    def _producer(self) -> Producer:
        if self.producer is None:
            raise RuntimeError("Transactions.start() was not called")
        return self.producer

    def flush(self, timeout: float = 10.0) -> None:
        """Serve delivery reports before closing (nothing transactional is pending between commits)."""
        if self.producer is not None:
            with contextlib.suppress(KafkaException):
                self.producer.flush(timeout)


def _bounded(what: str, call: Callable[[], object], timeout_s: float) -> None:
    """Run ``call`` in a helper thread and wait at most ``timeout_s`` for it.

    Raises:
        _Stuck: it did not return in time (the thread is left blocked; it holds nothing else).
        Exception: what ``call`` raised.
    """
    failure: list[BaseException] = []

    def target() -> None:
        try:
            call()
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=target, name=f"txn-{what}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise _Stuck(f"{what} (waited {timeout_s:.0f} s)")
    if failure:
        raise failure[0]


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


def rewind(consumer: Consumer, batch: Iterable[Message]) -> None:
    """Seek every partition of ``batch`` back to its first message, so the batch is consumed again.

    Rewinding to the batch's own first offsets (not to the committed ones) also covers partitions that have no
    committed offset yet. A partition revoked meanwhile belongs to another member now: its seek is skipped.
    """
    for tp in first_offsets(batch):
        with contextlib.suppress(KafkaException):
            consumer.seek(tp)


class TransactionalLoop(ABC):
    """One fenced instance consuming ``inputs`` (all partitions) and publishing transactionally."""

    service = "transactional"

    def __init__(
        self,
        settings: Settings,
        *,
        group: str,
        inputs: list[str],
        state_topic: str,
        start_at_end: Iterable[str] = (),
        batch_size: int = 500,
        poll_timeout: float = 0.02,
        tick_interval: float = 1.0,
        clients: KafkaClients = REAL_CLIENTS,
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.group = group
        self.input_topics = inputs
        self.state_topic = state_topic
        self.start_at_end = set(start_at_end)  # topics read from "now" when the group has no offset yet
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.tick_interval = tick_interval
        self._stop = threading.Event()
        self._offsets_pending = False  # consumed messages whose offsets no transaction has committed yet
        # A fixed transactional.id per group: a new instance fences the previous one and aborts what it left open.
        self.txn = Transactions(settings, group, service=self.service, clients=clients)
        self.consumer = clients.consumer(consumer_config(settings, group, transactional=True, service=self.service))
        self.assignment: list[TopicPartition] = []

    # --- hooks ---------------------------------------------------------------------------------------------
    @abstractmethod
    def reset(self, records: list[tuple[str, bytes | None]]) -> None:
        """Replace the in-memory state by the one the state records describe."""

    @abstractmethod
    def handle(self, msg: Message) -> Output:
        """Process one input message (errors are the subclass's to dead-letter).

        A :class:`~storage.errors.StorageUnavailable` raised here aborts the batch: it is consumed again.
        """

    def tick(self, now: float) -> Output:
        """Periodic work (deadlines, timers); called every ``tick_interval`` seconds."""
        return Output()

    def after_commit(self) -> None:  # noqa: B027 - optional hook
        """Called after each committed transaction (update gauges and latency metrics)."""

    def work(self) -> None:  # noqa: B027 - optional hook
        """Called once per loop turn, outside any transaction: long work with its own transactions (a subclass
        that writes objects records its intent first, see :class:`consumers.stacker.Stacker`)."""

    # --- lifecycle -----------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Finish the current transaction and return from :meth:`run`."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stop.is_set()

    @property
    def producer(self) -> Producer:
        """The current transactional producer (renewed after fatal errors)."""
        return self.txn.producer or self.txn.start()

    def start(self) -> None:
        """Fence predecessors, restore state and position the consumer at the committed offsets."""
        producer = self.txn.start()
        self.assignment = [TopicPartition(t, p) for t in self.input_topics for p in partitions_of(producer, t)]
        self.recover()

    def recover(self) -> None:
        """Rebuild memory from the state topic and rewind the inputs to the committed offsets."""
        records = list(read_compacted(self.settings, self.state_topic, clients=self.clients))
        self.reset(records)
        committed = with_kafka("committed offsets", lambda: self.consumer.committed(self.assignment, timeout=30))
        positions = []
        for tp in committed:
            if tp.offset < 0 and tp.topic in self.start_at_end:
                # Resolve "the end" now: librdkafka would resolve OFFSET_END only when fetching starts, and
                # records written in between would be skipped.
                tp.offset = with_kafka("watermarks", functools.partial(self.consumer.get_watermark_offsets, tp, 10))[1]
            elif tp.offset < 0:
                tp.offset = OFFSET_BEGINNING
            positions.append(tp)
        self.consumer.assign(positions)
        self._offsets_pending = False
        log.info("%s ready: restored %d state records", self.service, len(records))

    def run(self) -> None:
        """Loop until :meth:`stop`."""
        self.start()
        next_tick = time.monotonic() + self.tick_interval
        try:
            while not self._stop.is_set():
                self.poll_once()
                if time.monotonic() >= next_tick:
                    self.transact(lambda: self.tick(time.time()), with_offsets=self._offsets_pending)
                    next_tick = time.monotonic() + self.tick_interval
                self.work()
            if self._offsets_pending:
                self.transact(Output, with_offsets=True)
        finally:
            self.consumer.close()
            self.txn.flush()

    def poll_once(self) -> bool | None:
        """Consume one batch and publish what it produced with its offsets (the input half of one turn of
        :meth:`run`, which also ticks and works).

        Returns:
            None when there was nothing to consume, else what :meth:`transact` returned.
        """
        batch = self.consumer.consume(self.batch_size, self.poll_timeout)
        watch_kafka(self.consumer)
        if not batch:
            return None
        return self.transact(functools.partial(self._handle_batch, batch), with_offsets=True, defer_empty=True)

    def _handle_batch(self, batch: list[Message]) -> Output:
        out = Output()
        for msg in batch:
            if msg.error():
                log.debug("%s: consume error %s", self.service, msg.error())
                continue
            KAFKA.succeeded()
            out.extend(self.handle(msg))
        return out

    def transact(self, step: Callable[[], Output], *, with_offsets: bool, defer_empty: bool = False) -> bool:
        """Run ``step()`` and publish its output, state and (optionally) offsets atomically.

        With ``defer_empty``, a step that outputs nothing commits nothing: its offsets wait for the next
        transaction or tick.

        Returns:
            True when a transaction committed (or none was needed); False when the step was rolled back: the
            state is rebuilt from Kafka and the inputs rewound to the committed offsets.

        Raises:
            ProducerFenced: a newer instance took over. DependencyUnavailable: Kafka or S3 stayed away too long.
        """
        t0 = time.monotonic()
        try:
            out = step()
        except TransientError as exc:
            S3.failed(exc)
            self.recover()
            S3.pause()
            return False
        if not out and (defer_empty or not with_offsets):
            self._offsets_pending |= with_offsets
            return True
        offsets = self._positions if with_offsets else None
        if not self.txn.commit(lambda producer: self._publish(producer, out), offsets, self.consumer):
            self.recover()
            return False
        if with_offsets:
            self._offsets_pending = False
        TXN_SECONDS.labels(service=self.service).observe(time.monotonic() - t0)
        self.after_commit()
        return True

    def _positions(self) -> list[TopicPartition]:
        positions = self.consumer.position(self.consumer.assignment())
        return [tp for tp in positions if tp.offset >= 0]

    def _publish(self, producer: Producer, out: Output) -> None:
        for topic, key, event in out.events:
            produce_event(producer, topic, key, event)
            EVENTS_OUT.labels(service=self.service, type=event.type).inc()
        for key, value in out.state:
            producer.produce(self.state_topic, key=key.encode(), value=value)


def read_compacted(
    settings: Settings, topic: str, timeout: float = 60.0, *, clients: KafkaClients = REAL_CLIENTS
) -> Iterator[tuple[str, bytes | None]]:
    """Every (key, value) of ``topic`` from its beginning to its current end, committed records only.

    The whole topic is read before anything is yielded, so a broker outage in the middle restarts the read
    instead of yielding a record twice.

    Raises:
        TimeoutError: the end was not reached within ``timeout`` seconds of the broker answering.
        DependencyUnavailable: the broker stayed away longer than ``faults.kafka_outage_s``.
    """
    while True:
        try:
            records = _read_to_end(settings, topic, timeout, clients)
        except KafkaException as exc:
            if not unreachable(exc):
                raise
            KAFKA.failed(f"reading {topic}: {exc.args[0].str()}")
            KAFKA.pause()
            continue
        yield from records
        return


def _read_to_end(
    settings: Settings, topic: str, timeout: float, clients: KafkaClients
) -> list[tuple[str, bytes | None]]:
    config = client_config(
        settings,
        **{
            "group.id": f"{topic}.restore",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        },
    )
    consumer = clients.consumer(config)
    try:
        partitions = partitions_of(consumer, topic)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        pending, records = set(partitions), []
        deadline = time.monotonic() + timeout
        while pending:
            if KAFKA.down:
                deadline = time.monotonic() + timeout  # the clock runs while the broker answers
                watch_kafka(consumer)
            if time.monotonic() > deadline:
                raise TimeoutError(f"restoring {topic}: partitions {sorted(pending)} did not reach their end")
            for msg in consumer.consume(1000, 0.2):
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(msg.partition() or 0)
                    continue
                records.append(((msg.key() or b"").decode(), msg.value()))
        return records
    finally:
        consumer.close()
