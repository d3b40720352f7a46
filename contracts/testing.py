"""An in-memory Kafka for unit tests of the service loops: topics, consumer groups, transactions, rewinds.

In the spirit of bytewax's ``testing`` module: a real class shipped with the code, so that each service loop gets
tests of its crash semantics without a broker. :class:`MemoryBroker` makes clients from the same librdkafka
config dicts the real ones get (:class:`~contracts.kafka.KafkaClients`), so a service under test runs its own
code path, config included. What it models, and what it leaves out:

- Topics of partitions; a keyed message goes to ``crc32(key) % partitions``, a keyless one to partition 0.
- Transactions: what a transactional producer sends stays invisible until ``commit_transaction``, which
  publishes it together with the offsets given to ``send_offsets_to_transaction``, atomically. Consumers
  therefore always read committed data (``read_committed``); an aborted transaction leaves no trace, not
  even an offset gap.
- Fencing: ``init_transactions`` of a producer with a ``transactional.id`` aborts what an earlier producer
  with that id left open and fences that producer (its next call raises the fatal ``_FENCED`` error).
- Consumer groups: committed offsets per group; ``subscribe`` assigns every partition of the topics to the
  one consumer (no rebalancing between members), starting at the committed offset or, without one, at
  ``auto.offset.reset``. Stored offsets (``store_offsets``) are committed by ``commit()`` and by ``close()``
  when ``enable.auto.commit`` is on; the auto-commit timer is left out. With ``enable.partition.eof``, a
  consumer that reaches the end of a partition gets one ``_PARTITION_EOF`` event there, as from librdkafka.
- Crashes: :meth:`MemoryBroker.crash_at` makes the next call of a producer method raise :class:`Crash`, a
  ``BaseException`` no service catches: the "process" dies there, and the test starts a new instance.

Not modelled: timeouts and outages, rebalances between several members, compaction, timestamps.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from contracts.kafka import KafkaClients

Delivery = Callable[[Any, Any], None]


class Crash(BaseException):
    """The planned death of a process at ``point`` (see :meth:`MemoryBroker.crash_at`)."""

    def __init__(self, point: str) -> None:
        super().__init__(f"crashed at {point}")
        self.point = point


@dataclass(frozen=True)
class MemoryMessage:
    """A consumed record, with the accessors of ``confluent_kafka.Message`` that the services use."""

    _topic: str
    _partition: int
    _offset: int
    _key: bytes | None
    _value: bytes | None
    _headers: list[tuple[str, bytes]] | None = None
    _error: KafkaError | None = None

    def topic(self) -> str:
        """The record's topic."""
        return self._topic

    def partition(self) -> int:
        """The record's partition."""
        return self._partition

    def offset(self) -> int:
        """The record's offset in its partition."""
        return self._offset

    def key(self) -> bytes | None:
        """The record's key."""
        return self._key

    def value(self) -> bytes | None:
        """The record's value."""
        return self._value

    def headers(self) -> list[tuple[str, bytes]] | None:
        """The record's headers."""
        return self._headers

    def error(self) -> KafkaError | None:
        """None for a record; ``_PARTITION_EOF`` for the end-of-partition event (``enable.partition.eof``)."""
        return self._error

    def timestamp(self) -> tuple[int, int]:
        """Not modelled: ``(TIMESTAMP_NOT_AVAILABLE, 0)``."""
        return 0, 0


@dataclass
class _Transaction:
    records: list[tuple[str, bytes | None, bytes | None, Any]] = field(default_factory=list)
    offsets: dict[str, list[TopicPartition]] = field(default_factory=dict)


