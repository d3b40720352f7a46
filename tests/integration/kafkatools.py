"""Helpers for integration tests: run a worker as a real process, produce events, read a topic to a quiet end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from contracts.events import Event, decode
from contracts.kafka import partitions_of
from contracts.settings import Settings


class WorkerProcess:
    """``xcorrflow worker ...`` as a child process (so tests can kill it with -9)."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None, log: Path | None = None) -> None:
        self.args = [sys.executable, "-m", "xcorrflow", "-v", "worker", *args]
        self.env = {**os.environ, **(env or {})}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        """Start the worker."""
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        return self

    def wait_log(self, text: str, timeout: float = 60.0) -> WorkerProcess:
        """Wait until the worker's log contains ``text`` (e.g. "ready"); fail if it exits first."""
        assert self.log is not None, "wait_log needs a log file"
        log = self.log
        wait_for(lambda: text in log.read_text(errors="replace") or not self.alive(), f"worker logs {text!r}", timeout)
        assert self.alive(), f"worker exited:\n{log.read_text(errors='replace')[-3000:]}"
        return self

    def kill9(self) -> None:
        """SIGKILL: no shutdown hook runs, open transactions stay open."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.terminate()
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None


def produce(settings: Settings, topic: str, items: Sequence[tuple[str | None, Event | bytes]]) -> None:
    """Produce (key, event-or-raw-bytes) pairs like an outside client would: a plain idempotent producer."""
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "enable.idempotence": True})
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
            "bootstrap.servers": settings.bootstrap_servers,
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


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll until ``predicate()``; fail the test with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.1)
