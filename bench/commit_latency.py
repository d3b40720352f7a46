"""Commit latency of the broker on one 130-station window (``python -m bench.commit_latency``).

A real broker process (the ``xcorrflow worker broker`` command) receives DirectoryExpected(130) and then 130
FileCommitted events, produced the way preprocess workers do (one by one, each flushed), at a fixed pace.
Measured, on the commits topic read with read_committed:

* last FileCommitted produced → DirectoryCommitted visible: what CnF adds after the last file;
* each FileCommitted produced → its FileReady visible: the per-file latency that streaming mode pays;
* first file → commit, as the broker's own histogram reports it.

Writes ``bench/results/commit_latency.json``.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from contracts.events import DirectoryCommitted, DirectoryExpected, FileCommitted, FileReady, decode
from contracts.kafka import connection_config, partitions_of, producer_config
from contracts.settings import Settings
from contracts.topics import delete_topics, ensure_topics, topic_specs
from xcorrflow.orchestration.fleet import WorkerProcess

STATIONS = 130
PACE_S = 0.02  # one product every 20 ms: a fast preprocessing stage
RESULTS = Path(__file__).parent / "results" / "commit_latency.json"


def measure(settings: Settings, rounds: int = 3) -> dict[str, object]:
    """Run ``rounds`` windows through a fresh broker and summarise the latencies."""
    prefix = f"bench-commit-{uuid.uuid4().hex[:6]}"
    topics = settings.topics.with_prefix(prefix)
    ensure_topics(settings.bootstrap_servers, topic_specs(settings, topics))
    log = Path(tempfile.mkdtemp()) / "broker.log"
    broker = (
        WorkerProcess(
            ["broker", "--no-reconcile", "--topic-prefix", prefix], log=log, env={"XCORRFLOW_S3_NOTIFICATIONS": "false"}
        )
        .start()
        .wait_log("ready")
    )
    try:
        runs = [_one_window(settings, topics.files, topics.commits, f"prep/2030010{i}T000000Z/") for i in range(rounds)]
    finally:
        broker.stop()
        delete_topics(settings.bootstrap_servers, [t for t in topics.model_dump().values() if t.startswith(prefix)])
    ready = [x for r in runs for x in r["ready_latency_s"]]
    return {
        "stations": STATIONS,
        "pace_s": PACE_S,
        "rounds": rounds,
        "last_file_to_commit_s": [round(r["last_file_to_commit_s"], 4) for r in runs],
        "last_file_to_commit_median_s": round(statistics.median(r["last_file_to_commit_s"] for r in runs), 4),
        "first_file_to_commit_s": [round(r["first_file_to_commit_s"], 4) for r in runs],
        "file_ready_latency_median_s": round(statistics.median(ready), 4),
        "file_ready_latency_p95_s": round(sorted(ready)[int(0.95 * len(ready))], 4),
    }


def _one_window(settings: Settings, files: str, commits: str, directory: str) -> dict[str, Any]:
    producer = Producer(producer_config(settings))
    reader = Consumer(
        {
            **connection_config(settings),
            "group.id": f"r-{uuid.uuid4().hex}",
            "isolation.level": "read_committed",
            "fetch.wait.max.ms": 500,
        }
    )
    reader.assign([TopicPartition(commits, p, OFFSET_BEGINNING) for p in partitions_of(reader, commits)])
    warm = time.perf_counter() + 1.0  # let the reader join and start fetching before the clock runs
    while time.perf_counter() < warm:
        reader.consume(100, 0.1)
    sent: dict[str, float] = {}
    ready: dict[str, float] = {}
    committed_at = 0.0
    producer.produce(
        files, key=directory.encode(), value=DirectoryExpected(directory=directory, n_files=STATIONS).encode()
    )
    producer.flush()
    for i in range(STATIONS):
        key = f"{directory}XB.S{i:03d}..HHZ.npz"
        producer.produce(
            files,
            key=directory.encode(),
            value=FileCommitted(directory=directory, key=key, size=1, producer="bench").encode(),
        )
        producer.flush()
        sent[key] = time.perf_counter()
        committed_at = _drain(reader, directory, ready) or committed_at
        time.sleep(PACE_S)
    deadline = time.perf_counter() + 30
    while not committed_at and time.perf_counter() < deadline:
        committed_at = _drain(reader, directory, ready) or committed_at
    while len(ready) < STATIONS and time.perf_counter() < deadline:
        _drain(reader, directory, ready)
    reader.close()
    return {
        "last_file_to_commit_s": committed_at - max(sent.values()),
        "first_file_to_commit_s": committed_at - min(sent.values()),
        "ready_latency_s": [ready[k] - sent[k] for k in sent if k in ready],
    }


def _drain(reader: Consumer, directory: str, ready: dict[str, float]) -> float:
    """Consume what is there; returns the time the directory's commit was seen (0 if not yet)."""
    seen = 0.0
    for msg in reader.consume(500, 0.005):
        if msg.error():
            continue
        event = decode(msg.value())
        now = time.perf_counter()
        if isinstance(event, FileReady) and event.directory == directory:
            ready.setdefault(event.key, now)
        elif isinstance(event, DirectoryCommitted) and event.directory == directory:
            seen = now
    return seen


def main() -> None:
    """Measure and write the results file."""
    result = measure(Settings())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
