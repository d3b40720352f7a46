"""``xcorrflow worker correlate``: PairTasks in, CCFs in the store, PairCorrelated out; consumer group ``correlate``.

One task is one row of a window's pair matrix (a station against a batch of others). The worker fetches each
product once and keeps it in an LRU cache, correlates the row with the batched kernel, writes the row's CCFs as
**one object** ``<ns>ccf/<window>/<row>.r<digest>.npz`` (a deterministic key: the same task always names the
same object), then publishes one PairCorrelated per pair.

Exactly once per pair, even when a worker joins, leaves or is killed with -9: the PairCorrelated events and the
consumed offsets of a batch of tasks are committed in one Kafka transaction (KIP-447: the transaction carries
the consumer group's generation, so a zombie from an older generation cannot commit). The object is written
before the transaction, with a conditional put: a redelivered task finds it and reuses it instead of computing
again. Commit order per batch: put objects → produce events → send offsets → commit.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from datetime import datetime

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from contracts.events import Event, EventDecodeError, PairCorrelated, PairTask, decode
from contracts.kafka import (
    consumer_config,
    dead_letter_for,
    log_ready_on_first_assignment,
    produce_event,
    producer_config,
)
from contracts.metrics import DEAD_LETTERS, EVENTS_IN, EVENTS_OUT, LATENCY_BUCKETS
from contracts.settings import Settings, TopicNames
from dsp.ccf import CCF_EXT, decode_ccfs, encode_ccfs
from dsp.correlate import CcfBatch, correlate_row
from dsp.errors import DspError
from dsp.product import StationProduct, decode_product
from storage import ObjectStore
from storage.errors import ObjectConflict, ObjectNotFound, StorageError, StorageUnavailable
from storage.keys import validate_seed_id, validate_window_id

log = logging.getLogger(__name__)
SERVICE = "correlate"

PAIRS = Counter("xcorrflow_pairs_correlated", "pairs whose CCF is durable and announced")
PAIR_LATENCY = Histogram(
    "xcorrflow_pair_latency_seconds", "FileReady of the later station → PairCorrelated", buckets=LATENCY_BUCKETS
)
FIRST_RESULT = Gauge(
    "xcorrflow_time_to_first_result_seconds", "raw arrival of the later station → this worker's first CCF"
)
TASK_SECONDS = Histogram("xcorrflow_task_seconds", "one row task: fetch, correlate, write", buckets=LATENCY_BUCKETS)
TASKS_PENDING = Gauge("xcorrflow_tasks_pending", "row tasks fetched but not yet committed")
CACHE = Counter("xcorrflow_product_cache", "product lookups", ["result"])


def task_object_key(namespace: str, task: PairTask) -> str:
    """The deterministic key of a task's CCF object: window, row and a digest of the column set."""
    digest = hashlib.sha1("\n".join(sorted(task.columns)).encode()).hexdigest()[:12]
    return f"{namespace}ccf/{validate_window_id(task.window)}/{validate_seed_id(task.row)}.r{digest}{CCF_EXT}"


class ProductCache:
    """Decoded products by object key, least recently used evicted first."""

    def __init__(self, store: ObjectStore, capacity: int) -> None:
        self.store = store
        self.capacity = capacity
        self._items: OrderedDict[str, StationProduct] = OrderedDict()

    def get(self, key: str) -> StationProduct:
        """The product at ``key``, fetched and decoded once.

        Raises:
            ObjectNotFound, StorageUnavailable: the store could not deliver it.
            CorruptProduct: the bytes are not a product.
        """
        if key in self._items:
            self._items.move_to_end(key)
            CACHE.labels(result="hit").inc()
            return self._items[key]
        CACHE.labels(result="miss").inc()
        product = decode_product(self.store.get(key), key)
        self._items[key] = product
        if len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return product


