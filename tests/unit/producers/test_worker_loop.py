"""The preprocess worker's loop against the in-memory Kafka: at least once, and never two different products.

The worker writes a station-window's product, produces its FileCommitted, waits for the acknowledgement and only
then stores the raw message's offset (its :class:`~contracts.checkpoint.StoredOffsets` checkpoint). Killed
anywhere before that, the file comes again; the product is found in the store and announced again instead of
computed again. A store outage rewinds the file without announcing anything; a record that cannot be processed
becomes a dead letter and its offset is stored like any other.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer

from contracts.checkpoint import Output, StoredOffsets
from contracts.events import DeadLetter, FileCommitted, RawFileArrived, decode
from contracts.outage import KAFKA, S3
from contracts.params import ProcessingParams
from contracts.settings import Settings
from contracts.testing import Crash, MemoryBroker, MemoryConsumer, MemoryProducer
from producers.worker import PreprocessWorker
from storage import PutOutcome
from storage.errors import StorageUnavailable
from storage.layout import Layout
from storage.memory import MemoryStore

WINDOW = "20240101T000000Z"
GROUP = "preprocess"


class CountingStore(MemoryStore):
    """A memory store that counts conditional puts and can fail its next ``n`` reads as unavailable."""

    def __init__(self) -> None:
        super().__init__()
        self.puts = 0
        self.unavailable = 0

    def put_if_absent(self, key: str, data: bytes, **kwargs: Any) -> PutOutcome:
        self.puts += 1
        return super().put_if_absent(key, data, **kwargs)

    def get(self, key: str) -> bytes:
        if self.unavailable:
            self.unavailable -= 1
            raise StorageUnavailable("get", key, 1, ConnectionError("the test's outage"))
        return super().get(key)


@pytest.fixture(autouse=True)
def _healthy_dependencies() -> Iterator[None]:
    yield
    S3.succeeded()  # the outage trackers are process-wide: leave them as found
    KAFKA.succeeded()


@dataclass
class World:
    settings: Settings
    store: CountingStore
    station: str
    raw: bytes
    broker: MemoryBroker = field(default_factory=MemoryBroker)

    def worker(self) -> PreprocessWorker:
        """A new worker process on the same broker and store (the previous one is dead or done)."""
        w = PreprocessWorker(
            self.settings, self.settings.topics, self.store, group=GROUP, clients=self.broker.clients()
        )
        w.consumer.subscribe([self.settings.topics.raw])
        return w

    def send(self, value: bytes | None = None) -> None:
        """Put the station's RawFileArrived (or another record) on the raw topic."""
        self.broker.append(self.settings.topics.raw, b"k", self.raw if value is None else value)

    def announced(self) -> list[FileCommitted]:
        events = [decode(m.value() or b"") for m in self.broker.messages(self.settings.topics.files)]
        return [e for e in events if isinstance(e, FileCommitted)]

    def committed_on_close(self, w: PreprocessWorker) -> dict[tuple[str, int], int]:
        """Leave the group, which commits the stored offsets, and return the group's committed offsets."""
        w.checkpoint.close()
        return self.broker.committed[GROUP]


@pytest.fixture
def world(synth_dir: Path, truth: dict[str, Any], params: ProcessingParams) -> World:
    """A namespace whose store holds one station's raw hour, and the RawFileArrived that names it."""
    settings = Settings(namespace="t1", processing=params)
    layout, store = Layout(settings.key_prefix), CountingStore()
    station = sorted(truth["stations"])[0]
    data = (synth_dir / f"{station}__{WINDOW}.mseed").read_bytes()
    store.put(layout.raw(WINDOW, station), data)
    event = RawFileArrived(key=layout.raw(WINDOW, station), station=station, window=WINDOW, size=len(data))
    return World(settings, store, station, event.encode())


def test_a_file_is_announced_once_and_its_offset_committed_on_close(world: World) -> None:
    world.send()
    w = world.worker()
    assert w.poll_once() is True
    assert w.poll_once() is None, "nothing left to consume"
    (committed,) = world.announced()
    assert committed.key == Layout(world.settings.key_prefix).product(WINDOW, world.station)
    assert world.store.exists(committed.key) and world.store.puts == 1
    info = world.store.stat(committed.key)
    assert (committed.size, committed.etag) == (info.size, info.etag), "the event describes the stored product"
    assert world.broker.committed.get(GROUP, {}) == {}, "stored offsets wait for the auto-commit"
    assert world.committed_on_close(w) == {(world.settings.topics.raw, 0): 1}


