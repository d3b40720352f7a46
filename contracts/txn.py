"""Exactly-once publication: the transactional producer every transactional service commits through.

:class:`Transactions` owns a transactional producer and its error policy; the checkpoints of
:mod:`contracts.checkpoint` (the correlators' per-member transactions, the singletons' group transactions of
:class:`contracts.loop.TransactionalLoop`) commit through it. :func:`read_compacted` restores a singleton's state
topic.

Commit order of one transaction (all inside ``begin_transaction`` … ``commit_transaction``):
  1. produce the output events;  2. produce the state records;  3. ``send_offsets_to_transaction``.
Readers use ``isolation.level=read_committed`` and never see a step that did not commit.

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
from collections.abc import Callable, Iterator

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from prometheus_client import Counter

from contracts.errors import XcorrflowError
from contracts.kafka import (
    REAL_CLIENTS,
    KafkaClients,
    client_config,
    partitions_of,
    producer_config,
    unreachable,
    watch_kafka,
)
from contracts.outage import KAFKA
from contracts.settings import Settings

log = logging.getLogger(__name__)

TXN_ABORTED = Counter("xcorrflow_transactions_aborted", "transactions aborted and retried", ["service", "reason"])
_FENCED = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED})
API_TIMEOUT_S = 10.0  # librdkafka's timeout of one transactional call; a call that times out is repeated
STUCK_GRACE_S = 10.0  # how much longer a call may take before its producer is given up as stuck


class _Stuck(Exception):
    """A transactional call did not return within its timeout and grace."""


class ProducerFenced(XcorrflowError):
    """A newer instance with the same ``transactional.id`` took over; this one must stop."""


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
        producer: Producer | None = None
        while True:
            self._generation = KAFKA.generation
            producer = producer or self.clients.producer(config)
            try:
                init = functools.partial(producer.init_transactions, API_TIMEOUT_S)
                _bounded("init_transactions", init, API_TIMEOUT_S + STUCK_GRACE_S)
            except _Stuck as exc:
                KAFKA.failed(str(exc))
                KAFKA.pause()
                producer = None  # its thread is blocked for good: only a new producer can go on
                continue
            except KafkaException as exc:
                error = exc.args[0]
                if error.code() in _FENCED:
                    raise ProducerFenced(f"{self.transactional_id}: fenced at start ({error.str()})") from exc
                if error.fatal() or not unreachable(exc):
                    raise
                # Retry on the same producer ("retry call to resume"): a timed-out init_transactions goes on in the
                # background, so a producer abandoned here would get its epoch once the broker is back, after ours,
                # and fence us (seen as both singletons fenced right after a 60 s broker outage in make chaos).
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