class Correlator:
    """One member of the ``correlate`` consumer group."""

    def __init__(
        self,
        settings: Settings,
        topics: TopicNames,
        store: ObjectStore,
        *,
        group: str,
        worker_id: str | None = None,
        batch_size: int = 16,
        cache_size: int = 1024,
        threads: int = 1,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.store = store
        self.ns = settings.key_prefix
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.batch_size = batch_size
        self.threads = threads
        self.cache = ProductCache(store, cache_size)
        # A short transaction timeout bounds how long a killed worker's open transaction blocks its partitions.
        self.producer = Producer(
            producer_config(settings, transactional_id=f"{group}.{self.worker_id}", **{"transaction.timeout.ms": 10000})
        )
        self.consumer = Consumer(consumer_config(settings, group, transactional=True, service=SERVICE))
        self._stop = threading.Event()
        self._first_result_seen = False
        self._last_arrived = ""  # raw arrival of the later station of the latest task (first-result gauge)

    def stop(self) -> None:
        """Finish the current batch and return from :meth:`run`."""
        self._stop.set()

    def run(self) -> None:
        """Consume task batches until stopped."""
        self.producer.init_transactions(30)
        on_assign = log_ready_on_first_assignment(log, f"correlator {self.worker_id}")
        self.consumer.subscribe([self.topics.pairs], on_assign=on_assign)
        try:
            while not self._stop.is_set():
                batch = [m for m in self.consumer.consume(self.batch_size, 0.05) if not m.error()]
                if batch:
                    self._transact(batch)
        finally:
            self.consumer.close()

    def _transact(self, batch: list[Message]) -> None:
        """Process a batch of tasks and commit their events with their offsets."""
        TASKS_PENDING.set(len(batch))
        try:
            outputs = [self.process(msg) for msg in batch]
            self.producer.begin_transaction()
            for events in outputs:
                for topic, key, event in events:
                    produce_event(self.producer, topic, key, event)
            self.producer.send_offsets_to_transaction(_next_offsets(batch), self.consumer.consumer_group_metadata())
            self.producer.commit_transaction(30)
        except (KafkaException, StorageUnavailable) as exc:
            self._recover(batch, exc)
            return
        finally:
            TASKS_PENDING.set(0)
        self._after_commit([e for events in outputs for _, _, e in events])

    def _recover(self, batch: list[Message], exc: Exception) -> None:
        """Abort, then rewind every partition of the batch to its first task; the tasks will come again.

        Rewinding to the batch's own first offsets (not to the committed offsets) also covers partitions
        that have no committed offset yet, e.g. the very first batch aborted by a rebalance.
        """
        log.warning("correlator: batch aborted (%s); retrying", exc)
        if isinstance(exc, KafkaException):
            error = exc.args[0]
            if not (error.txn_requires_abort() or error.retriable()):
                raise exc  # fenced: a newer generation owns these partitions
        with contextlib.suppress(KafkaException):  # no transaction is open when the failure came before it
            self.producer.abort_transaction(30)
        for tp in _first_offsets(batch):
            with contextlib.suppress(KafkaException):  # a partition revoked meanwhile is someone else's now
                self.consumer.seek(tp)
        time.sleep(0.5)

    def _after_commit(self, events: list[Event]) -> None:
        now = time.time()
        for event in events:
            if not isinstance(event, PairCorrelated) or event.skipped:
                continue
            PAIRS.inc()
            EVENTS_OUT.labels(service=SERVICE, type=event.type).inc()
        correlated = [e for e in events if isinstance(e, PairCorrelated) and not e.skipped]
        if correlated and not self._first_result_seen:
            self._first_result_seen = True
            if self._last_arrived:
                FIRST_RESULT.set(max(0.0, now - datetime.fromisoformat(self._last_arrived).timestamp()))

    # --- one task --------------------------------------------------------------------------------------------
    def process(self, msg: Message) -> list[tuple[str, str, Event]]:
        """The events of one task message: PairCorrelated per pair, or one dead letter."""
        try:
            task = decode(msg.value())
            if not isinstance(task, PairTask):
                raise ValueError(f"the correlator does not accept {task.type} on the pairs topic")
            EVENTS_IN.labels(service=SERVICE, type=task.type).inc()
            return list(self._correlate_task(task))
        except (EventDecodeError, DspError, ObjectNotFound, ObjectConflict, ValueError) as exc:
            letter = dead_letter_for(msg, SERVICE, f"{type(exc).__name__}: {exc}")
            DEAD_LETTERS.labels(service=SERVICE, reason=type(exc).__name__).inc()
            log.warning("dead letter: %s", letter.reason)
            return [(self.topics.dlq, (msg.key() or b"").decode(errors="replace"), letter)]
        except StorageUnavailable:
            raise
        except StorageError as exc:
            letter = dead_letter_for(msg, SERVICE, f"{type(exc).__name__}: {exc}")
            return [(self.topics.dlq, (msg.key() or b"").decode(errors="replace"), letter)]

    def _correlate_task(self, task: PairTask) -> list[tuple[str, str, Event]]:
        t0 = time.monotonic()
        key = task_object_key(self.ns, task)
        if self.store.exists(key):  # a redelivered task: the work is durable already
            batch = decode_ccfs(self.store.get(key), key)
        else:
            batch = self._compute(task)
            self.store.put_if_absent(key, encode_ccfs(batch), content_type="application/octet-stream")
        TASK_SECONDS.observe(time.monotonic() - t0)
        if task.ready_at:
            PAIR_LATENCY.observe(max(0.0, time.time() - datetime.fromisoformat(task.ready_at).timestamp()))
        self._last_arrived = task.arrived_at
        events = _events(task, key, batch, self.worker_id)
        return [(self.topics.results, f"{task.window}/{e.a}__{e.b}", e) for e in events]

    def _compute(self, task: PairTask) -> CcfBatch:
        row = self.cache.get(task.keys[task.row])
        columns = [self.cache.get(task.keys[name]) for name in task.columns]
        params = self.settings.processing
        return correlate_row(row, columns, params.maxlag, min_common=params.min_common_subwindows, workers=self.threads)


def _events(task: PairTask, key: str, batch: CcfBatch, worker: str) -> list[PairCorrelated]:
    events = [
        PairCorrelated(window=task.window, a=a, b=b, key=key, n_subwindows=int(n), worker=worker)
        for (a, b), n in zip(batch.pairs, batch.n_common, strict=True)
    ]
    events += [
        PairCorrelated(window=task.window, a=s.a, b=s.b, key="", n_subwindows=0, skipped=s.reason, worker=worker)
        for s in batch.skipped
    ]
    return events


def _first_offsets(batch: list[Message]) -> list[TopicPartition]:
    """The offset of the first message of each partition in a batch."""
    first: dict[tuple[str, int], int] = {}
    for m in batch:
        tp = (m.topic() or "", m.partition() or 0)
        first[tp] = min(first.get(tp, m.offset() or 0), m.offset() or 0)
    return [TopicPartition(t, p, o) for (t, p), o in first.items()]


def _next_offsets(batch: list[Message]) -> list[TopicPartition]:
    """The offsets to commit after a batch: one past the last message of each partition in it."""
    last: dict[tuple[str, int], int] = {}
    for m in batch:
        tp = (m.topic() or "", m.partition() or 0)
        last[tp] = max(last.get(tp, -1), m.offset() or 0)
    return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