class MemoryBroker:
    """Topics, committed group offsets and open transactions of one in-memory cluster."""

    def __init__(self, partitions: int = 1) -> None:
        """``partitions``: of every topic created on first use."""
        self.default_partitions = partitions
        self.logs: dict[str, list[list[MemoryMessage]]] = {}
        self.committed: dict[str, dict[tuple[str, int], int]] = {}
        self.owners: dict[str, MemoryProducer] = {}  # transactional.id -> the producer that holds it
        self.transactions_committed = 0
        self._crash: str | None = None

    def clients(self) -> KafkaClients:
        """Client factories for a service under test."""
        return KafkaClients(consumer=self.consumer, producer=self.producer)

    def consumer(self, config: dict[str, Any]) -> Consumer:
        """A consumer of this cluster, made from a librdkafka config (typed as the real one for the services)."""
        return cast(Consumer, MemoryConsumer(self, config))

    def producer(self, config: dict[str, Any]) -> Producer:
        """A producer of this cluster, made from a librdkafka config."""
        return cast(Producer, MemoryProducer(self, config))

    def create_topic(self, name: str, partitions: int | None = None) -> None:
        """Create ``name`` unless it exists."""
        self.logs.setdefault(name, [[] for _ in range(partitions or self.default_partitions)])

    def messages(self, topic: str) -> list[MemoryMessage]:
        """Every visible record of ``topic``, partition by partition."""
        self.create_topic(topic)
        return [m for partition in self.logs[topic] for m in partition]

    def crash_at(self, point: str) -> None:
        """Make the next producer call named ``point`` (e.g. ``"commit_transaction"``) raise :class:`Crash`."""
        self._crash = point

    def end(self, topic: str, partition: int) -> int:
        """The offset the next record of a partition gets."""
        self.create_topic(topic)
        return len(self.logs[topic][partition])

    def append(self, topic: str, key: bytes | None, value: bytes | None, headers: Any = None) -> MemoryMessage:
        """Publish one record at once (what a committed transaction or a plain producer does)."""
        self.create_topic(topic)
        partition = zlib.crc32(key) % len(self.logs[topic]) if key else 0
        message = MemoryMessage(topic, partition, self.end(topic, partition), key, value, headers)
        self.logs[topic][partition].append(message)
        return message

    def commit_offsets(self, group: str, offsets: Iterable[TopicPartition]) -> None:
        """Set a group's committed offsets."""
        for tp in offsets:
            self.committed.setdefault(group, {})[(tp.topic, tp.partition)] = tp.offset

    def metadata(self, topic: str | None = None) -> SimpleNamespace:
        """What ``list_topics`` returns: ``.topics[name].partitions`` and one broker."""
        if topic is not None:
            self.create_topic(topic)
        names = [topic] if topic is not None else list(self.logs)
        topics = {n: SimpleNamespace(partitions=dict.fromkeys(range(len(self.logs[n]))), error=None) for n in names}
        return SimpleNamespace(topics=topics, brokers={1: None})

    def _check_crash(self, point: str) -> None:
        if self._crash == point:
            self._crash = None
            raise Crash(point)


