"""The commit broker on the real Kafka: CnF exactly once, kill -9 and restart, deadlines, on_termination,
on_file and dead letters. Events are produced like an outside client would, with a plain producer."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from contracts.events import (
    DeadLetter,
    DirectoryCommitted,
    DirectoryExpected,
    Event,
    FileCommitted,
    FileReady,
    ProducerFinished,
    ProducerStarted,
)
from contracts.kafka import connection_config, partitions_of
from contracts.settings import Settings, TopicNames
from tests.integration.kafkatools import WorkerProcess, produce, read_events, wait_for

RULES = """
rules:
  - match: "prep/*/"
    commit: n_files
    n_files: expected
    fire: no_update
  - match: "slow/*/"
    commit: n_files
    n_files: expected
    fire: no_update
    deadline: 3s
  - match: "ccf/*/"
    commit: on_termination
    fire: update
  - match: "final/"
    commit: on_file
    on_file: ["prep/w1/"]
"""


@pytest.fixture
def broker(stack: Settings, topics: TopicNames, unique: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    args = ["broker", "--rules", str(rules), "--topic-prefix", unique, "--no-reconcile"]
    env = {"XCORRFLOW_S3_NOTIFICATIONS": "false"}
    workers: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        worker = WorkerProcess(args, env, log=tmp_path / "broker.log").start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


def fc(directory: str, name: str, producer: str = "outside") -> tuple[str, FileCommitted]:
    return directory, FileCommitted(directory=directory, key=f"{directory}{name}", size=10, producer=producer)


def _commits(events: list[Event]) -> list[DirectoryCommitted]:
    return [e for e in events if isinstance(e, DirectoryCommitted)]


def _ready(events: list[Event]) -> list[str]:
    return [e.key for e in events if isinstance(e, FileReady)]


def test_outside_client_cnf_exactly_once(stack: Settings, topics: TopicNames, broker) -> None:  # type: ignore[no-untyped-def]
    broker()
    d = "prep/w2/"
    files = [fc(d, f"XX.S{i}..HHZ.npz") for i in range(5)]
    stream = [*files, files[0], files[3]]
    random.Random(7).shuffle(stream)
    produce(stack, topics.files, [(d, DirectoryExpected(directory=d, n_files=5)), *stream])
    events = read_events(stack, topics.commits, until=lambda ev: len(_commits(ev)) >= 1)
    commits = _commits(events)
    assert len(commits) == 1
    assert sorted(commits[0].files) == sorted(f.key for _, f in files) and not commits[0].partial
    assert Counter(_ready(events)) == Counter(f.key for _, f in files), "five FileReady, one per distinct key"
    assert isinstance(events[-1], DirectoryCommitted), "FileReady events precede the commit on the partition"


@pytest.mark.parametrize("wait_before_kill", [True, False], ids=["between-files", "mid-transaction"])
def test_kill_9_and_restart_commits_exactly_once(
    stack: Settings, topics: TopicNames, broker, wait_before_kill: bool
) -> None:  # type: ignore[no-untyped-def]
    first = broker()
    d = "prep/w2/"
    files = [fc(d, f"XX.S{i}..HHZ.npz") for i in range(5)]
    produce(stack, topics.files, [(d, DirectoryExpected(directory=d, n_files=5)), *files[:3], files[1]])
    if wait_before_kill:
        read_events(stack, topics.commits, until=lambda ev: len(_ready(ev)) >= 3, settle=0)
    first.kill9()
    produce(stack, topics.files, [files[3], files[0], files[4]])
    broker()
    events = read_events(stack, topics.commits, until=lambda ev: len(_commits(ev)) >= 1, settle=4.0)
    assert len(_commits(events)) == 1
    assert sorted(_commits(events)[0].files) == sorted(f.key for _, f in files)
    assert Counter(_ready(events)) == Counter(f.key for _, f in files), "no FileReady lost or duplicated"


def test_messages_that_change_nothing_still_get_their_offsets_committed(
    stack: Settings, topics: TopicNames, broker
) -> None:  # type: ignore[no-untyped-def]
    """Duplicates produce nothing, so they get no transaction of their own; their offsets follow within a tick."""
    first = broker()
    d = "prep/w2/"
    files = [fc(d, f"XX.S{i}..HHZ.npz") for i in range(2)]
    produce(stack, topics.files, [(d, DirectoryExpected(directory=d, n_files=2)), *files])
    read_events(stack, topics.commits, until=lambda ev: len(_commits(ev)) >= 1, settle=0)
    produce(stack, topics.files, [files[0], files[1]] * 20)
    group = Consumer({**connection_config(stack), "group.id": f"xcorrflow-broker.{topics.files}"})
    try:
        parts = [TopicPartition(topics.files, p) for p in partitions_of(group, topics.files)]
        ends = {tp.partition: group.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}

        def caught_up() -> bool:
            # a partition nothing was written to has no committed offset
            committed = {tp.partition: max(tp.offset, 0) for tp in group.committed(parts, timeout=10)}
            return committed == ends

        wait_for(caught_up, "the broker committed the duplicates' offsets", timeout=15)
    finally:
        group.close()
    first.kill9()
    broker()  # a restart from those offsets replays nothing and repeats nothing
    events = read_events(stack, topics.commits, until=lambda ev: len(_commits(ev)) >= 1, settle=3.0)
    assert len(_commits(events)) == 1 and Counter(_ready(events)) == Counter(f.key for _, f in files)


def test_deadline_commits_partial(stack: Settings, topics: TopicNames, broker) -> None:  # type: ignore[no-untyped-def]
    broker()
    d = "slow/w1/"
    produce(stack, topics.files, [(d, DirectoryExpected(directory=d, n_files=4)), fc(d, "a"), fc(d, "b")])
    events = read_events(stack, topics.commits, until=lambda ev: len(_commits(ev)) >= 1, timeout=30)
    (commit,) = _commits(events)
    assert commit.partial and sorted(commit.files) == [f"{d}a", f"{d}b"]


def test_on_termination_after_last_producer_finished(stack: Settings, topics: TopicNames, broker) -> None:  # type: ignore[no-untyped-def]
    broker()
    d = "ccf/w1/"
    parts = range(stack.partitions.files)
    # ProducerStarted/Finished are broadcast to every partition, as xcorrflow's producers do.
    started = [(None, ProducerStarted(producer=p)) for p in ("c1", "c2")]
    produce(stack, topics.files, [*started, fc(d, "A__B.npz", "c1"), fc(d, "A__C.npz", "c2")])
    _broadcast(stack, topics.files, ProducerFinished(producer="c1"), parts)
    early = read_events(stack, topics.commits, until=lambda ev: False, timeout=3, settle=0)
    assert not _commits(early) and not _ready(early), "fire=update: nothing before every producer finished"
    _broadcast(stack, topics.files, ProducerFinished(producer="c2"), parts)
    events = read_events(stack, topics.commits, until=lambda ev: len(_commits(ev)) >= 1)
    (commit,) = _commits(events)
    assert commit.rule == "on_termination" and sorted(commit.files) == [f"{d}A__B.npz", f"{d}A__C.npz"]


def test_on_file_follows_its_dependency(stack: Settings, topics: TopicNames, broker) -> None:  # type: ignore[no-untyped-def]
    broker()
    d = "prep/w1/"
    produce(stack, topics.files, [(d, DirectoryExpected(directory=d, n_files=2)), fc(d, "a")])
    early = read_events(stack, topics.commits, until=lambda ev: len(_ready(ev)) >= 1)
    assert not _commits(early)
    produce(stack, topics.files, [fc(d, "b")])
    events = read_events(stack, topics.commits, until=lambda ev: len(_commits(ev)) >= 2)
    assert [c.directory for c in _commits(events)] == [d, "final/"]


def test_malformed_messages_go_to_the_dlq_and_the_broker_carries_on(
    stack: Settings, topics: TopicNames, broker
) -> None:  # type: ignore[no-untyped-def]
    worker = broker()
    d = "prep/w9/"
    produce(
        stack,
        topics.files,
        [
            (d, b"not json"),
            (d, b'{"type": "FileCommitted", "schema": 1}'),
            fc("nowhere/x/", "a"),
            (d, DirectoryExpected(directory=d, n_files=1)),
            fc(d, "ok"),
        ],
    )
    letters = read_events(stack, topics.dlq, until=lambda ev: len(ev) >= 3)
    assert all(isinstance(e, DeadLetter) for e in letters) and len(letters) == 3
    reasons = " | ".join(e.reason for e in letters if isinstance(e, DeadLetter))
    assert "not JSON" in reasons and "FileCommitted.directory" in reasons and "no rule matches" in reasons
    assert all(e.source_topic == topics.files and e.source_offset >= 0 for e in letters if isinstance(e, DeadLetter))
    events = read_events(stack, topics.commits, until=lambda ev: len(_commits(ev)) >= 1)
    assert _commits(events)[0].files == [f"{d}ok"]
    assert worker.alive()


def _broadcast(stack: Settings, topic: str, event: Event, partitions: range) -> None:
    from confluent_kafka import Producer

    producer = Producer(connection_config(stack))
    for p in partitions:
        producer.produce(topic, value=event.encode(), partition=p)
    assert producer.flush(30) == 0
