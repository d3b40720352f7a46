"""The in-memory Kafka of contracts.testing behaves as the service loops rely on Kafka to behave."""

from __future__ import annotations

import pytest
from confluent_kafka import OFFSET_INVALID, KafkaException, TopicPartition

from contracts.testing import Crash, MemoryBroker


def test_a_transaction_is_invisible_until_it_commits_with_its_offsets() -> None:
    broker = MemoryBroker()
    broker.append("in", b"k", b"task")
    consumer = broker.consumer({"group.id": "g", "enable.auto.commit": False})
    consumer.subscribe(["in"])
    producer = broker.producer({"transactional.id": "t"})
    producer.init_transactions()
    producer.begin_transaction()
    (msg,) = consumer.consume(10, 0)
    producer.produce("out", key=b"k", value=b"result")
    producer.send_offsets_to_transaction(
        [TopicPartition("in", 0, msg.offset() + 1)], consumer.consumer_group_metadata()
    )
    assert broker.messages("out") == [] and broker.committed == {}
    producer.commit_transaction()
    assert [m.value() for m in broker.messages("out")] == [b"result"]
    assert consumer.committed([TopicPartition("in", 0)])[0].offset == 1


def test_an_aborted_transaction_leaves_no_trace_and_a_rewind_replays() -> None:
    broker = MemoryBroker()
    broker.append("in", None, b"a")
    consumer = broker.consumer({"group.id": "g"})
    consumer.subscribe(["in"])
    producer = broker.producer({"transactional.id": "t"})
    producer.init_transactions()
    producer.begin_transaction()
    assert len(consumer.consume(10, 0)) == 1 and consumer.consume(10, 0) == []
    producer.produce("out", value=b"x")
    producer.abort_transaction()
    assert broker.messages("out") == []
    (committed,) = consumer.committed(consumer.assignment())
    assert committed.offset == OFFSET_INVALID
    consumer.seek(TopicPartition("in", 0, OFFSET_INVALID))  # back to the committed offset (none: earliest)
    assert [m.value() for m in consumer.consume(10, 0)] == [b"a"]


def test_a_new_producer_with_the_same_id_fences_the_old_one_and_drops_its_open_transaction() -> None:
    broker = MemoryBroker()
    old = broker.producer({"transactional.id": "t"})
    old.init_transactions()
    old.begin_transaction()
    old.produce("out", value=b"from the dead")
    new = broker.producer({"transactional.id": "t"})
    new.init_transactions()
    with pytest.raises(KafkaException, match="fenced"):
        old.commit_transaction()
    assert broker.messages("out") == []


def test_a_crash_point_fires_once() -> None:
    broker = MemoryBroker()
    producer = broker.producer({})
    broker.crash_at("produce")
    with pytest.raises(Crash):
        producer.produce("out", value=b"lost")
    producer.produce("out", value=b"kept")
    assert [m.value() for m in broker.messages("out")] == [b"kept"]


def test_stored_offsets_are_committed_on_close_with_auto_commit() -> None:
    broker = MemoryBroker(partitions=2)
    for i in range(4):
        broker.append("in", f"k{i}".encode(), b"v")
    consumer = broker.consumer({"group.id": "g", "enable.auto.commit": True})
    consumer.subscribe(["in"])
    for msg in consumer.consume(10, 0):
        consumer.store_offsets(message=msg)
    consumer.close()
    ends = {("in", p): broker.end("in", p) for p in range(2)}
    assert broker.committed["g"] == {tp: end for tp, end in ends.items() if end}
    again = broker.consumer({"group.id": "g"})
    again.subscribe(["in"])
    assert again.consume(10, 0) == []