class MemoryProducer:
    """A producer: plain (records published at once) or transactional (``transactional.id`` in its config)."""

    def __init__(self, broker: MemoryBroker, config: dict[str, Any]) -> None:
        self.broker = broker
        self.transactional_id: str | None = config.get("transactional.id")
        self.default_delivery: Delivery | None = config.get("on_delivery")
        self._txn: _Transaction | None = None
        self._deliveries: list[tuple[Delivery, MemoryMessage]] = []

    def produce(
        self,
        topic: str,
        value: bytes | str | None = None,
        key: bytes | str | None = None,
        *,
        on_delivery: Delivery | None = None,
        headers: Any = None,
        **_: Any,
    ) -> None:
        """Send one record: into the open transaction, or published at once (delivered at the next poll)."""
        self.broker._check_crash("produce")
        record = (topic, _bytes(key), _bytes(value), headers)
        if self.transactional_id is not None:
            self._check_fenced()
            if self._txn is None:
                raise KafkaException(KafkaError(KafkaError._STATE, "produce outside a transaction"))
            self._txn.records.append(record)
            return
        message = self.broker.append(*record)
        callback = on_delivery or self.default_delivery
        if callback is not None:
            self._deliveries.append((callback, message))

    def poll(self, timeout: float = 0) -> int:
        """Serve delivery reports; returns how many."""
        served, self._deliveries = self._deliveries, []
        for callback, message in served:
            callback(None, message)
        return len(served)

    def flush(self, timeout: float = -1) -> int:
        """Serve delivery reports; nothing is ever left in the queue."""
        self.poll()
        return 0

    def init_transactions(self, timeout: float = -1) -> None:
        """Take the transactional id: abort what its previous holder left open, and fence that holder."""
        self.broker._check_crash("init_transactions")
        assert self.transactional_id is not None, "init_transactions needs a transactional.id"
        previous = self.broker.owners.get(self.transactional_id)
        if previous is not None and previous is not self:
            previous._txn = None
        self.broker.owners[self.transactional_id] = self

    def begin_transaction(self) -> None:
        """Open a transaction."""
        self.broker._check_crash("begin_transaction")
        self._check_fenced()
        self._txn = _Transaction()

    def send_offsets_to_transaction(self, offsets: list[TopicPartition], metadata: Any, timeout: float = -1) -> None:
        """Commit ``offsets`` for the group of ``metadata`` with the transaction."""
        self.broker._check_crash("send_offsets_to_transaction")
        self._open().offsets.setdefault(metadata.group, []).extend(offsets)

    def commit_transaction(self, timeout: float = -1) -> None:
        """Publish the transaction's records and commit its offsets, at once."""
        self.broker._check_crash("commit_transaction")
        txn = self._open()
        for record in txn.records:
            self.broker.append(*record)
        for group, offsets in txn.offsets.items():
            self.broker.commit_offsets(group, offsets)
        self.broker.transactions_committed += 1
        self._txn = None

    def abort_transaction(self, timeout: float = -1) -> None:
        """Drop the transaction."""
        self._check_fenced()
        self._txn = None

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> SimpleNamespace:
        """Cluster metadata."""
        return self.broker.metadata(topic)

    def _open(self) -> _Transaction:
        self._check_fenced()
        if self._txn is None:
            raise KafkaException(KafkaError(KafkaError._STATE, "no open transaction"))
        return self._txn

    def _check_fenced(self) -> None:
        if self.transactional_id is not None and self.broker.owners.get(self.transactional_id) is not self:
            raise KafkaException(KafkaError(KafkaError._FENCED, "fenced by a newer producer", fatal=True))


