"""The preprocess worker's batch loop and its crash semantics, with an in-memory store and Kafka doubles."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import obspy
import pytest
from confluent_kafka import KafkaError, Message, TopicPartition

from contracts.events import DeadLetter, FileCommitted, RawFileArrived, decode
from contracts.settings import Settings
from producers.worker import PreprocessWorker
from storage import MemoryStore, StorageUnavailable
from storage.keys import prep_key, raw_key

WINDOW = "20240101T000000Z"
STATIONS = [f"XB.S{i:02d}..HHZ" for i in range(4)]
RAW_TOPIC = "raw"


class FakeProducer:
    """Records what is produced; ``fail_next_flush`` makes the next flush report a failed delivery."""

    def __init__(self) -> None:
        self.produced: list[tuple[str, Any]] = []
        self.flushes = 0
        self.fail_next_flush = False
        self.on_delivery: Callable[[KafkaError | None, Any], None] = lambda err, msg: None

    def produce(self, topic: str, key: bytes | None = None, value: bytes | None = None, **_: Any) -> None:
        self.produced.append((topic, decode(value)))

    def poll(self, _timeout: float = 0) -> int:
        return 0

    def flush(self, _timeout: float = 0) -> int:
        self.flushes += 1
        if self.fail_next_flush:
            self.fail_next_flush = False
            self.on_delivery(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), None)
        return 0

    def events(self, kind: type) -> list[Any]:
        return [event for _, event in self.produced if isinstance(event, kind)]


class FakeConsumer:
    """Records stored offsets and seeks."""

    def __init__(self) -> None:
        self.stored: list[tuple[str, int, int]] = []
        self.seeks: list[tuple[str, int, int]] = []

    def store_offsets(self, offsets: list[TopicPartition]) -> None:
        self.stored.extend((tp.topic, tp.partition, tp.offset) for tp in offsets)

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))


class FlakyStore(MemoryStore):
    """A memory store whose operations named in ``failing`` raise StorageUnavailable while the set holds them."""

    def __init__(self) -> None:
        super().__init__()
        self.failing: set[tuple[str, str]] = set()  # (operation, key)
        self.puts = 0

    def _maybe_fail(self, operation: str, key: str) -> None:
        if (operation, key) in self.failing:
            raise StorageUnavailable(operation, key, 1, ConnectionError("down"))

    def get(self, key: str) -> bytes:
        self._maybe_fail("get", key)
        return super().get(key)

    def put_if_absent(self, key: str, data: bytes, **kwargs: Any) -> Any:
        self._maybe_fail("put_if_absent", key)
        self.puts += 1
        return super().put_if_absent(key, data, **kwargs)


def mseed(station: str, seed: int) -> bytes:
    """One hour of 20 Hz noise of ``station`` as STEIM2 MiniSEED."""
    net, sta, loc, cha = station.split(".")
    tr = obspy.Trace(np.round(np.random.default_rng(seed).standard_normal(72_000) * 1000).astype(np.int32))
    tr.stats.update({"network": net, "station": sta, "location": loc, "channel": cha, "sampling_rate": 20.0})
    tr.stats.starttime = obspy.UTCDateTime(2024, 1, 1)
    buf = io.BytesIO()
    tr.write(buf, format="MSEED", encoding="STEIM2", reclen=4096)
    return buf.getvalue()


@pytest.fixture
def store() -> FlakyStore:
    store = FlakyStore()
    for i, station in enumerate(STATIONS):
        store.put(raw_key(WINDOW, station), mseed(station, i))
    return store


def make_worker(store: MemoryStore) -> tuple[PreprocessWorker, FakeProducer, FakeConsumer]:
    settings = Settings()
    producer, consumer = FakeProducer(), FakeConsumer()
    worker = PreprocessWorker(
        settings,
        settings.topics,
        store,
        group="g",
        producer=producer,
        consumer=consumer,  # type: ignore[arg-type]
    )
    producer.on_delivery = worker.on_delivery
    return worker, producer, consumer


def messages(stations: list[str], partition: int = 0, first_offset: int = 10) -> list[Message]:
    out = []
    for i, station in enumerate(stations):
        event = RawFileArrived(key=raw_key(WINDOW, station), station=station, window=WINDOW, size=1)
        out.append(Message(topic=RAW_TOPIC, partition=partition, offset=first_offset + i, value=event.encode()))
    return out


def product_key(station: str) -> str:
    return prep_key(WINDOW, station, "npz")


def test_a_batch_stores_every_product_announces_each_and_flushes_once(store: FlakyStore) -> None:
    worker, producer, consumer = make_worker(store)
    assert worker.process_batch(messages(STATIONS)) == 4
    committed = producer.events(FileCommitted)
    assert [event.key for event in committed] == [product_key(s) for s in STATIONS]
    assert all(event.etag == store.stat(event.key).etag for event in committed)
    assert producer.flushes == 1
    assert consumer.stored == [(RAW_TOPIC, 0, 14)]  # after the batch's last message, once
    assert consumer.seeks == []


def test_offsets_of_each_partition_are_stored_after_its_last_message(store: FlakyStore) -> None:
    worker, _, consumer = make_worker(store)
    batch = messages(STATIONS[:2], partition=0, first_offset=5) + messages(STATIONS[2:], partition=3, first_offset=70)
    assert worker.process_batch(batch) == 4
    assert sorted(consumer.stored) == [(RAW_TOPIC, 0, 7), (RAW_TOPIC, 3, 72)]


def test_a_transient_store_failure_keeps_what_is_done_and_retries_the_rest(store: FlakyStore) -> None:
    worker, producer, consumer = make_worker(store)
    store.failing.add(("get", raw_key(WINDOW, STATIONS[2])))
    batch = messages(STATIONS)
    assert worker.process_batch(batch) == 2
    assert consumer.stored == [(RAW_TOPIC, 0, 12)]  # the two files done before the failure
    assert consumer.seeks == [(RAW_TOPIC, 0, 12)]  # back to the first file not done
    assert producer.events(DeadLetter) == []  # a transient failure is never a dead letter
    assert [e.key for e in producer.events(FileCommitted)] == [product_key(s) for s in STATIONS[:2]]

    store.failing.clear()  # the store is back: the redelivered messages are done, nothing is computed twice
    assert worker.process_batch(batch[2:]) == 2
    assert consumer.stored[-1] == (RAW_TOPIC, 0, 14)
    assert store.puts == 4
    assert [e.key for e in producer.events(FileCommitted)] == [product_key(s) for s in STATIONS]


def test_a_crash_between_product_write_and_offset_store_redoes_the_file_without_a_second_product(
    store: FlakyStore,
) -> None:
    worker, _, _ = make_worker(store)
    batch = messages(STATIONS[:2])
    store.failing.add(("put_if_absent", product_key(STATIONS[1])))  # the first product is written, then "crash"
    worker.process_batch(batch)
    first = store.stat(product_key(STATIONS[0]))
    # A worker killed at this point never stored the offset of the second file: a new one gets both again.
    store.failing.clear()
    again, producer2, consumer2 = make_worker(store)
    assert again.process_batch(batch) == 2
    assert store.puts == 2  # one product per file: the first was found, announced again, not recomputed
    assert store.stat(product_key(STATIONS[0])) == first
    assert [e.key for e in producer2.events(FileCommitted)] == [product_key(s) for s in STATIONS[:2]]
    assert consumer2.stored == [(RAW_TOPIC, 0, 12)]


def test_a_failed_delivery_stores_no_offset_and_redoes_the_whole_batch(store: FlakyStore) -> None:
    worker, producer, consumer = make_worker(store)
    batch = messages(STATIONS[:3])
    producer.fail_next_flush = True
    assert worker.process_batch(batch) == 0
    assert consumer.stored == []
    assert consumer.seeks == [(RAW_TOPIC, 0, 10)]
    assert worker.process_batch(batch) == 3  # redone: products found in the store, announced again
    assert store.puts == 3
    assert len(producer.events(FileCommitted)) == 6
    assert consumer.stored == [(RAW_TOPIC, 0, 13)]


def test_a_bad_message_is_dead_lettered_and_the_batch_goes_on(store: FlakyStore) -> None:
    worker, producer, consumer = make_worker(store)
    batch = messages(STATIONS[:3])
    outside = RawFileArrived(key="other/raw/x.mseed", station=STATIONS[1], window=WINDOW, size=1)
    batch[1] = Message(topic=RAW_TOPIC, partition=0, offset=11, value=outside.encode())
    batch.append(Message(topic=RAW_TOPIC, partition=0, offset=13, value=b"not json"))
    assert worker.process_batch(batch) == 4
    letters = producer.events(DeadLetter)
    assert [letter.source_offset for letter in letters] == [11, 13]
    assert [e.key for e in producer.events(FileCommitted)] == [product_key(STATIONS[0]), product_key(STATIONS[2])]
    assert consumer.stored == [(RAW_TOPIC, 0, 14)]


def test_a_stop_finishes_the_current_file_and_leaves_the_rest(store: FlakyStore) -> None:
    worker, producer, consumer = make_worker(store)
    worker.stop()
    assert worker.process_batch(messages(STATIONS)) == 1
    assert consumer.stored == [(RAW_TOPIC, 0, 11)]
    assert len(producer.events(FileCommitted)) == 1
