"""Helpers for integration tests: produce events like an outside client, read a topic to a quiet end.

Workers run as real processes through :mod:`xcorrflow.orchestration.fleet`, the same code ``xcorrflow run`` uses.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from contracts.events import Event, decode
from contracts.kafka import connection_config, partitions_of
from contracts.settings import Settings
from xcorrflow.orchestration.fleet import WorkerProcess, wait_for


def produce(settings: Settings, topic: str, items: Sequence[tuple[str | None, Event | bytes]]) -> None:
    """Produce (key, event-or-raw-bytes) pairs like an outside client would: a plain idempotent producer."""
    producer = Producer({**connection_config(settings), "enable.idempotence": True})
    for key, value in items:
        payload = value if isinstance(value, bytes) else value.encode()
        producer.produce(topic, key=key.encode() if key else None, value=payload)
    assert producer.flush(30) == 0


def read_events(
    settings: Settings,
    topic: str,
    *,
    until: Callable[[list[Event]], bool],
    timeout: float = 60.0,
    settle: float = 2.0,
) -> list[Event]:
    """Read ``topic`` from the beginning (read_committed) until ``until(events)`` holds, then ``settle`` seconds
    more so that an event that should *not* exist (a duplicate) has time to show up."""
    consumer = Consumer(
        {
            **connection_config(settings),
            "group.id": f"reader-{time.monotonic_ns()}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions_of(consumer, topic)])
    events: list[Event] = []
    deadline = time.monotonic() + timeout
    settle_until: float | None = None
    try:
        while time.monotonic() < (settle_until or deadline):
            for msg in consumer.consume(500, 0.2):
                if not msg.error():
                    events.append(decode(msg.value()))
            if settle_until is None and until(events):
                settle_until = time.monotonic() + settle
    finally:
        consumer.close()
    return events


__all__ = ["WorkerProcess", "produce", "read_events", "wait_for"]
