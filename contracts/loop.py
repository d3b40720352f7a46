"""The loop of the fenced singleton services: commit broker, pair scheduler, stacker.

A subclass says what a batch of input messages (and a periodic tick) produces: events for output topics and
records for its compacted state topic. Its :class:`~contracts.checkpoint.GroupTransactions` checkpoint publishes
them together with the consumed offsets in one Kafka transaction. The loop restores the state from the state
topic at start-up, and after a rolled-back step rebuilds memory from Kafka, so the in-memory state never runs
ahead of what Kafka holds. A batch that produces nothing commits nothing: its offsets wait for the next
transaction or the next tick (every ``tick_interval``). On this stack a transaction costs Kafka ~10 ms of CPU
against ~1.5 ms for a plain produce, and a pipeline run sends the broker hundreds of such messages, so a poll
waits up to ``poll_timeout`` (100 ms, the commit interval of Kafka Streams under exactly-once) for its batch to
fill: at N = 260 that is 245 transactions instead of 418, for at most 100 ms more per hop. A loop whose
:meth:`~TransactionalLoop.work` has more to do polls without waiting.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable

from confluent_kafka import OFFSET_BEGINNING, Message, Producer, TopicPartition

from contracts.checkpoint import GroupTransactions, Output
from contracts.kafka import REAL_CLIENTS, KafkaClients, consumer_config, partitions_of, with_kafka
from contracts.settings import Settings
from contracts.txn import Transactions, read_compacted

log = logging.getLogger(__name__)


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
        poll_timeout: float = 0.1,
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
        # A fixed transactional.id per group: a new instance fences the previous one and aborts what it left open.
        self.txn = Transactions(settings, group, service=self.service, clients=clients)
        self.consumer = clients.consumer(consumer_config(settings, group, transactional=True, service=self.service))
        self.checkpoint = GroupTransactions(
            self.consumer, self.txn, service=self.service, state_topic=state_topic, recover=self.recover
        )
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

    def work(self) -> bool:
        """Called once per loop turn, outside any transaction: long work with its own transactions (a subclass
        that writes objects records its intent first, see :class:`consumers.stacker.Stacker`).

        Returns:
            True when it did something and may have more to do: the next poll then takes what is there and does
            not wait for more.
        """
        return False

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
        self.checkpoint.offsets_pending = False
        log.info("%s ready: restored %d state records", self.service, len(records))

    def run(self) -> None:
        """Loop until :meth:`stop`."""
        self.start()
        next_tick = time.monotonic() + self.tick_interval
        busy = False
        try:
            while not self._stop.is_set():
                self.poll_once(0.0 if busy else None)
                if time.monotonic() >= next_tick:
                    self.transact(lambda: self.tick(time.time()))
                    next_tick = time.monotonic() + self.tick_interval
                busy = self.work()
            if self.checkpoint.offsets_pending:
                self.transact(Output)
        finally:
            self.checkpoint.close()
            self.txn.flush()

    def poll_once(self, timeout: float | None = None) -> bool | None:
        """Consume one batch and publish what it produced with its offsets (the input half of one turn of
        :meth:`run`, which also ticks and works).

        Args:
            timeout: how long to wait for the batch to fill; ``poll_timeout`` by default.

        Returns:
            None when there was nothing to consume, True when the batch is committed (or waits, having produced
            nothing), False when it was rolled back: the state is rebuilt from Kafka and the inputs rewound.
        """
        batch = self.checkpoint.consume(self.batch_size, self.poll_timeout if timeout is None else timeout)
        return self._committing(lambda: self.checkpoint.step(batch, self.handle))

    def transact(self, step: Callable[[], Output]) -> bool:
        """Publish ``step()``'s output (between polls: ticks, long work) with the offsets still pending.

        Returns:
            True when it committed (or had nothing to commit); False when it was rolled back (see :meth:`poll_once`).

        Raises:
            ProducerFenced: a newer instance took over. DependencyUnavailable: Kafka or S3 stayed away too long.
        """
        return bool(self._committing(lambda: self.checkpoint.run(step, [])))

    def _committing(self, call: Callable[[], bool | None]) -> bool | None:
        commits = self.checkpoint.commits
        result = call()
        if self.checkpoint.commits != commits:
            self.after_commit()
        return result
