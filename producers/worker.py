"""``xcorrflow worker preprocess``: raw station-windows in, products out, in consumer group ``preprocess``.

For each RawFileArrived: fetch the raw object, preprocess it (DSP core), write the product to
``<ns>prep/<window>/<SEED id>.npz`` with a conditional put, produce FileCommitted keyed by the directory and
wait for Kafka's acknowledgement, and only then store the message's offset. A crash anywhere before the offset
is stored redoes the file; the product key is deterministic and the product bytes are too, so the redo finds
the object already there (same content) and the broker counts the repeated FileCommitted once. No file can
become two different products: a conditional put never replaces an existing object.

A file that cannot be processed goes to the dead-letter topic with its reason, and the worker carries on.
Transient store or Kafka failures are not dead-lettered: the worker waits and retries the same message.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import datetime

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from prometheus_client import Counter, Histogram

from contracts.events import EventDecodeError, FileCommitted, ProducerFinished, ProducerStarted, RawFileArrived, decode
from contracts.kafka import (
    broadcast,
    consumer_config,
    dead_letter_for,
    log_ready_on_first_assignment,
    partitions_of,
    produce_event,
    producer_config,
    send_dead_letter,
)
from contracts.metrics import EVENTS_IN, EVENTS_OUT, LATENCY_BUCKETS, S3_ERRORS
from contracts.settings import Settings, TopicNames
from dsp.errors import DspError
from dsp.preprocess import preprocess_bytes
from dsp.product import PRODUCT_EXT, Coordinates, encode_product
from storage import ObjectStore
from storage.errors import ObjectConflict, ObjectNotFound, StorageError, StorageUnavailable
from storage.keys import prep_key

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


class PreprocessWorker:
    """One member of the ``preprocess`` consumer group."""

    def __init__(self, settings: Settings, topics: TopicNames, store: ObjectStore, *, group: str) -> None:
        self.settings = settings
        self.topics = topics
        self.store = store
        self.ns = settings.key_prefix
        self.producer_id = f"preprocess-{socket.gethostname()}-{os.getpid()}"
        self.producer = Producer(producer_config(settings))
        self.consumer = Consumer(consumer_config(settings, group, service=SERVICE))
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
                msg = self.consumer.poll(0.1)
                if msg is None:
                    continue
                if msg.error():
                    log.warning("consume error: %s", msg.error())
                    continue
                if self._process_durably(msg):
                    self.consumer.store_offsets(message=msg)
        finally:
            broadcast(
                self.producer,
                self.topics.files,
                self.producer_id,
                ProducerFinished(producer=self.producer_id),
                partitions,
            )
            self.producer.flush(30)
            self.consumer.close()  # commits the stored offsets

    def _process_durably(self, msg: Message) -> bool:
        """Process one message; True when its offset may be stored, False to retry it after a pause."""
        try:
            self.process(msg)
            if self.producer.flush(30) != 0:
                raise KafkaException("FileCommitted not acknowledged within 30 s")
            return True
        except (StorageUnavailable, KafkaException) as exc:
            S3_ERRORS.labels(service=SERVICE, op="transient").inc()
            log.warning("transient failure on %s@%s, retrying: %s", msg.topic(), msg.offset(), exc)
            time.sleep(1.0)
            self.consumer.seek(TopicPartition(msg.topic() or "", msg.partition() or 0, msg.offset() or 0))
            return False

    def process(self, msg: Message) -> None:
        """Preprocess the station-window a RawFileArrived names (or dead-letter the message)."""
        try:
            event = decode(msg.value())
            if not isinstance(event, RawFileArrived):
                raise ValueError(f"the preprocess worker does not accept {event.type} on the raw topic")
            EVENTS_IN.labels(service=SERVICE, type=event.type).inc()
            self._preprocess(event)
        except (EventDecodeError, DspError, ObjectNotFound, ObjectConflict, ValueError) as exc:
            source = _source_of(msg) or str(getattr(exc, "source", ""))
            letter = dead_letter_for(msg, SERVICE, f"{type(exc).__name__}: {exc}", source=source)
            send_dead_letter(self.producer, self.topics.dlq, letter, key=msg.key())
        except StorageError as exc:  # permanent refusals (access denied...) are not retried forever
            letter = dead_letter_for(msg, SERVICE, f"{type(exc).__name__}: {exc}", source=_source_of(msg))
            send_dead_letter(self.producer, self.topics.dlq, letter, key=msg.key())

    def _preprocess(self, event: RawFileArrived) -> None:
        t0 = time.monotonic()
        raw = self.store.get(event.key)
        coords = Coordinates.from_dict(event.coordinates) if event.coordinates else None
        product = preprocess_bytes(
            [raw], event.window, self.settings.processing, sources=[event.key], coordinates=coords
        )
        payload = encode_product(product)
        key = f"{self.ns}{prep_key(event.window, product.seed_id, PRODUCT_EXT.lstrip('.'))}"
        outcome = self.store.put_if_absent(key, payload, content_type="application/octet-stream")
        directory = key.rsplit("/", 1)[0] + "/"
        committed = FileCommitted(
            directory=directory,
            key=key,
            size=outcome.info.size,
            producer=self.producer_id,
            etag=outcome.info.etag,
            arrived_at=event.arrived_at,
        )
        produce_event(self.producer, self.topics.files, directory, committed)
        EVENTS_OUT.labels(service=SERVICE, type=committed.type).inc()
        FILES_PREPROCESSED.inc()
        PREPROCESS_SECONDS.observe(time.monotonic() - t0)
        if event.arrived_at:
            ARRIVAL_TO_COMMIT.observe(max(0.0, time.time() - datetime.fromisoformat(event.arrived_at).timestamp()))


def _source_of(msg: Message) -> str:
    """What a dead letter should name: the user's original file when known, else the raw object key."""
    try:
        event = decode(msg.value())
    except EventDecodeError:
        return ""
    return getattr(event, "source", "") or getattr(event, "key", "")