class MemoryConsumer:
    """The one member of its group: it is assigned every partition of what it subscribes to."""

    def __init__(self, broker: MemoryBroker, config: dict[str, Any]) -> None:
        self.broker = broker
        self.group: str = config.get("group.id", "")
        self.reset_to_end = config.get("auto.offset.reset") == "latest"
        self.auto_commit = bool(config.get("enable.auto.commit", True))
        self.report_eof = bool(config.get("enable.partition.eof", False))
        self._eof_at: set[tuple[str, int, int]] = set()
        self.positions: dict[tuple[str, int], int] = {}
        self.stored: dict[tuple[str, int], int] = {}
        self.closed = False

    def subscribe(self, topics: list[str], on_assign: Callable[..., None] | None = None, **_: Any) -> None:
        """Assign every partition of ``topics`` at the group's committed offsets."""
        for topic in topics:
            self.broker.create_topic(topic)
        self.assign([TopicPartition(t, p) for t in topics for p in range(len(self.broker.logs[t]))])
        if on_assign is not None:
            on_assign(self, self.assignment())

    def assign(self, partitions: list[TopicPartition]) -> None:
        """Read exactly these partitions, from their given offsets (or the committed ones)."""
        self.positions = {(tp.topic, tp.partition): self._resolve(tp) for tp in partitions}

    def assignment(self) -> list[TopicPartition]:
        """The assigned partitions."""
        return [TopicPartition(t, p) for t, p in self.positions]

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[MemoryMessage]:
        """Up to ``num_messages`` records from the positions on (never waits)."""
        out: list[MemoryMessage] = []
        for (topic, partition), position in self.positions.items():
            records = self.broker.logs[topic][partition][position : position + num_messages - len(out)]
            out += records
            position += len(records)
            self.positions[(topic, partition)] = position
            if self.report_eof and position == self.broker.end(topic, partition):
                out += self._eof(topic, partition, position)
        return out

    def _eof(self, topic: str, partition: int, position: int) -> list[MemoryMessage]:
        """The end-of-partition event, once per position reached."""
        if (topic, partition, position) in self._eof_at:
            return []
        self._eof_at.add((topic, partition, position))
        error = KafkaError(KafkaError._PARTITION_EOF, f"{topic} [{partition}] reached end at offset {position}")
        return [MemoryMessage(topic, partition, position, None, None, None, error)]

    def poll(self, timeout: float = -1) -> MemoryMessage | None:
        """One record, or None."""
        batch = self.consume(1, timeout)
        return batch[0] if batch else None

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """Where the next consume starts, per partition."""
        return [TopicPartition(tp.topic, tp.partition, self.positions[(tp.topic, tp.partition)]) for tp in partitions]

    def committed(self, partitions: list[TopicPartition], timeout: float = -1) -> list[TopicPartition]:
        """The group's committed offsets (``OFFSET_INVALID`` where there is none)."""
        offsets = self.broker.committed.get(self.group, {})
        return [TopicPartition(tp.topic, tp.partition, offsets.get((tp.topic, tp.partition), OFFSET_INVALID))
                for tp in partitions]  # fmt: skip

    def seek(self, partition: TopicPartition) -> None:
        """Move a partition's position."""
        self.positions[(partition.topic, partition.partition)] = self._resolve(partition)

    def store_offsets(self, message: MemoryMessage | None = None, offsets: list[TopicPartition] | None = None) -> None:
        """Remember offsets for the next commit (``message``: one past it)."""
        if message is not None:
            self.stored[(message.topic(), message.partition())] = message.offset() + 1
        for tp in offsets or []:
            self.stored[(tp.topic, tp.partition)] = tp.offset

    def commit(self, message: Any = None, offsets: list[TopicPartition] | None = None, **_: Any) -> None:
        """Commit ``offsets``, or the stored ones."""
        if offsets is None:
            offsets = [TopicPartition(t, p, o) for (t, p), o in self.stored.items()]
        self.broker.commit_offsets(self.group, offsets)

    def consumer_group_metadata(self) -> SimpleNamespace:
        """What ``send_offsets_to_transaction`` needs: the group."""
        return SimpleNamespace(group=self.group)

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float = -1, **_: Any) -> tuple[int, int]:
        """(low, high) of a partition."""
        return 0, self.broker.end(partition.topic, partition.partition)

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> SimpleNamespace:
        """Cluster metadata."""
        return self.broker.metadata(topic)

    def unsubscribe(self) -> None:
        """Drop the assignment."""
        self.positions = {}

    def close(self) -> None:
        """Leave; with auto commit on, the stored offsets are committed first (as librdkafka does)."""
        if self.auto_commit and self.stored:
            self.commit()
        self.closed = True

    def _resolve(self, tp: TopicPartition) -> int:
        if tp.offset >= 0:
            return int(tp.offset)
        if tp.offset == OFFSET_BEGINNING:
            return 0
        if tp.offset == OFFSET_END:
            return self.broker.end(tp.topic, tp.partition)
        committed = self.broker.committed.get(self.group, {}).get((tp.topic, tp.partition))
        if committed is not None:
            return committed
        return self.broker.end(tp.topic, tp.partition) if self.reset_to_end else 0


def _bytes(data: bytes | str | None) -> bytes | None:
    return data.encode() if isinstance(data, str) else data