def test_a_crash_before_the_acknowledgement_announces_the_product_again_without_computing_it(world: World) -> None:
    world.send()
    dead = world.worker()
    world.broker.crash_at("produce")
    with pytest.raises(Crash):
        dead.poll_once()
    assert world.announced() == [] and world.store.puts == 1, "the product was durable before the announcement"
    assert world.broker.committed.get(GROUP, {}) == {}

    restarted = world.worker()
    assert restarted.poll_once() is True, "the file comes again"
    assert len(world.announced()) == 1
    assert world.store.puts == 1, "and is announced from the product in the store, not computed again"
    assert world.committed_on_close(restarted) == {(world.settings.topics.raw, 0): 1}


def test_a_store_outage_rewinds_the_file_and_announces_nothing(world: World) -> None:
    world.send()
    world.store.unavailable = 1
    w = world.worker()
    assert w.poll_once() is False, "rolled back"
    assert world.announced() == [] and world.broker.messages(world.settings.topics.dlq) == [], "no dead letter"
    assert w.poll_once() is True, "the same file, consumed again once the store answers"
    assert len(world.announced()) == 1
    assert world.committed_on_close(w) == {(world.settings.topics.raw, 0): 1}


def test_a_malformed_record_is_dead_lettered_and_the_next_file_still_processed(world: World) -> None:
    world.send(b'{"type": "RawFileArrived", "key": 7')
    world.send()
    w = world.worker()
    assert w.poll_once() is True
    (letter,) = [decode(m.value() or b"") for m in world.broker.messages(world.settings.topics.dlq)]
    assert isinstance(letter, DeadLetter) and letter.service == "preprocess" and letter.source_offset == 0
    assert w.poll_once() is True
    assert len(world.announced()) == 1
    assert world.committed_on_close(w) == {(world.settings.topics.raw, 0): 2}


class RefusingProducer(MemoryProducer):
    """A plain producer whose next ``refusals`` deliveries fail (a message that timed out in the queue)."""

    refusals = 1

    def poll(self, timeout: float = 0) -> int:
        served, self._deliveries = self._deliveries, []
        for callback, message in served:
            if RefusingProducer.refusals:
                RefusingProducer.refusals -= 1
                callback(KafkaError(KafkaError._MSG_TIMED_OUT, "the test's timeout"), message)
            else:
                callback(None, message)
        return len(served)


def test_stored_offsets_wait_for_every_acknowledgement() -> None:
    broker = MemoryBroker()
    broker.append("in", b"k", b"one")
    consumer = MemoryConsumer(broker, {"group.id": "g", "enable.auto.commit": True})
    consumer.subscribe(["in"])
    checkpoint = StoredOffsets(cast(Consumer, consumer), cast(Producer, RefusingProducer(broker, {})), service="t")
    event = DeadLetter(reason="r", service="test")

    def handle(_msg: Message) -> Output:
        return Output(events=[("out", "k", event)])

    batch = checkpoint.consume(10, 0)
    assert checkpoint.step(batch, handle) is False, "a refused delivery rolls the batch back"
    assert consumer.stored == {}, "with no offset stored"
    again = checkpoint.consume(10, 0)
    assert [m.offset() for m in again] == [0], "the batch comes again"
    assert checkpoint.step(again, handle) is True
    assert consumer.stored == {("in", 0): 1}
    assert len(broker.messages("out")) == 2, "at least once: the refused copy may have landed too"


def test_a_checkpoint_without_a_producer_refuses_to_publish() -> None:
    broker = MemoryBroker()
    broker.append("in", b"k", b"one")
    consumer = broker.consumer({"group.id": "g"})
    consumer.subscribe(["in"])
    checkpoint = StoredOffsets(consumer, service="test")
    letter = DeadLetter(reason="r", service="test")
    with pytest.raises(RuntimeError, match="without a producer"):
        checkpoint.step(checkpoint.consume(1, 0), lambda _m: Output(events=[("out", "k", letter)]))
