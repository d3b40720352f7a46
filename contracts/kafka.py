"""Kafka client configuration and the small helpers every worker shares (dead letters, lag, broadcast).

One place decides how xcorrflow talks to Kafka: idempotent producers, the Java-compatible murmur2 partitioner
(so tools in other languages put a directory's events on the same partition), cooperative-sticky assignment,
``read_committed`` consumers, and offsets stored only after the work they cover is durable.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from contracts.events import MAX_PAYLOAD_CHARS, DeadLetter, Event
from contracts.metrics import CONSUMER_LAG, DEAD_LETTERS, KAFKA_ERRORS
from contracts.settings import Settings

log = logging.getLogger(__name__)


def producer_config(settings: Settings, *, transactional_id: str | None = None, **extra: Any) -> dict[str, Any]:
    """Configuration of an idempotent (optionally transactional) producer tuned for low latency.

    Args:
        settings: supplies the bootstrap servers.
        transactional_id: makes the producer transactional (consume-transform-produce).
        **extra: librdkafka properties that win over the defaults.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,  # events are small and latency matters more than batching
        "compression.type": "lz4",
        "partitioner": "murmur2_random",  # the Java client's partitioner: same key, same partition, any tool
        "error_cb": _error_cb,
    }
    if transactional_id:
        config["transactional.id"] = transactional_id
        config["transaction.timeout.ms"] = 60000
    config.update(extra)
    return config


def consumer_config(
    settings: Settings, group: str, *, transactional: bool = False, service: str = "", **extra: Any
) -> dict[str, Any]:
    """Configuration of a group consumer.

    Args:
        settings: supplies the bootstrap servers.
        group: consumer group id.
        transactional: offsets are committed by a producer transaction (no auto commit at all); otherwise they
            are auto-committed, but only after the worker stored them, i.e. after the work is durable.
        service: label of the lag metric.
        **extra: librdkafka properties that win over the defaults.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "group.id": group,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "enable.auto.commit": not transactional,
        "enable.auto.offset.store": False,
        "auto.commit.interval.ms": 500,
        "session.timeout.ms": 6000,  # a member killed with -9 is noticed within ~6 s (the broker's minimum)
        "heartbeat.interval.ms": 1000,
        "max.poll.interval.ms": 300000,
        "fetch.wait.max.ms": 500,  # a long poll: the broker answers as soon as data arrives, so no latency is added
        "statistics.interval.ms": 5000,
        "stats_cb": _lag_cb(group, service),
        "error_cb": _error_cb,
    }
    config.update(extra)
    return config


def _error_cb(err: KafkaError) -> None:
    KAFKA_ERRORS.labels(service="client").inc()
    if err.fatal():
        log.error("fatal Kafka error: %s", err)
    else:
        log.debug("Kafka error (librdkafka retries): %s", err)


def _lag_cb(group: str, service: str) -> Any:
    def on_stats(raw: str) -> None:
        stats = json.loads(raw)
        for topic, tstats in stats.get("topics", {}).items():
            lags = [p.get("consumer_lag", -1) for pid, p in tstats.get("partitions", {}).items() if pid != "-1"]
            valid = [lag for lag in lags if lag >= 0]
            if valid:
                CONSUMER_LAG.labels(group=group, topic=topic, service=service).set(sum(valid))

    return on_stats


def dead_letter_for(msg: Message, service: str, reason: str, source: str = "") -> DeadLetter:
    """A dead-letter record for ``msg`` that names where it came from."""
    raw = msg.value() or b""
    return DeadLetter(
        reason=reason,
        service=service,
        source_topic=msg.topic() or "",
        source_partition=msg.partition() or 0,
        source_offset=msg.offset() or 0,
        source=source,
        payload=raw[:MAX_PAYLOAD_CHARS].decode("utf-8", errors="replace"),  # bytes >= characters
    )


def produce_event(producer: Producer, topic: str, key: str | bytes | None, event: Event, **kwargs: Any) -> None:
    """Produce one event, serving delivery callbacks when the local queue is full instead of failing."""
    value = event.encode()
    kbytes = key.encode() if isinstance(key, str) else key
    while True:
        try:
            producer.produce(topic, key=kbytes, value=value, **kwargs)
            return
        except BufferError:
            producer.poll(0.05)


def send_dead_letter(producer: Producer, topic: str, letter: DeadLetter, key: bytes | None = None) -> None:
    """Produce a dead letter and count it."""
    DEAD_LETTERS.labels(service=letter.service, reason=letter.reason.split(":")[0][:60]).inc()
    log.warning("dead letter from %s: %s (%s)", letter.service, letter.reason, letter.source)
    produce_event(producer, topic, key, letter)


def broadcast(producer: Producer, topic: str, key: str, event: Event, partitions: Iterable[int]) -> None:
    """Produce ``event`` to every partition of ``topic`` (control events every partition owner must see)."""
    for partition in partitions:
        produce_event(producer, topic, key, event, partition=partition)


def partitions_of(client: Producer | Consumer, topic: str, timeout: float = 10.0) -> list[int]:
    """Partition ids of ``topic``."""
    metadata = client.list_topics(topic, timeout=timeout)
    info = metadata.topics.get(topic)
    if info is None or info.error is not None:
        raise KeyError(f"topic {topic} does not exist")
    return sorted(info.partitions)


def log_ready_on_first_assignment(logger: logging.Logger, who: str) -> Callable[[Consumer, list[TopicPartition]], None]:
    """An ``on_assign`` callback that logs "<who> ready" once, when the group first gives this member its share
    (possibly none) of the partitions: before that, a member that looks started would still miss its tasks."""
    said = False

    def on_assign(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
        nonlocal said
        if not said:
            said = True
            logger.info("%s ready with %d partitions", who, len(partitions))

    return on_assign
