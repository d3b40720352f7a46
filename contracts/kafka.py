"""Kafka client configuration and the small helpers every worker shares (dead letters, lag, broadcast).

One place decides how xcorrflow talks to Kafka: idempotent producers, the Java-compatible murmur2 partitioner
(so tools in other languages put a directory's events on the same partition), cooperative-sticky assignment,
``read_committed`` consumers, and offsets stored only after the work they cover is durable.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from contracts.events import MAX_PAYLOAD_CHARS, DeadLetter, Event
from contracts.metrics import CONSUMER_LAG, DEAD_LETTERS, KAFKA_ERRORS
from contracts.outage import KAFKA
from contracts.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

# Error codes that say "the cluster is (briefly) out of reach", whatever the operation: waiting heals them.
_UNREACHABLE = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._RESOLVE,
        KafkaError._TIMED_OUT,
        KafkaError._MSG_TIMED_OUT,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError._WAIT_COORD,
    }
)
# librdkafka log facilities that only narrate a connection coming and going; the outage tracker says it once.
_CONNECTIVITY_LOGS = frozenset(
    {"FAIL", "REQTMOUT", "SESSTMOUT", "GETPID", "TXNERR", "FATAL", "HEARTBEAT", "COMMITFAIL"}
)
_REPEAT_WINDOW_S = 60.0


def connection_config(kafka: Settings | str) -> dict[str, Any]:
    """The librdkafka properties that reach and authenticate to the cluster: the one mapping of the settings'
    bootstrap servers and :class:`~contracts.settings.KafkaConnection` block; every client starts from it.

    Args:
        kafka: the settings, or a bare bootstrap string for a plaintext cluster (tests, the local stack).

    Returns:
        ``bootstrap.servers`` and, off plaintext, ``security.protocol`` with the ``sasl.*`` and ``ssl.*``
        properties that are set. It holds the password in clear, as librdkafka needs it: never log it.
    """
    if isinstance(kafka, str):
        return {"bootstrap.servers": kafka}
    conn = kafka.kafka_connection
    config: dict[str, Any] = {"bootstrap.servers": kafka.bootstrap_servers}
    if conn.security_protocol == "plaintext":
        return config
    optional = {
        "sasl.mechanism": conn.sasl_mechanism,
        "sasl.username": conn.sasl_username,
        "sasl.password": conn.sasl_password.get_secret_value() if conn.sasl_password else None,
        "ssl.ca.location": conn.ssl_ca_file,
        "ssl.certificate.location": conn.ssl_cert_file,
        "ssl.key.location": conn.ssl_key_file,
        "ssl.key.password": conn.ssl_key_password.get_secret_value() if conn.ssl_key_password else None,
    }
    config["security.protocol"] = conn.security_protocol
    config.update({name: str(value) for name, value in optional.items() if value is not None})
    return config


def producer_config(settings: Settings, *, transactional_id: str | None = None, **extra: Any) -> dict[str, Any]:
    """Configuration of an idempotent (optionally transactional) producer tuned for low latency.

    Args:
        settings: supplies the connection (:func:`connection_config`).
        transactional_id: makes the producer transactional (consume-transform-produce).
        **extra: librdkafka properties that win over the defaults.
    """
    config: dict[str, Any] = {
        **connection_config(settings),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,  # events are small and latency matters more than batching
        "compression.type": "lz4",
        "partitioner": "murmur2_random",  # the Java client's partitioner: same key, same partition, any tool
        "error_cb": _error_cb,
        "logger": LIBRDKAFKA_LOG,
    }
    if transactional_id:
        config["transactional.id"] = transactional_id
        config["transaction.timeout.ms"] = 60000
    config.update(extra)
    return config


def group_name(base: str, topic_prefix: str) -> str:
    """Consumer group of a stage: ``base`` for the default topics, ``<prefix>.<base>`` for prefixed ones."""
    return f"{topic_prefix}.{base}" if topic_prefix else base


def consumer_config(
    settings: Settings, group: str, *, transactional: bool = False, service: str = "", **extra: Any
) -> dict[str, Any]:
    """Configuration of a group consumer.

    Args:
        settings: supplies the connection (:func:`connection_config`).
        group: consumer group id.
        transactional: offsets are committed by a producer transaction (no auto commit at all); otherwise they
            are auto-committed, but only after the worker stored them, i.e. after the work is durable.
        service: label of the lag metric.
        **extra: librdkafka properties that win over the defaults.
    """
    config: dict[str, Any] = {
        **connection_config(settings),
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
        "logger": LIBRDKAFKA_LOG,
    }
    config.update(extra)
    return config


def client_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """Configuration of a plain client (admin, metadata, a run's monitor): bootstrap, outage-aware logging.

    Args:
        settings: supplies the connection (:func:`connection_config`).
        **extra: librdkafka properties that win over the defaults.
    """
    return {
        **connection_config(settings),
        "error_cb": _error_cb,
        "logger": LIBRDKAFKA_LOG,
        **extra,
    }


@dataclass(frozen=True)
class KafkaClients:
    """How a service makes its Kafka clients from their configs: the real ones, or the in-memory doubles of
    :mod:`contracts.testing` (``MemoryBroker.clients()``) in unit tests of its loop."""

    consumer: Callable[[dict[str, Any]], Consumer] = Consumer
    producer: Callable[[dict[str, Any]], Producer] = Producer


REAL_CLIENTS = KafkaClients()


def configure_kafka_outage(settings: Settings) -> None:
    """Point this process's outage trackers at the settings' Kafka and S3, with their limits."""
    from contracts.outage import configure_outages

    faults = settings.faults
    configure_outages(settings.bootstrap_servers, faults.kafka_outage_s, settings.s3_url, faults.s3_outage_s)


def _error_cb(err: KafkaError) -> None:
    KAFKA_ERRORS.labels(service="client").inc()
    if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE):
        KAFKA.failed(err.str(), soft=True)
    elif err.fatal():
        log.error("fatal Kafka error: %s", err)
    else:
        log.debug("Kafka error (librdkafka retries): %s", err)


class _LibrdkafkaLog:
    """Where librdkafka's own log lines go (its ``logger`` property): Python logging, without the flood.

    During a broker outage every client prints a "Connection refused" line per broker per retry, hundreds per
    minute. Those lines feed the outage tracker (which logs once per state change) and go to DEBUG; any other
    line is logged at its level once per minute per facility and text.
    """

    def __init__(self) -> None:
        self._log = logging.getLogger("xcorrflow.librdkafka")
        self._seen: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def log(self, level: int, _fmt: str, *args: Any, **_kwargs: Any) -> None:
        """Called by librdkafka with (level, "%s [%s] %s", facility, client name, text)."""
        facility, client, text = (str(a) for a in (*args, "", "", "")[:3])
        connectivity = facility in _CONNECTIVITY_LOGS or "Connection refused" in text or "Disconnected" in text
        if connectivity or self._repeated(facility, text):
            level = logging.DEBUG
        self._log.log(level, "librdkafka %s %s: %s", facility, client, text)

    def _repeated(self, facility: str, text: str) -> bool:
        now, key = time.monotonic(), (facility, text[:80])
        with self._lock:
            last = self._seen.get(key)
            if last is not None and now - last < _REPEAT_WINDOW_S:
                return True
            if len(self._seen) > 1000:
                self._seen.clear()
            self._seen[key] = now
        return False


LIBRDKAFKA_LOG = _LibrdkafkaLog()


class _Probe:
    """Rate-limited metadata requests: they tell when Kafka is back, and notice an outage no call has hit yet
    (an idle consumer just waits, and librdkafka's own "all brokers down" report is easily missed)."""

    def __init__(self, while_down_s: float = 1.0, while_up_s: float = 5.0) -> None:
        self.while_down_s, self.while_up_s = while_down_s, while_up_s
        self._last = 0.0

    def __call__(self, client: Producer | Consumer) -> None:
        interval = self.while_down_s if KAFKA.down else self.while_up_s
        if time.monotonic() - self._last < interval:
            return
        self._last = time.monotonic()
        try:
            client.list_topics(timeout=1.0)
        except KafkaException as exc:
            KAFKA.failed(exc.args[0].str() if exc.args else str(exc))
            KAFKA.check()
            return
        KAFKA.succeeded()


watch_kafka = _Probe()
"""Call between polls: probes Kafka (every second during an outage, every 5 s otherwise) and raises
:class:`~contracts.outage.DependencyUnavailable` past ``faults.kafka_outage_s``."""


def unreachable(exc: BaseException) -> bool:
    """True for Kafka errors that waiting for the cluster heals (not fatal, not a refusal)."""
    if not isinstance(exc, KafkaException) or not exc.args or not isinstance(exc.args[0], KafkaError):
        return False
    error: KafkaError = exc.args[0]
    return not error.fatal() and (error.retriable() or error.code() in _UNREACHABLE)


def with_kafka(what: str, call: Callable[[], T]) -> T:
    """Run a Kafka call, retrying it while the cluster is unreachable, up to ``faults.kafka_outage_s``.

    Args:
        what: what the call does, for the logs.
        call: the call; it must be safe to repeat (metadata, init_transactions, flush, commit...).

    Returns:
        What ``call`` returned.

    Raises:
        DependencyUnavailable: the cluster stayed away longer than the limit.
        KafkaException: a non-transient error, unchanged.
    """
    while True:
        try:
            result = call()
        except KafkaException as exc:
            if not unreachable(exc):
                raise
            log.debug("%s: Kafka unreachable (%s); retrying", what, exc)
            KAFKA.failed(exc.args[0].str())
            KAFKA.pause()
            continue
        KAFKA.succeeded()
        return result


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


def count_dead_letter(letter: DeadLetter) -> None:
    """Count a dead letter by service and reason class (the text before the first colon) and log it."""
    DEAD_LETTERS.labels(service=letter.service, reason=letter.reason.split(":")[0][:60]).inc()
    log.warning("dead letter from %s: %s (%s)", letter.service, letter.reason, letter.source)


def dead_letter(msg: Message, service: str, topic: str, reason: str, source: str = "") -> tuple[str, str, DeadLetter]:
    """The dead letter of ``msg`` as an output event for ``topic``, keyed like ``msg``, counted and logged."""
    letter = dead_letter_for(msg, service, reason, source=source)
    count_dead_letter(letter)
    return topic, (msg.key() or b"").decode(errors="replace"), letter


def broadcast(producer: Producer, topic: str, key: str, event: Event, partitions: Iterable[int]) -> None:
    """Produce ``event`` to every partition of ``topic`` (control events every partition owner must see)."""
    for partition in partitions:
        produce_event(producer, topic, key, event, partition=partition)


def flush_through_outage(producer: Producer, what: str) -> None:
    """Wait until everything ``producer`` queued is acknowledged (or failed), through a broker outage.

    Raises:
        DependencyUnavailable: the broker stayed away longer than ``faults.kafka_outage_s``.
    """
    while producer.flush(5) > 0:
        KAFKA.failed(f"{what} not acknowledged within 5 s")
        KAFKA.check()
    KAFKA.succeeded()


def partitions_of(client: Producer | Consumer, topic: str, timeout: float = 10.0) -> list[int]:
    """Partition ids of ``topic``, waiting through a broker outage (see :func:`with_kafka`).

    Raises:
        KeyError: the topic does not exist.
        DependencyUnavailable: the cluster stayed away longer than ``faults.kafka_outage_s``.
    """
    metadata = with_kafka(f"metadata of {topic}", lambda: client.list_topics(topic, timeout=timeout))
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
