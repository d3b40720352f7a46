"""A produce/consume round trip through a consumer group of two, with a rebalance when one member leaves."""

from __future__ import annotations

import threading
import time
from collections import Counter

from confluent_kafka import Consumer, Producer, TopicPartition

from contracts.kafka import connection_config
from contracts.settings import Settings
from contracts.topics import TopicSpec, delete_topics, ensure_topics

N_MESSAGES = 600


def _consumer(settings: Settings, group: str) -> Consumer:
    return Consumer(
        {
            **connection_config(settings),
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
            "enable.auto.offset.store": False,  # offsets are stored only after a message is processed
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": 10000,
        }
    )


def _produce(settings: Settings, topic: str, start: int, stop: int) -> None:
    producer = Producer({**connection_config(settings), "enable.idempotence": True})
    for i in range(start, stop):
        producer.produce(topic, key=str(i % 17).encode(), value=str(i).encode())
    assert producer.flush(30) == 0


def _run_member(consumer: Consumer, topic: str, seen: list[int], stop: threading.Event, owned: set[int]) -> None:
    """Consume until stopped; ``owned`` mirrors the member's current (incremental) assignment."""

    def on_assign(c: Consumer, parts: list[TopicPartition]) -> None:
        owned.update(p.partition for p in parts)

    def on_revoke(c: Consumer, parts: list[TopicPartition]) -> None:
        owned.difference_update(p.partition for p in parts)

    consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_revoke)
    while not stop.is_set():
        msg = consumer.poll(0.2)
        if msg is None or msg.error():
            continue
        seen.append(int(msg.value()))
        consumer.store_offsets(message=msg)
    consumer.close()  # commits the stored offsets and leaves the group, which triggers a rebalance


def test_group_of_two_rebalances_without_loss(stack: Settings, unique: str) -> None:
    topic = f"{unique}.roundtrip"
    ensure_topics(stack.bootstrap_servers, [TopicSpec(topic, 4)])
    try:
        group = f"{unique}-group"
        seen_a: list[int] = []
        seen_b: list[int] = []
        owned_a: set[int] = set()
        owned_b: set[int] = set()
        stop_a, stop_b = threading.Event(), threading.Event()
        a = threading.Thread(target=_run_member, args=(_consumer(stack, group), topic, seen_a, stop_a, owned_a))
        b = threading.Thread(target=_run_member, args=(_consumer(stack, group), topic, seen_b, stop_b, owned_b))
        a.start()
        b.start()
        _wait(lambda: len(owned_a) == 2 and len(owned_b) == 2, "the two members share the four partitions")
        _produce(stack, topic, 0, N_MESSAGES // 2)
        _wait(lambda: len(seen_a) + len(seen_b) >= N_MESSAGES // 2, "first half consumed")
        assert seen_a and seen_b, "both members of the group must have received messages"

        stop_b.set()  # member b leaves; its partitions move to a
        b.join(30)
        _wait(lambda: owned_a == {0, 1, 2, 3}, "a owns all four partitions after the rebalance")
        _produce(stack, topic, N_MESSAGES // 2, N_MESSAGES)
        _wait(lambda: len(set(seen_a) | set(seen_b)) >= N_MESSAGES, "every message consumed")
        stop_a.set()
        a.join(30)

        counts = Counter(seen_a + seen_b)
        assert set(counts) == set(range(N_MESSAGES)), "no message may be lost"
        assert max(counts.values()) == 1, "offsets were committed on leave, so nothing is redelivered"
        assert any(v >= N_MESSAGES // 2 for v in seen_a), "a consumed b's share of the second half"
    finally:
        delete_topics(stack.bootstrap_servers, [topic])


def _wait(predicate, what: str, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.1)
