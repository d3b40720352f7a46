"""The transactional loop of the commit broker, the pair scheduler and the stacker, on the in-memory Kafka.

Its promise: a step's state records and the offsets of the input that produced them are committed together, and
a new instance rebuilds memory from the state topic. So a crash before the commit loses the step whole and the
input is consumed again, and a restart after it consumes nothing twice.
"""

from __future__ import annotations

import pytest
from confluent_kafka import Message

from contracts.checkpoint import Output
from contracts.loop import TransactionalLoop
from contracts.settings import Settings
from contracts.testing import Crash, MemoryBroker


class Tally(TransactionalLoop):
    """Counts input records per key; the counts live in its state topic."""

    service = "tally"

    def __init__(self, broker: MemoryBroker) -> None:
        super().__init__(
            Settings(),
            group="tally",
            inputs=["in"],
            state_topic="tally-state",
            poll_timeout=0,
            clients=broker.clients(),
        )
        self.counts: dict[str, int] = {}

    def reset(self, records: list[tuple[str, bytes | None]]) -> None:
        self.counts = {key: int(value) for key, value in records if value is not None}

    def handle(self, msg: Message) -> Output:
        key = (msg.key() or b"").decode()
        self.counts[key] = self.counts.get(key, 0) + 1
        return Output(state=[(key, str(self.counts[key]).encode())])


def started(broker: MemoryBroker) -> Tally:
    tally = Tally(broker)
    tally.start()
    return tally


@pytest.fixture
def broker() -> MemoryBroker:
    broker = MemoryBroker()
    for key in (b"a", b"a", b"b"):
        broker.append("in", key, b"x")
    return broker


def test_a_committed_step_is_restored_and_not_consumed_again(broker: MemoryBroker) -> None:
    first = started(broker)
    assert first.poll_once() is True
    assert first.counts == {"a": 2, "b": 1}
    second = started(broker)
    assert second.counts == {"a": 2, "b": 1}, "memory comes back from the state topic"
    assert second.poll_once() is None, "and the input resumes after the committed offsets"


@pytest.mark.parametrize("point", ["produce", "send_offsets_to_transaction", "commit_transaction"])
def test_a_crash_before_the_commit_loses_the_step_whole(broker: MemoryBroker, point: str) -> None:
    dead = started(broker)
    broker.crash_at(point)
    with pytest.raises(Crash):
        dead.poll_once()
    assert broker.messages("tally-state") == [] and broker.committed.get("tally", {}) == {}
    restarted = started(broker)
    assert restarted.counts == {}
    assert restarted.poll_once() is True
    assert restarted.counts == {"a": 2, "b": 1}, "each input counted once"
    assert [m.value() for m in broker.messages("tally-state")] == [b"1", b"2", b"1"]
    assert broker.committed["tally"] == {("in", 0): 3}


def test_a_poll_waits_for_its_batch_only_while_there_is_no_work(broker: MemoryBroker) -> None:
    """A turn whose work did something polls without waiting; an idle one waits ``poll_timeout`` to batch."""

    class Busy(Tally):
        turns = 0

        def work(self) -> bool:
            self.turns += 1
            if self.turns == 4:
                self.stop()
            return self.turns in (1, 2)

    loop = Busy(broker)
    loop.poll_timeout = 0.25
    waits: list[float] = []
    consume = loop.checkpoint.consume

    def spy(max_messages: int, timeout: float) -> list[Message]:
        waits.append(timeout)
        return consume(max_messages, 0)

    loop.checkpoint.consume = spy  # type: ignore[method-assign]
    loop.run()
    assert waits == [0.25, 0.0, 0.0, 0.25]
    assert loop.counts == {"a": 2, "b": 1}
