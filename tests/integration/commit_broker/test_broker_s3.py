"""Producers that only write objects: S3 bucket notifications, and the listing that covers lost ones, drive
directory commits."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from contracts.events import DirectoryCommitted, Event, FileReady
from contracts.settings import Settings, TopicNames
from storage import S3Store
from tests.integration.kafkatools import WorkerProcess, read_events

RULES = 'rules:\n  - {match: "prep/*/", commit: n_files, n_files: 3, fire: no_update}\n'


@pytest.fixture
def store(stack: Settings, unique: str) -> Iterator[S3Store]:
    s3 = S3Store.from_settings(stack)
    yield s3
    for info in list(s3.list(f"{unique}/")):
        s3.delete(info.key)


@pytest.fixture
def start_broker(stack: Settings, topics: TopicNames, unique: str, tmp_path: Path) -> Iterator[Callable[..., None]]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    workers: list[WorkerProcess] = []

    def start(*extra: str, notifications: bool) -> None:
        args = ["broker", "--rules", str(rules), "--topic-prefix", unique, "--namespace", unique, *extra]
        env = {"XCORRFLOW_S3_NOTIFICATIONS": str(notifications).lower()}
        log = tmp_path / f"broker{len(workers)}.log"
        workers.append(WorkerProcess(args, env, log=log).start().wait_log("ready"))

    yield start
    for w in workers:
        w.stop()


def _commits(events: list[Event]) -> list[DirectoryCommitted]:
    return [e for e in events if isinstance(e, DirectoryCommitted)]


def _write_window(store: S3Store, unique: str, window: str) -> list[str]:
    keys = [f"{unique}/prep/{window}/XX.S{i}..HHZ.npz" for i in range(3)]
    for key in keys:
        store.put(key, b"product " + key.encode())
    return keys


def test_bucket_notifications_drive_commits(
    stack: Settings, topics: TopicNames, unique: str, store: S3Store, start_broker: Callable[..., None]
) -> None:
    if not stack.s3_notifications:
        pytest.skip("the stack runs without bucket notifications (XCORRFLOW_S3_NOTIFICATIONS=false)")
    start_broker("--no-reconcile", notifications=True)
    keys = _write_window(store, unique, "20200101T000000Z")
    events = read_events(stack, topics.commits, until=lambda ev: len(_commits(ev)) >= 1, timeout=60)
    (commit,) = _commits(events)
    assert sorted(commit.files) == keys
    assert sorted(e.key for e in events if isinstance(e, FileReady)) == keys


def test_listing_reconciles_lost_notifications(
    stack: Settings, topics: TopicNames, unique: str, store: S3Store, start_broker: Callable[..., None]
) -> None:
    keys = _write_window(store, unique, "20200101T010000Z")  # written before the broker listens at all
    start_broker("--reconcile-interval", "1", notifications=False)
    events = read_events(stack, topics.commits, until=lambda ev: len(_commits(ev)) >= 1, timeout=60)
    (commit,) = _commits(events)
    assert sorted(commit.files) == keys
