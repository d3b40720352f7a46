"""``xcorrflow worker correlate``: PairTasks in, CCFs in the results store, RowCorrelated out; group ``correlate``.

One task is one row of a window's pair matrix (a station against a batch of others). The worker fetches each
product once and keeps it in an LRU cache, correlates the row with the batched kernel, writes the row's CCFs
into the task's slots of the window's ``ccf`` array (whole chunks nobody else writes, :mod:`results.windows`),
then the task's manifest (:mod:`results.manifest`), then publishes **one** RowCorrelated for the task.

Exactly once per task, even when a worker joins, leaves or is killed with -9: the RowCorrelated events and the
consumed offsets of a batch of tasks are committed in one Kafka transaction (KIP-447: the transaction carries
the consumer group's generation, so a zombie from an older generation cannot commit). Chunks and manifest are
written before the transaction; a redelivered task finds its manifest and is announced again without being
computed again. Commit order per batch: write chunks → put manifests → produce events → send offsets →
commit. A broker restart or an S3 outage aborts the batch (:class:`contracts.checkpoint.MemberTransactions`); its
tasks are consumed again.

A task is checked before any work: every station it names must have a product key of this namespace and
window (an event can never make the worker read outside ``<ns>prep/<window>/``). A column station whose
product is missing or unreadable costs only its own pair, dead-lettered with the reason; the rest of the row
is correlated.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import replace
from datetime import datetime

from confluent_kafka import Message, Producer
from prometheus_client import Counter, Gauge, Histogram

from contracts.checkpoint import MemberTransactions, Output
from contracts.errors import TransientError
from contracts.events import Event, EventDecodeError, PairTask, RowCorrelated, decode
from contracts.kafka import (
    REAL_CLIENTS,
    KafkaClients,
    consumer_config,
    dead_letter,
    log_ready_on_first_assignment,
)
from contracts.metrics import EVENTS_IN, LATENCY_BUCKETS
from contracts.settings import Settings, TopicNames
from contracts.txn import Transactions
from dsp.errors import DspError
from dsp.product import StationProduct
from dsp.seed import pair_key
from results.layout import CHUNK_PAIRS, pair_index
from results.manifest import FAILED, TaskManifest
from results.products import ProductStore
from results.windows import WindowStore, task_blocks
from storage import ObjectStore
from storage.errors import InvalidKey, ObjectNotFound, StorageError
from storage.keys import validate_key, validate_seed_id, validate_window_id
from storage.layout import Layout

log = logging.getLogger(__name__)
SERVICE = "correlate"

PAIRS = Counter("xcorrflow_pairs_correlated", "pairs whose CCF is durable and announced")
PAIR_LATENCY = Histogram(
    "xcorrflow_pair_latency_seconds",
    "FileReady of the later station → its row task correlated",
    buckets=LATENCY_BUCKETS,
)
FIRST_RESULT = Gauge(
    "xcorrflow_time_to_first_result_seconds", "raw arrival of the later station → this worker's first CCF"
)
TASK_SECONDS = Histogram("xcorrflow_task_seconds", "one row task: fetch, correlate, write", buckets=LATENCY_BUCKETS)
TASKS_PENDING = Gauge("xcorrflow_tasks_pending", "row tasks fetched but not yet committed")
CACHE = Counter("xcorrflow_product_cache", "product lookups", ["result"])
MAX_COLUMNS = 100_000  # far above any real array; a task naming more is not one the scheduler wrote


class InvalidTask(ValueError):
    """A PairTask that no scheduler of this namespace could have written (dead-lettered whole)."""


def check_task(task: PairTask, namespace: str) -> None:
    """Refuse a task whose stations or product keys are malformed, or lie outside ``<ns>prep/<window>/``.

    Raises:
        InvalidTask: with the reason.
    """
    try:
        validate_window_id(task.window)
        names = [validate_seed_id(task.row), *(validate_seed_id(c) for c in task.columns)]
    except InvalidKey as exc:
        raise InvalidTask(str(exc)) from exc
    if len(task.columns) > MAX_COLUMNS or len(set(names)) != len(names):
        raise InvalidTask("a task names each station once, row included, and at most 100,000 columns")
    if task.slot < 0 or task.slot % CHUNK_PAIRS or any(task.index.get(n) is None for n in names):
        raise InvalidTask("a task needs a chunk-aligned slot and the registry index of every station it names")
    for name in names:
        key = task.keys.get(name)
        if key is None:
            raise InvalidTask(f"no product key for station {name}")
        try:
            validate_key(key)
            _, window, station = Layout(namespace).parse_product(key)
        except (InvalidKey, ValueError) as exc:
            raise InvalidTask(f"product key {key!r} of {name}: {exc}") from exc
        if (window, station) != (task.window, name):
            raise InvalidTask(f"product key {key!r} is not station {name}'s product of window {task.window}")


class ProductCache:
    """Decoded products by (window, station), least recently used evicted first."""

    def __init__(self, products: ProductStore, capacity: int) -> None:
        self.products = products
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, str], StationProduct] = OrderedDict()

    def get(self, window: str, station: str) -> StationProduct:
        """A station's product in a window, fetched and decoded once.

        Raises:
            ObjectNotFound, StorageUnavailable: the store could not deliver it.
            CorruptProduct: the bytes are not a product.
        """
        key = (window, station)
        if key in self._items:
            self._items.move_to_end(key)
            CACHE.labels(result="hit").inc()
            return self._items[key]
        CACHE.labels(result="miss").inc()
        product = self.products.get(window, station)
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
        windows: WindowStore,
        *,
        group: str,
        worker_id: str | None = None,
        batch_size: int = 16,
        cache_size: int = 1024,
        threads: int = 1,
        clients: KafkaClients = REAL_CLIENTS,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.windows = windows
        self.ns = settings.key_prefix
        self.layout = Layout(self.ns)
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.batch_size = batch_size
        self.threads = threads
        self.products = ProductStore(store, self.ns)
        self.cache = ProductCache(self.products, cache_size)
        # A short transaction timeout bounds how long a killed worker's open transaction blocks its partitions.
        self.txn = Transactions(
            settings, f"{group}.{self.worker_id}", timeout_ms=10000, service=SERVICE, clients=clients
        )
        self.consumer = clients.consumer(consumer_config(settings, group, transactional=True, service=SERVICE))
        self.checkpoint = MemberTransactions(self.consumer, self.txn, service=SERVICE)
        self._stop = threading.Event()
        self._first_result_seen = False
        self._rows: list[RowCorrelated] = []  # the current batch's results, counted once it commits
        self._last_arrived = ""  # raw arrival of the later station of the latest task (first-result gauge)

    def stop(self) -> None:
        """Finish the current batch and return from :meth:`run`."""
        self._stop.set()

    @property
    def producer(self) -> Producer:
        """The current transactional producer (renewed after fatal errors)."""
        return self.txn.producer or self.txn.start()

    def run(self) -> None:
        """Consume task batches until stopped."""
        self.txn.start()
        on_assign = log_ready_on_first_assignment(log, f"correlator {self.worker_id}")
        self.consumer.subscribe([self.topics.pairs], on_assign=on_assign)
        try:
            while not self._stop.is_set():
                self.poll_once()
        finally:
            self.checkpoint.close()
            self.txn.flush()

    def poll_once(self, timeout: float = 0.05) -> bool | None:
        """Consume one batch of tasks and commit its events with its offsets (one turn of :meth:`run`).

        Returns:
            None when there was nothing to consume, True when the batch committed, False when it will come again.

        Raises:
            ProducerFenced: a newer instance with this worker id took over.
            DependencyUnavailable: Kafka or S3 stayed away longer than the settings allow.
        """
        batch = self.checkpoint.consume(self.batch_size, timeout)
        self._rows = []
        TASKS_PENDING.set(len(batch))
        try:
            committed = self.checkpoint.step(batch, self.handle)
        finally:
            TASKS_PENDING.set(0)
        if committed:
            self._after_commit()
        return committed

    def _after_commit(self) -> None:
        now = time.time()
        for event in self._rows:
            PAIRS.inc(event.pairs)
        if self._rows and not self._first_result_seen:
            self._first_result_seen = True
            if self._last_arrived:
                FIRST_RESULT.set(max(0.0, now - datetime.fromisoformat(self._last_arrived).timestamp()))

    # --- one task --------------------------------------------------------------------------------------------
    def handle(self, msg: Message) -> Output:
        """The events of one task message: one RowCorrelated, plus a dead letter per failed station.

        Raises:
            TransientError: the store is unavailable; the batch must be consumed again.
        """
        try:
            task = decode(msg.value())
            if not isinstance(task, PairTask):
                raise ValueError(f"the correlator does not accept {task.type} on the pairs topic")
            EVENTS_IN.labels(service=SERVICE, type=task.type).inc()
            check_task(task, self.ns)
            events = self._correlate_task(msg, task)
        except TransientError:
            raise
        except (EventDecodeError, DspError, StorageError, ValueError) as exc:
            events = [dead_letter(msg, SERVICE, self.topics.dlq, f"{type(exc).__name__}: {exc}")]
        self._rows += [e for _, _, e in events if isinstance(e, RowCorrelated)]
        return Output(events=events)

    def _correlate_task(self, msg: Message, task: PairTask) -> list[tuple[str, str, Event]]:
        t0 = time.monotonic()
        key = self.layout.manifest(task.window, task.row, task.slot)
        try:  # a redelivered task: its CCFs and manifest are durable already
            manifest = self.products.manifest(task.window, task.row, task.slot)
        except ObjectNotFound:
            manifest = self._compute(task)
            self.products.put_manifest(manifest)
        TASK_SECONDS.observe(time.monotonic() - t0)
        if task.ready_at:
            PAIR_LATENCY.observe(max(0.0, time.time() - datetime.fromisoformat(task.ready_at).timestamp()))
        self._last_arrived = task.arrived_at
        event = RowCorrelated(
            window=task.window,
            row=task.row,
            slot=task.slot,
            pairs=len(task.columns),
            columns=list(task.columns),
            manifest=key,
            ready_at=task.ready_at,
            arrived_at=task.arrived_at,
            worker=self.worker_id,
        )
        events: list[tuple[str, str, Event]] = [(self.topics.results, f"{task.window}/{task.row}", event)]
        reasons = set(manifest.failed.values())
        if len(reasons) == 1 and len(manifest.failed) == len(task.columns) and next(iter(reasons)).startswith("row "):
            whole_row = next(iter(reasons))
            events.append(dead_letter(msg, SERVICE, self.topics.dlq, whole_row, source=task.keys[task.row]))
            return events
        for station, reason in manifest.failed.items():
            reason = f"pair {pair_key(*sorted((task.row, station)))}: {reason}"
            events.append(dead_letter(msg, SERVICE, self.topics.dlq, reason, source=task.keys[station]))
        return events

    def _compute(self, task: PairTask) -> TaskManifest:
        """Correlate the row with every column whose product can be read and write the CCFs to the task's slots.

        A row whose own product cannot be read fails every pair of the task; its manifest says so, so the stacker
        counts those pairs as failed instead of waiting for them.

        Returns:
            The task's manifest (not yet stored).

        Raises:
            TransientError: a store is unavailable.
        """
        me = task.index[task.row]
        manifest = TaskManifest(
            window=task.window,
            row=task.row,
            slot=task.slot,
            columns=list(task.columns),
            pair_index=[pair_index(me, task.index[c]) for c in task.columns],
            n_common=[FAILED] * len(task.columns),
            index=dict(task.index),
            worker=self.worker_id,
        )
        try:
            row = self.cache.get(task.window, task.row)  # its key in the task was checked by check_task
        except (ObjectNotFound, DspError) as exc:
            reason = f"row {task.row}: {type(exc).__name__}: {exc}"
            return replace(manifest, failed=dict.fromkeys(task.columns, reason))
        columns, failed = {}, {}
        for name in task.columns:
            try:
                columns[name] = self.cache.get(task.window, name)
            except (ObjectNotFound, DspError) as exc:
                failed[name] = f"{type(exc).__name__}: {exc}"
        params = self.settings.processing
        n_common: list[int] = []
        skipped: dict[str, str] = {}
        for block in task_blocks(
            row,
            list(task.columns),
            columns,
            params.maxlag,
            min_common=params.min_common_subwindows,
            workers=self.threads,
            block_columns=self.settings.block_columns,
        ):  # each block is written as soon as it is computed: a task's memory does not grow with its width
            self.windows.write(task.window, task.slot + block.offset, block.chunks)
            n_common += block.n_common
            skipped.update({s.b if s.a == task.row else s.a: s.reason for s in block.skipped})
        coordinates = {p.seed_id: p.coordinates.to_dict() for p in (row, *columns.values()) if p.coordinates}
        return replace(manifest, n_common=n_common, skipped=skipped, failed=failed, coordinates=coordinates)
