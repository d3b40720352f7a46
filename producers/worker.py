"""``xcorrflow worker preprocess``: raw station-windows in, products out, in consumer group ``preprocess``.

For each RawFileArrived: fetch the raw object, preprocess it (DSP core), write the product to
``<ns>prep/<window>/<SEED id>.npz`` with a conditional put, and produce FileCommitted keyed by the directory.
Messages are taken in batches: the first one polled and whatever else is already fetched, up to ``batch_size`` (a
batch never waits to fill). While one file is computed, the next files' objects are fetched on ``prefetch``
threads; each FileCommitted is produced as soon as its product is stored. Once per batch the worker waits for
Kafka's acknowledgement of everything it produced, and only then stores the offsets of the messages done. A crash
anywhere before the offsets are stored redoes those files; the product key is deterministic and the product bytes
are too, so the redo finds the object already there (same content) and the broker counts the repeated
FileCommitted once. No file can become two different products: a conditional put never replaces an existing
object.

A file that cannot be processed goes to the dead-letter topic with its reason, and the worker carries on.
Transient store or Kafka failures are not dead-lettered: the worker stores the offsets of the messages done
before the failure, seeks back to the first message not done on each partition, waits and retries, for up to
``faults.s3_outage_s`` / ``faults.kafka_outage_s`` (then it exits, saying which service stayed away).
An event whose raw key is not ``<ns>raw/<window>/<station>.mseed`` of its own window and station is refused
before anything is read, so no event can make the worker read or write outside its namespace. A product that
is already in the store is announced again, not computed again (a redelivered event, or a resumed run).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from prometheus_client import Counter, Histogram

from contracts.errors import TransientError
from contracts.events import EventDecodeError, FileCommitted, ProducerFinished, ProducerStarted, RawFileArrived, decode
from contracts.kafka import (
    broadcast,
    consumer_config,
    dead_letter_for,
    flush_through_outage,
    log_ready_on_first_assignment,
    partitions_of,
    produce_event,
    producer_config,
    send_dead_letter,
    watch_kafka,
)
from contracts.metrics import EVENTS_IN, EVENTS_OUT, LATENCY_BUCKETS, S3_ERRORS
from contracts.outage import KAFKA, S3
from contracts.settings import Settings, TopicNames
from dsp.errors import DspError
from dsp.preprocess import preprocess_bytes
from dsp.product import PRODUCT_EXT, Coordinates, encode_product
from storage import ObjectInfo, ObjectStore
from storage.errors import InvalidKey, ObjectNotFound, StorageError
from storage.keys import prep_key, raw_key, validate_seed_id, validate_window_id

log = logging.getLogger(__name__)
SERVICE = "preprocess"

FILES_PREPROCESSED = Counter("xcorrflow_files_preprocessed", "station-windows preprocessed into products")
PREPROCESS_SECONDS = Histogram(
    "xcorrflow_preprocess_seconds", "fetch + preprocess + write of one station-window", buckets=LATENCY_BUCKETS
)
ARRIVAL_TO_COMMIT = Histogram(
    "xcorrflow_arrival_to_commit_seconds", "raw arrival → product committed", buckets=LATENCY_BUCKETS
)


def group_name(base: str, topic_prefix: str) -> str:
    """Consumer group of a stage: ``base`` for the default topics, ``<prefix>.<base>`` for prefixed ones."""
    return f"{topic_prefix}.{base}" if topic_prefix else base


@dataclass
class _Job:
    """One message of a batch: its event (or why it is refused) and the fetch of what it needs from the store."""

    msg: Message
    event: RawFileArrived | None = None
    key: str = ""  # the product's key
    refused: Exception | None = None  # undecodable or outside the namespace: a dead letter
    fetch: Future[ObjectInfo | bytes] | None = None  # the stored product's info, or the raw object's bytes
    started: float = field(default_factory=time.monotonic)


class PreprocessWorker:
    """One member of the ``preprocess`` consumer group."""

    def __init__(
        self,
        settings: Settings,
        topics: TopicNames,
        store: ObjectStore,
        *,
        group: str,
        batch_size: int = 16,
        prefetch: int = 2,
        producer: Producer | None = None,
        consumer: Consumer | None = None,
    ) -> None:
        """Create the Kafka clients (nothing is consumed before :meth:`run`).

        Args:
            settings, topics, store: where to read and write.
            group: the consumer group.
            batch_size: most messages taken per poll (offsets are stored, and the producer flushed, once a batch).
            prefetch: files fetched from the store ahead of the one being computed (and threads that fetch them).
            producer, consumer: clients to use instead of new ones (tests pass doubles); a given producer must
                report deliveries to :meth:`on_delivery`.
        """
        self.settings = settings
        self.topics = topics
        self.store = store
        self.ns = settings.key_prefix
        self.batch_size = batch_size
        self.prefetch = prefetch
        self.producer_id = f"preprocess-{socket.gethostname()}-{os.getpid()}"
        self.producer = producer or Producer(producer_config(settings, on_delivery=self.on_delivery))
        self.consumer = consumer or Consumer(consumer_config(settings, group, service=SERVICE))
        self._fetcher = ThreadPoolExecutor(max(1, prefetch), thread_name_prefix="prefetch")
        self._stop = threading.Event()
        self._undelivered: list[KafkaError] = []  # delivery failures since the last check

    def stop(self) -> None:
        """Finish the current file and return from :meth:`run`."""
        self._stop.set()

    def run(self) -> None:
        """Consume RawFileArrived events until stopped; announce start and finish to the commit broker."""
        partitions = partitions_of(self.producer, self.topics.files)
        broadcast(
            self.producer, self.topics.files, self.producer_id, ProducerStarted(producer=self.producer_id), partitions
        )
        on_assign = log_ready_on_first_assignment(log, f"preprocess worker {self.producer_id}")
        self.consumer.subscribe([self.topics.raw], on_assign=on_assign)
        try:
            while not self._stop.is_set():
                first = self.consumer.poll(0.1)
                watch_kafka(self.consumer)
                if first is None or _consume_error(first):
                    continue
                KAFKA.succeeded()
                # What else is already fetched joins the batch; waiting for more would only add latency.
                more = self.consumer.consume(self.batch_size - 1, 0) if self.batch_size > 1 else []
                self.process_batch([first, *(msg for msg in more if not _consume_error(msg))])
        finally:
            self._fetcher.shutdown(wait=True, cancel_futures=True)
            broadcast(
                self.producer,
                self.topics.files,
                self.producer_id,
                ProducerFinished(producer=self.producer_id),
                partitions,
            )
            self.producer.flush(30)
            self.consumer.close()  # commits the stored offsets

    def on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        """The producer's delivery callback: remembers failures until the batch's flush checks them."""
        if err is not None:
            self._undelivered.append(err)

    def process_batch(self, msgs: Sequence[Message]) -> int:
        """Process messages in order, then store the offsets of those done once Kafka acknowledged their events.

        Commit order: for each file, the product is stored, then its FileCommitted (or its dead letter) is
        produced; after the batch, the producer is flushed and every delivery checked; only then are offsets
        stored, and only for the messages done before the first failure. A transient store or Kafka failure seeks
        each partition back to its first message not done, so those are redone after a pause; a failed delivery
        redoes the whole batch (the stored products are announced again, not recomputed).

        Returns:
            How many messages are done (their offsets stored).

        Raises:
            DependencyUnavailable: Kafka or S3 stayed away longer than the settings allow.
        """
        jobs = [self._job(msg) for msg in msgs]
        done: list[Message] = []
        failure: Exception | None = None
        try:
            for index, job in enumerate(jobs):
                if index and self._stop.is_set():
                    break  # stop after the current file; the rest is redelivered to the group
                for ahead in jobs[index : index + self.prefetch + 1]:
                    self._start_fetch(ahead)
                self.process(job)
                done.append(job.msg)
        except (TransientError, KafkaException) as exc:
            failure = exc
        finally:
            for job in jobs:
                if job.fetch is not None:
                    job.fetch.cancel()
        if not self._delivered(jobs):
            return 0
        self._store_offsets(done)
        if failure is not None:
            self._retry_later(jobs[len(done) :], failure)
        return len(done)

    def _delivered(self, jobs: list[_Job]) -> bool:
        """Flush; False (after seeking the whole batch back) when an event of the batch was not delivered."""
        try:
            self._deliver()
        except KafkaException as exc:
            log.warning("announcements of a batch from %s@%s not delivered (%s); redoing it", jobs[0].msg.topic(),
                        jobs[0].msg.offset(), exc)  # fmt: skip
            self._seek_back([job.msg for job in jobs])
            KAFKA.pause()
            return False
        return True

    def _retry_later(self, jobs: list[_Job], failure: Exception) -> None:
        """Seek back to the first message not done on each partition and pause for the service that failed."""
        msg = jobs[0].msg
        self._seek_back([job.msg for job in jobs])
        if isinstance(failure, TransientError):
            S3_ERRORS.labels(service=SERVICE, op="transient").inc()
            log.warning("store unavailable on %s@%s, retrying: %s", msg.topic(), msg.offset(), failure)
            S3.pause()
        else:
            log.warning("announcement of %s@%s not produced (%s); redoing it", msg.topic(), msg.offset(), failure)
            KAFKA.pause()

    def _store_offsets(self, msgs: list[Message]) -> None:
        """Store the offsets after ``msgs`` for the next auto-commit; a partition revoked meanwhile is another's."""
        if not msgs:
            return
        last: dict[tuple[str, int], int] = {}
        for msg in msgs:
            last[(msg.topic() or "", msg.partition() or 0)] = (msg.offset() or 0) + 1
        try:
            self.consumer.store_offsets(offsets=[TopicPartition(t, p, o) for (t, p), o in last.items()])
        except KafkaException as exc:
            log.info("offsets of %d messages not stored (%s); they will be redelivered", len(msgs), exc.args[0].str())

    def _deliver(self) -> None:
        """Wait until everything produced is acknowledged, through a broker outage.

        Raises:
            KafkaException: a message failed for good (the file is redone: the product is reused).
            DependencyUnavailable: the broker stayed away longer than ``faults.kafka_outage_s``.
        """
        flush_through_outage(self.producer, "FileCommitted")
        failed, self._undelivered = self._undelivered, []
        if failed:
            KAFKA.failed(failed[0].str())
            raise KafkaException(failed[0])
        KAFKA.succeeded()

    def _seek_back(self, msgs: list[Message]) -> None:
        """Seek each partition of ``msgs`` back to its first message among them."""
        first: dict[tuple[str, int], int] = {}
        for msg in msgs:
            first.setdefault((msg.topic() or "", msg.partition() or 0), msg.offset() or 0)
        for (topic, partition), offset in first.items():
            try:
                self.consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:  # revoked meanwhile: the new owner starts from the committed offset
                log.info("seek back of %s[%s] failed (%s)", topic, partition, exc.args[0].str())

    def _job(self, msg: Message) -> _Job:
        """Decode and check one message; a refused one becomes a job that only dead-letters."""
        try:
            event = decode(msg.value())
            if not isinstance(event, RawFileArrived):
                raise ValueError(f"the preprocess worker does not accept {event.type} on the raw topic")
            EVENTS_IN.labels(service=SERVICE, type=event.type).inc()
            self._check(event)
        except (EventDecodeError, StorageError, ValueError) as exc:
            return _Job(msg, refused=exc)
        key = f"{self.ns}{prep_key(event.window, event.station, PRODUCT_EXT.lstrip('.'))}"
        return _Job(msg, event=event, key=key)

    def _start_fetch(self, job: _Job) -> None:
        if job.event is not None and job.fetch is None:
            job.started = time.monotonic()
            job.fetch = self._fetcher.submit(self._fetch, job.event, job.key)

    def _fetch(self, event: RawFileArrived, key: str) -> ObjectInfo | bytes:
        """The stored product's info when it exists (a redelivery, a resumed run), else the raw object's bytes."""
        try:
            return self.store.stat(key)
        except ObjectNotFound:
            return self.store.get(event.key)

    def process(self, job: _Job) -> None:
        """Preprocess the station-window a RawFileArrived names and announce it (or dead-letter the message).

        Raises:
            TransientError: the store is unavailable (the message is retried, never dead-lettered).
        """
        msg = job.msg
        try:
            if job.refused is not None:
                raise job.refused
            assert job.event is not None
            self._start_fetch(job)
            assert job.fetch is not None
            fetched = job.fetch.result()
            info = fetched if isinstance(fetched, ObjectInfo) else self._compute(job.event, job.key, fetched)
            self._announce(job, info)
        except TransientError:
            raise
        except (EventDecodeError, DspError, StorageError, ValueError) as exc:
            source = _source_of(msg) or str(getattr(exc, "source", ""))
            letter = dead_letter_for(msg, SERVICE, f"{type(exc).__name__}: {exc}", source=source)
            send_dead_letter(self.producer, self.topics.dlq, letter, key=msg.key())

    def _check(self, event: RawFileArrived) -> None:
        """Refuse an event whose raw key is not this namespace's object of its own window and station.

        Raises:
            InvalidKey: it is not.
        """
        expected = f"{self.ns}{raw_key(validate_window_id(event.window), validate_seed_id(event.station))}"
        if event.key != expected:
            raise InvalidKey(event.key, f"a RawFileArrived of {event.station} in {event.window} names {expected}")

    def _announce(self, job: _Job, info: ObjectInfo) -> None:
        """Produce the FileCommitted of a stored product (delivery is checked once per batch)."""
        assert job.event is not None
        event = job.event
        directory = job.key.rsplit("/", 1)[0] + "/"
        committed = FileCommitted(
            directory=directory,
            key=job.key,
            size=info.size,
            producer=self.producer_id,
            etag=info.etag,
            arrived_at=event.arrived_at,
        )
        produce_event(self.producer, self.topics.files, directory, committed)
        self.producer.poll(0)  # serve delivery callbacks as we go, not all at the flush
        EVENTS_OUT.labels(service=SERVICE, type=committed.type).inc()
        PREPROCESS_SECONDS.observe(time.monotonic() - job.started)
        if event.arrived_at:
            ARRIVAL_TO_COMMIT.observe(max(0.0, time.time() - datetime.fromisoformat(event.arrived_at).timestamp()))

    def _compute(self, event: RawFileArrived, key: str, raw: bytes) -> ObjectInfo:
        """Preprocess the raw object's bytes into the product at ``key``.

        Raises:
            DspError: the data cannot be processed. ObjectConflict: another product is already there.
            ValueError: the file holds another channel than the event names.
        """
        coords = Coordinates.from_dict(event.coordinates) if event.coordinates else None
        product = preprocess_bytes(
            [raw], event.window, self.settings.processing, sources=[event.key], coordinates=coords
        )
        if product.seed_id != event.station:
            raise ValueError(f"{event.key} holds {product.seed_id}, not {event.station}")
        outcome = self.store.put_if_absent(key, encode_product(product), content_type="application/octet-stream")
        FILES_PREPROCESSED.inc()
        return outcome.info


def _consume_error(msg: Message) -> bool:
    """True (after logging it) when ``msg`` carries a consumer error rather than a record."""
    if msg.error():
        log.debug("consume error: %s", msg.error())
        return True
    return False


def _source_of(msg: Message) -> str:
    """What a dead letter should name: the user's original file when known, else the raw object key."""
    try:
        event = decode(msg.value())
    except EventDecodeError:
        return ""
    return getattr(event, "source", "") or getattr(event, "key", "")
