"""The transactional producer's start-up through a broker outage (:class:`contracts.txn.Transactions`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from contracts.kafka import KafkaClients
from contracts.outage import KAFKA
from contracts.settings import Settings
from contracts.testing import MemoryBroker, MemoryProducer
from contracts.txn import Transactions


class SlowCoordinator(MemoryProducer):
    """A producer whose first ``timeouts`` calls of ``init_transactions`` time out, as while the broker is away."""

    timeouts = 0

    def init_transactions(self, timeout: float = -1) -> None:
        if SlowCoordinator.timeouts:
            SlowCoordinator.timeouts -= 1
            text = "Timed out waiting for operation to finish, retry call to resume"
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, text, retriable=True))
        super().init_transactions(timeout)


@pytest.fixture(autouse=True)
def _healthy_kafka() -> Iterator[None]:
    yield
    KAFKA.succeeded()  # the outage tracker is process-wide: leave it as found


def test_a_timed_out_init_is_retried_on_the_same_producer() -> None:
    """librdkafka goes on with a timed-out init in the background: a producer abandoned there would take its
    epoch once the broker is back, after the one that replaced it, and fence it."""
    broker = MemoryBroker()
    made: list[SlowCoordinator] = []

    def producer(config: dict[str, Any]) -> Producer:
        made.append(SlowCoordinator(broker, config))
        return cast(Producer, made[-1])

    SlowCoordinator.timeouts = 2
    txn = Transactions(Settings(), "t.0", clients=KafkaClients(consumer=broker.consumer, producer=producer))
    started = txn.start()
    assert len(made) == 1 and started is made[0], "one producer, its init called again until it answered"
    assert txn.commit(lambda p: p.produce("out", b"v", b"k")), "and it commits"
    assert [m.value() for m in broker.messages("out")] == [b"v"]
