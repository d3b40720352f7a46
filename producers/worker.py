"""``xcorrflow worker preprocess``: raw station-windows in, products out, in consumer group ``preprocess``.

For each RawFileArrived: fetch the raw object, preprocess it (DSP core), write the product to
``<ns>prep/<window>/<SEED id>.npz`` with a conditional put, produce FileCommitted keyed by the directory and
wait for Kafka's acknowledgement, and only then store the message's offset. A crash anywhere before the offset
is stored redoes the file; the product key is deterministic and the product bytes are too, so the redo finds
the object already there (same content) and the broker counts the repeated FileCommitted once. No file can
become two different products: a conditional put never replaces an existing object.

A file that cannot be processed goes to the dead-letter topic with its reason, and the worker carries on.
Transient store or Kafka failures are not dead-lettered: the worker waits and retries the same message, for
up to ``faults.s3_outage_s`` / ``faults.kafka_outage_s`` (then it exits, saying which service stayed away).
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
from datetime import datetime

from confluent_kafka import Message
from prometheus_client import Counter, Histogram

from contracts.checkpoint import Output, StoredOffsets
from contracts.errors import TransientError
from contracts.events import EventDecodeError, FileCommitted, ProducerFinished, ProducerStarted, RawFileArrived, decode
from contracts.kafka import (
    REAL_CLIENTS,
    KafkaClients,
    broadcast,
    consumer_config,
    dead_letter,
    log_ready_on_first_assignment,
    partitions_of,
    producer_config,
)
from contracts.metrics import EVENTS_IN, LATENCY_BUCKETS, S3_ERRORS
from contracts.settings import Settings, TopicNames
from dsp.errors import DspError
from dsp.preprocess import preprocess_bytes
from dsp.product import Coordinates
from results.products import ProductStore
from storage import ObjectInfo, ObjectStore
from storage.errors import InvalidKey, ObjectNotFound, StorageError
from storage.layout import Layout

log = logging.getLogger(__name__)
SERVICE = "preprocess"

FILES_PREPROCESSED = Counter("xcorrflow_files_preprocessed", "station-windows preprocessed into products")
PREPROCESS_SECONDS = Histogram(
    "xcorrflow_preprocess_seconds", "fetch + preprocess + write of one station-window", buckets=LATENCY_BUCKETS
)
ARRIVAL_TO_COMMIT = Histogram(
    "xcorrflow_arrival_to_commit_seconds", "raw arrival → product committed", buckets=LATENCY_BUCKETS
)


class PreprocessWorker:
    """One member of the ``preprocess`` consumer group."""

    def __init__(
        self,
        settings: Settings,
        topics: TopicNames,
        store: ObjectStore,
        *,
        group: str,
        clients: KafkaClients = REAL_CLIENTS,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.layout = Layout(settings.key_prefix)  # the keys of the events it checks and sends
        self.products = ProductStore(store, settings.key_prefix)
        self.producer_id = f"preprocess-{socket.gethostname()}-{os.getpid()}"
        self.producer = clients.producer(producer_config(settings))
        self.consumer = clients.consumer(consumer_config(settings, group, service=SERVICE))
        self.checkpoint = StoredOffsets(self.consumer, self.producer, service=SERVICE)
        self._stop = threading.Event()

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
                self.poll_once()
        finally:
            broadcast(
                self.producer,
                self.topics.files,
                self.producer_id,
                ProducerFinished(producer=self.producer_id),
                partitions,
            )
            self.producer.flush(30)
            self.checkpoint.close()  # commits the stored offsets

    def poll_once(self, timeout: float = 0.1) -> bool | None:
        """Preprocess one raw file and store its offset once its announcement is acknowledged (one turn of
        :meth:`run`): a file at a time, so a failure rewinds only that file.

        Returns:
            None when there was nothing to consume, True when the file is done, False when it will come again.

        Raises:
            DependencyUnavailable: Kafka or S3 stayed away longer than the settings allow.
        """
        return self.checkpoint.step(self.checkpoint.consume(1, timeout), self.handle)

    def handle(self, msg: Message) -> Output:
        """Preprocess the station-window a RawFileArrived names: its FileCommitted, or a dead letter.

        Raises:
            TransientError: the store is unavailable (the message is retried, never dead-lettered).
        """
        try:
            event = decode(msg.value())
            if not isinstance(event, RawFileArrived):
                raise ValueError(f"the preprocess worker does not accept {event.type} on the raw topic")
            EVENTS_IN.labels(service=SERVICE, type=event.type).inc()
            self._check(event)
            return self._preprocess(event)
        except TransientError:
            S3_ERRORS.labels(service=SERVICE, op="transient").inc()
            raise
        except (EventDecodeError, DspError, StorageError, ValueError) as exc:
            source = _source_of(msg) or str(getattr(exc, "source", ""))
            return Output(events=[dead_letter(msg, SERVICE, self.topics.dlq, f"{type(exc).__name__}: {exc}", source)])

    def _check(self, event: RawFileArrived) -> None:
        """Refuse an event whose raw key is not this namespace's object of its own window and station.

        Raises:
            InvalidKey: it is not.
        """
        expected = self.layout.raw(event.window, event.station)
        if event.key != expected:
            raise InvalidKey(event.key, f"a RawFileArrived of {event.station} in {event.window} names {expected}")

    def _preprocess(self, event: RawFileArrived) -> Output:
        t0 = time.monotonic()
        key = self.layout.product(event.window, event.station)
        try:
            info = self.products.info(
                event.window, event.station
            )  # done before (a redelivery, a resumed run): announce it again
        except ObjectNotFound:
            info = self._compute(event)
        directory = self.layout.product_dir(event.window)
        committed = FileCommitted(
            directory=directory,
            key=key,
            size=info.size,
            producer=self.producer_id,
            etag=info.etag,
            arrived_at=event.arrived_at,
        )
        PREPROCESS_SECONDS.observe(time.monotonic() - t0)
        if event.arrived_at:
            ARRIVAL_TO_COMMIT.observe(max(0.0, time.time() - datetime.fromisoformat(event.arrived_at).timestamp()))
        return Output(events=[(self.topics.files, directory, committed)])

    def _compute(self, event: RawFileArrived) -> ObjectInfo:
        """Preprocess the event's raw station-window into its product.

        Raises:
            DspError: the data cannot be processed. ObjectConflict: another product is already there.
            ValueError: the file holds another channel than the event names.
        """
        raw = self.products.get_raw(event.window, event.station)  # the event's key, checked by _check
        coords = Coordinates.from_dict(event.coordinates) if event.coordinates else None
        product = preprocess_bytes(
            [raw], event.window, self.settings.processing, sources=[event.key], coordinates=coords
        )
        if product.seed_id != event.station:
            raise ValueError(f"{event.key} holds {product.seed_id}, not {event.station}")
        outcome = self.products.put(product)
        FILES_PREPROCESSED.inc()
        return outcome.info


def _source_of(msg: Message) -> str:
    """What a dead letter should name: the user's original file when known, else the raw object key."""
    try:
        event = decode(msg.value())
    except EventDecodeError:
        return ""
    return getattr(event, "source", "") or getattr(event, "key", "")
