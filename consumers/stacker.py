"""``xcorrflow worker stack``: PairCorrelated in, running stacks per pair in ``<ns>stacks/<A>__<B>.sac``.

Consumer group ``stack``, one member per namespace (a pair's windows are keyed ``<window>/<pair>``, so they
spread over every partition of the results topic and a second member would keep half of each stack). It reads
the results topic and the commits topic (``DirectoryCommitted`` of ``<ns>prep/<window>/`` says how many
stations, hence pairs, a window has), both ``read_committed``.

Each batch of events names CCF objects (one per correlator row task; many events name the same object). The
stacker fetches every object it needs once, in parallel, and adds each (window, pair) of it that its window
does not hold yet (:class:`~consumers.stackstate.StackerState` keeps a bitmap of bank rows per window).

**Restart: no window counted twice, none lost.** Kafka offsets are committed by hand, and only after the state
that covers them is durable. The order, in :meth:`Stacker.checkpoint`:

1. write the SAC of every dirty pair (:meth:`Stacker.flush`), so every stack in the state has its SAC;
2. put the state object ``<ns>stacks/_stacker/state.npz`` (bank sums and counts, PWS phasors, per-window
   bitmaps, expected pair counts, skipped pairs, station coordinates), one atomic PUT;
3. flush the dead-letter producer;
4. commit the consumed offsets.

A crash before 2 replays the events since the last commit onto the last state: the same adds happen again
from the same immutable CCF objects, so memory and SACs come back to where they were (SACs written between
checkpoints may briefly be ahead of the state, never double-counted). A crash between 2 and 4 replays events
the state already holds: the bitmaps turn them into no-ops. The same bitmaps absorb duplicate events.

Costs, measured for a 130-station window (8,385 pairs, 8,001 lags) on the shared 2-core host: writing its
8,385 SACs takes 35-50 s (170-250 PUT/s with 32 threads; the server is latency-bound), and the state object is
537 MB (linear; 16 more bytes per lag with PWS phasors), ~16 s to encode and put, ~6 s to read back at start.
So SACs are written only every ``flush_interval`` s and when a window's pairs are all in (a pair dirty in
several windows is written once), and the state only every ``checkpoint_interval`` s and when a window
completes. Replay after a crash costs at most the events of one checkpoint interval.

A CCF object that cannot be read, or that does not hold the pair its event names, is dead-lettered and its
pair counted as skipped, so its window still completes.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from consumers.errors import ConsumersError
from consumers.stackstate import StackerState
from consumers.stackwriter import StackWriter
from contracts.events import DirectoryCommitted, Event, EventDecodeError, PairCorrelated, decode
from contracts.kafka import consumer_config, dead_letter_for, producer_config, send_dead_letter
from contracts.metrics import EVENTS_IN, LATENCY_BUCKETS, S3_ERRORS
from contracts.settings import Settings, TopicNames
from dsp.ccf import decode_ccfs
from dsp.correlate import CcfBatch
from dsp.errors import DspError
from dsp.seed import pair_key, parse_pair_key
from storage import ObjectStore
from storage.errors import StorageError, StorageUnavailable

log = logging.getLogger(__name__)
SERVICE = "stack"
_PREP_DIR = re.compile(r"prep/(\d{8}T\d{6}Z)/$")

STACKS_WRITTEN = Counter("xcorrflow_stacks_written", "SAC stacks written to stacks/")
WINDOWS_STACKED = Counter("xcorrflow_windows_stacked", "windows whose every pair is in the stacks and flushed")
PAIRS_STACKED = Counter("xcorrflow_pair_windows_stacked", "(window, pair) CCFs added to the stacks")
DUPLICATES = Counter("xcorrflow_stacker_duplicates", "PairCorrelated of a (window, pair) already stacked")
OBJECTS_FETCHED = Counter("xcorrflow_stacker_objects_fetched", "CCF objects fetched by the stacker")
FLUSH_SECONDS = Histogram(
    "xcorrflow_stack_flush_seconds", "writing the SACs of the dirty pairs", buckets=LATENCY_BUCKETS
)
CHECKPOINT_SECONDS = Histogram(
    "xcorrflow_stack_checkpoint_seconds", "writing the state object and committing offsets", buckets=LATENCY_BUCKETS
)
DIRTY = Gauge("xcorrflow_stacks_dirty", "pairs whose SAC is behind their stack")


class StackerStateMismatch(ConsumersError):
    """The stored state was made with other processing parameters; stacking on would mix incompatible CCFs."""


@dataclass(frozen=True)
class StackerOptions:
    """When the stacker writes, and how wide."""

    flush_interval_s: float = 30.0
    checkpoint_interval_s: float = 300.0
    threads: int = 32  # concurrent store requests (see consumers.stackwriter)
    batch: int = 2000


class Stacker:
    """The one member of a namespace's ``stack`` consumer group."""

    def __init__(
        self,
        settings: Settings,
        topics: TopicNames,
        store: ObjectStore,
        *,
        group: str,
        options: StackerOptions | None = None,
    ) -> None:
        self.settings, self.topics, self.store = settings, topics, store
        self.options = options or StackerOptions()
        self.ns = settings.key_prefix
        self.params = settings.processing
        self.consumer = Consumer(consumer_config(settings, group, service=SERVICE, **{"enable.auto.commit": False}))
        self.producer = Producer(producer_config(settings))  # dead letters only
        self.pool = ThreadPoolExecutor(max_workers=max(1, self.options.threads), thread_name_prefix="stacker")
        self.writer = StackWriter(store, self.ns, self.params, self.pool)
        self.state = StackerState(self.params.target_fs, self.params.maxlag, phase=self.params.stack == "pws")
        self._positions: dict[tuple[str, int], int] = {}  # next offset to commit, per partition
        self._dirty: set[int] = set()  # bank rows whose SAC is behind
        self._unsaved = False  # the state changed since the last checkpoint
        self._uncommitted = False  # offsets moved since the last commit
        self._failed: dict[str, str] = {}  # CCF objects that cannot be read → reason
        self._where: dict[str, str] = {}  # station → a window holding its product (for its coordinates)
        self._completed: list[str] = []  # windows complete but not yet checkpointed
        self._stop = threading.Event()
        self._last_flush = self._last_checkpoint = time.monotonic()

    def stop(self) -> None:
        """Finish the current batch, checkpoint, and return from :meth:`run`."""
        self._stop.set()

    def run(self) -> None:
        """Load the state, then consume until stopped; a stop writes a last checkpoint."""
        self.state = self.load_state()
        self.consumer.subscribe([self.topics.results, self.topics.commits], on_revoke=self._on_revoke)
        log.info("stacker ready: %d pairs, %d windows in the state", len(self.state.bank.keys), len(self.state.windows))
        try:
            while not self._stop.is_set():
                messages = [m for m in self.consumer.consume(self.options.batch, 0.2) if not m.error()]
                if messages:
                    self.apply(messages)
                self._tick()
            self.checkpoint()
        finally:
            self.consumer.close()
            self.pool.shutdown()

    def load_state(self) -> StackerState:
        """The stored state, or an empty one for a new namespace.

        Raises:
            StackerStateMismatch: the state's rate, lags or stack kind differ from the settings.
            CorruptProduct: the state object is damaged.
        """
        state = self.writer.load_state()
        if state is None:
            return self.state
        pws = self.params.stack == "pws"
        if (state.fs, state.maxlag, state.bank.phasors is not None) != (self.params.target_fs, self.params.maxlag, pws):
            raise StackerStateMismatch(
                f"{self.writer.state_key} holds stacks at {state.fs} Hz ±{state.maxlag} samples "
                f"({'with' if state.bank.phasors is not None else 'without'} PWS phasors); the settings want "
                f"{self.params.target_fs} Hz ±{self.params.maxlag} ({self.params.stack}). Use another namespace."
            )
        return state

    # --- consuming -------------------------------------------------------------------------------------------
    def apply(self, messages: list[Message]) -> None:
        """Apply a batch of messages: fetch the CCF objects it needs, then add, skip or note each event.

        Objects are all fetched before anything is applied, so a store outage leaves the state untouched and
        the batch is simply consumed again (its partitions are rewound).
        """
        events = self._decode(messages)
        try:
            batches = self._fetch(self._objects_needed(e for _, e in events))
        except StorageUnavailable as exc:
            S3_ERRORS.labels(service=SERVICE, op="get").inc()
            log.warning("stacker: store unavailable (%s); the batch will be consumed again", exc)
            self._rewind(messages)
            time.sleep(1.0)
            return
        for msg, event in events:
            self._apply_event(msg, event, batches)
        for msg in messages:
            self._positions[(msg.topic() or "", msg.partition() or 0)] = (msg.offset() or 0) + 1
        self._uncommitted = True

    def _decode(self, messages: list[Message]) -> list[tuple[Message, Event]]:
        events = []
        for msg in messages:
            try:
                event = decode(msg.value())
            except EventDecodeError as exc:
                self._dead_letter(msg, exc.reason)
                continue
            EVENTS_IN.labels(service=SERVICE, type=event.type).inc()
            events.append((msg, event))
        return events

    def _objects_needed(self, events: Iterable[Event]) -> list[str]:
        keys: dict[str, None] = {}  # ordered set: objects are applied in the order the events name them
        for e in events:
            if not isinstance(e, PairCorrelated) or e.skipped or not self._mine(e) or e.key in self._failed:
                continue
            try:
                if not self.state.included(e.window, _pair(e)):
                    keys[e.key] = None
            except DspError:
                continue  # dead-lettered when the event is applied
        return list(keys)

    def _fetch(self, keys: list[str]) -> dict[str, CcfBatch]:
        """Fetch and decode objects in parallel; unreadable ones go to ``_failed``.

        Raises:
            StorageUnavailable: the store did not answer within its retries.
        """

        def one(key: str) -> CcfBatch | str:
            try:
                return decode_ccfs(self.store.get(key), key)
            except StorageUnavailable:
                raise
            except (StorageError, DspError) as exc:
                return f"{type(exc).__name__}: {exc}"

        found: dict[str, CcfBatch] = {}
        for key, result in zip(keys, self.pool.map(one, keys), strict=True):
            OBJECTS_FETCHED.inc()
            if isinstance(result, str):
                self._failed[key] = result
            else:
                found[key] = result
        return found

    def _apply_event(self, msg: Message, event: Event, batches: dict[str, CcfBatch]) -> None:
        if isinstance(event, DirectoryCommitted):
            self._expect(event)
            return
        if not isinstance(event, PairCorrelated) or not self._mine(event):
            return
        try:
            key = _pair(event)
        except DspError as exc:
            self._dead_letter(msg, f"{type(exc).__name__}: {exc}", source=event.key)
            return
        if event.skipped:
            self._unsaved |= self.state.skip(event.window, key)
            return
        if self.state.included(event.window, key):
            DUPLICATES.inc()
            return
        if event.key in self._failed:
            self._give_up(msg, event, self._failed[event.key])
            return
        self._add(msg, event, batches[event.key])

    def _expect(self, event: DirectoryCommitted) -> None:
        """A product directory of this namespace committed: its file count fixes the window's pair count."""
        if not event.directory.startswith(self.ns):
            return
        match = _PREP_DIR.fullmatch(event.directory.removeprefix(self.ns))
        if match:
            self.state.expect(match.group(1), len(event.files))
            self._unsaved = True

    def _add(self, msg: Message, event: PairCorrelated, batch: CcfBatch) -> None:
        key = _pair(event)
        try:
            if batch.window != event.window:
                raise DspError(f"object holds window {batch.window}, the event names {event.window}")
            rows = self.state.add(batch)
        except DspError as exc:
            self._failed[event.key] = f"{type(exc).__name__}: {exc}"
            self._give_up(msg, event, self._failed[event.key])
            return
        if len(rows):
            self._dirty.update(rows.tolist())
            self._unsaved = True
            PAIRS_STACKED.inc(len(rows))
            for station in {s for r in rows.tolist() for s in parse_pair_key(self.state.bank.keys[r])}:
                if station not in self.state.coordinates:
                    self._where.setdefault(station, batch.window)
        if not self.state.included(event.window, key):
            self._give_up(msg, event, f"object {event.key} does not hold pair {key}")

    def _give_up(self, msg: Message, event: PairCorrelated, reason: str) -> None:
        """A pair-window that cannot be stacked: dead-letter it, and count it skipped so its window completes."""
        if self.state.skip(event.window, _pair(event)):
            self._unsaved = True
            self._dead_letter(msg, reason, source=event.key)

    def _mine(self, event: PairCorrelated) -> bool:
        """Skipped pairs name no object; others must live under this namespace's ``ccf/``."""
        return bool(event.skipped) or event.key.startswith(f"{self.ns}ccf/")

    # --- writing ---------------------------------------------------------------------------------------------
    def _tick(self) -> None:
        """Flush, checkpoint or commit when due; a store or Kafka outage is retried at the next tick."""
        try:
            self._due()
        except StorageUnavailable as exc:
            S3_ERRORS.labels(service=SERVICE, op="put").inc()
            log.warning("stacker: writing to the store failed (%s); retrying", exc)
            time.sleep(1.0)
        except KafkaException as exc:
            log.warning("stacker: committing offsets failed (%s); retrying", exc)
            time.sleep(1.0)

    def _due(self) -> None:
        complete = self.state.newly_complete()
        if complete:
            log.info("windows complete: %s", ", ".join(complete))
            self._completed.extend(complete)
            self._unsaved = True
        now = time.monotonic()
        if self._completed or (self._unsaved and now - self._last_checkpoint >= self.options.checkpoint_interval_s):
            self.checkpoint()
            WINDOWS_STACKED.inc(len(self._completed))
            self._completed.clear()
        elif self._dirty and now - self._last_flush >= self.options.flush_interval_s:
            self.flush()
        elif not self._unsaved and self._uncommitted and now - self._last_flush >= self.options.flush_interval_s:
            self._commit()  # only duplicates or foreign events since the checkpoint: the state covers them
            self._last_flush = now

    def flush(self) -> int:
        """Write the SAC of every dirty pair, in parallel; returns how many were written.

        Raises:
            StorageUnavailable: a write failed after its retries (the pairs not written stay dirty).
        """
        self._last_flush = time.monotonic()
        if not self._dirty:
            return 0
        t0 = time.perf_counter()
        self.writer.resolve_coordinates(self.state, self._where)
        self._where.clear()
        written = self.writer.write_sacs(self.state, self._dirty)
        STACKS_WRITTEN.inc(written)
        FLUSH_SECONDS.observe(time.perf_counter() - t0)
        DIRTY.set(len(self._dirty))
        log.info("flushed %d stacks in %.2f s", written, time.perf_counter() - t0)
        return written

    def checkpoint(self) -> None:
        """Flush SACs, put the state object, flush dead letters, then commit offsets (this order; see above)."""
        t0 = time.perf_counter()
        self.flush()
        size = 0
        if self._unsaved:
            size = self.writer.put_state(self.state)
            self._unsaved = False
        self._commit()
        self._last_checkpoint = time.monotonic()
        CHECKPOINT_SECONDS.observe(time.perf_counter() - t0)
        log.info("checkpoint: %.1f MB of state, offsets committed, %.2f s", size / 1e6, time.perf_counter() - t0)

    def _commit(self) -> None:
        if self.producer.flush(30) != 0:
            raise KafkaException("dead letters not delivered; offsets stay uncommitted")
        if self._positions:
            offsets = [TopicPartition(t, p, o) for (t, p), o in self._positions.items()]
            self.consumer.commit(offsets=offsets, asynchronous=False)
        self._uncommitted = False

    # --- Kafka housekeeping ----------------------------------------------------------------------------------
    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Leaving partitions (a stop, or a second member): checkpoint so their offsets match the state."""
        if not partitions:
            return
        try:
            self.checkpoint()
        except (KafkaException, StorageError) as exc:
            log.warning("stacker: checkpoint on revoke failed (%s); the events will be replayed", exc)
        for tp in partitions:
            self._positions.pop((tp.topic, tp.partition), None)

    def _rewind(self, messages: list[Message]) -> None:
        first: dict[tuple[str, int], int] = {}
        for m in messages:
            tp = (m.topic() or "", m.partition() or 0)
            first[tp] = min(first.get(tp, m.offset() or 0), m.offset() or 0)
        for (topic, partition), offset in first.items():
            self.consumer.seek(TopicPartition(topic, partition, offset))

    def _dead_letter(self, msg: Message, reason: str, source: str = "") -> None:
        key = msg.key()
        send_dead_letter(self.producer, self.topics.dlq, dead_letter_for(msg, SERVICE, reason, source), key)


def _pair(event: PairCorrelated) -> str:
    return pair_key(event.a, event.b)
