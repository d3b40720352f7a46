"""``xcorrflow run --mode streaming|cnf|barrier``: one run of the Kafka pipeline on the running stack.

A run gets its own topics (prefix ``<run id>.``) and its own key namespace (``<run id>/``), starts the
workers as processes (commit broker, pair scheduler, P preprocessors, C correlators), waits until they are
ready, then starts the clock and ingests the input. It follows the commits, results and dead-letter topics
until every pair of every window is correlated, exports the SAC stacks from the CCF objects, writes
report.json (also to ``runs/<run id>/`` in the bucket) and stops the workers.

The clock starts at ingest, with the workers already deployed, as the paper compares fixed resources with
and without the I/O boundary; worker start-up (Python imports, group joins) is reported separately.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from commit_broker.rules import DEFAULT_RULES
from contracts.events import (
    DeadLetter,
    DirectoryCommitted,
    DirectoryExpected,
    EventDecodeError,
    FileReady,
    PairCorrelated,
    RawFileArrived,
    decode,
)
from contracts.kafka import partitions_of, produce_event, producer_config
from contracts.settings import Settings, TopicNames
from contracts.topics import ensure_topics, topic_specs
from producers.ingest import Ingestor, IngestReport
from producers.inventory import Inventory, scan_folder
from storage import ObjectStore, open_store
from xcorrflow.collector import StackCollector
from xcorrflow.errors import CommandError
from xcorrflow.fleet import Fleet, WorkerProcess
from xcorrflow.progress import Progress
from xcorrflow.report import Report


class RunFailed(CommandError):
    """The pipeline run could not complete."""


@dataclass(frozen=True)
class RunOptions:
    """How to run the pipeline."""

    mode: str = "streaming"
    preprocess_workers: int = 1
    correlate_workers: int = 1
    spread_s: float = 0.0
    shuffle_seed: int | None = None
    timeout_s: float = 3600.0
    run_id: str = ""
    correlator_threads: int = 1
    # Correlators and the stack writer yield the CPU to preprocessing: on a machine with fewer cores than
    # stages, the long stage must keep its pace while the short one fills the gaps (no effect in barrier mode,
    # where the stages never overlap).
    downstream_nice: int = 10
    cleanup: bool = False  # delete the run's objects and topics once the output folder is written


@dataclass
class RunState:
    """What the run monitor has seen on the commits, results and dead-letter topics."""

    expected: dict[str, int] = field(default_factory=dict)  # window -> stations announced
    ready: dict[str, set[str]] = field(default_factory=dict)  # window -> stations with FileReady
    committed: set[str] = field(default_factory=set)  # windows
    pairs: set[tuple[str, str, str]] = field(default_factory=set)  # (window, a, b), incl. skipped
    skipped: list[dict[str, str]] = field(default_factory=list)
    skipped_pairs: dict[str, int] = field(default_factory=dict)  # pair key -> windows skipped
    planned: dict[str, set[str]] = field(default_factory=dict)  # station -> windows it is ingested in
    failed: set[tuple[str, str]] = field(default_factory=set)  # (window, station) that failed to preprocess
    dead_letters: list[DeadLetter] = field(default_factory=list)
    first_result_at: float | None = None
    first_ready_at: float | None = None
    last_ready_at: float | None = None
    last_pair_at: float | None = None
    timeline: list[float] = field(default_factory=list)  # wall time of each correlated pair

    def windows_of_pair(self, key: str) -> int:
        """Windows in which a pair ``A__B`` will have a CCF: both stations were ingested there and neither
        failed to preprocess, minus the windows where the pair was skipped. Known from the start, so a pair's
        stack can be written the moment its last window is in, long before the last station arrives."""
        a, _, b = key.partition("__")
        both = self.planned.get(a, set()) & self.planned.get(b, set())
        lost = sum(1 for w in both if (w, a) in self.failed or (w, b) in self.failed)
        return len(both) - lost - self.skipped_pairs.get(key, 0)

    def pairs_expected(self) -> int:
        """Pairs among the stations ready so far."""
        return sum(len(s) * (len(s) - 1) // 2 for s in self.ready.values())

    def done(self, windows: list[str]) -> bool:
        """Every window committed and every pair of its ready stations correlated (or skipped with a reason)."""
        return all(w in self.committed for w in windows) and len(self.pairs) >= self.pairs_expected()


class RunMonitor:
    """Follows a run's output topics (read_committed) and keeps a :class:`RunState`."""

    def __init__(
        self, settings: Settings, topics: TopicNames, namespace: str, on_result: Callable[[str], None] | None = None
    ) -> None:
        self.topics = topics
        self.namespace = namespace
        self.on_result = on_result  # called with the CCF object key of each correlated pair
        self.state = RunState()
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.bootstrap_servers,
                "group.id": f"{topics.commits}.monitor",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 500,
            }
        )
        wanted = [topics.commits, topics.results, topics.dlq]
        self.consumer.assign([TopicPartition(t, p, 0) for t in wanted for p in partitions_of(self.consumer, t)])

    def poll(self, timeout: float = 0.1) -> list[DeadLetter]:
        """Consume what is there; returns the new preprocess dead letters (their windows lose a station)."""
        lost = []
        for msg in self.consumer.consume(1000, timeout):
            if msg.error():
                continue
            try:
                event = decode(msg.value())
            except EventDecodeError:
                continue
            if isinstance(event, DeadLetter):
                self.state.dead_letters.append(event)
                if event.service == "preprocess":
                    lost.append(event)
            else:
                self._apply(event)
        return lost

    def _apply(self, event: object) -> None:
        s, now = self.state, time.time()
        if isinstance(event, FileReady):
            window = event.directory.rstrip("/").rsplit("/", 1)[-1]
            station = event.key.rsplit("/", 1)[-1].rsplit(".", 1)[0]
            s.ready.setdefault(window, set()).add(station)
            s.first_ready_at = s.first_ready_at or _ts(event.ready_at, now)
            s.last_ready_at = _ts(event.ready_at, now)
        elif isinstance(event, DirectoryCommitted):
            s.committed.add(event.directory.rstrip("/").rsplit("/", 1)[-1])
        elif isinstance(event, PairCorrelated):
            s.pairs.add((event.window, event.a, event.b))
            if event.skipped:
                key = f"{event.a}__{event.b}"
                s.skipped.append({"window": event.window, "item": key, "reason": event.skipped})
                s.skipped_pairs[key] = s.skipped_pairs.get(key, 0) + 1
                return
            if self.on_result is not None:
                self.on_result(event.key)
            at = _ts(event.correlated_at, now)
            s.first_result_at = min(s.first_result_at or at, at)
            s.last_pair_at = max(s.last_pair_at or at, at)
            s.timeline.append(at)

    def close(self) -> None:
        """Leave (nothing is committed: the monitor always reads from the start)."""
        self.consumer.close()


def _ts(iso: str, default: float) -> float:
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return default


def start_workers(
    settings: Settings, topics_prefix: str, namespace: str, options: RunOptions, windows: int, logs: Path
) -> Fleet:
    """Start broker, scheduler, P preprocessors and C correlators for one run, and wait until all are ready."""
    fleet = Fleet()
    rules = logs / "rules.yaml"
    rules.parent.mkdir(parents=True, exist_ok=True)
    rules.write_text(DEFAULT_RULES)
    common = ["--topic-prefix", topics_prefix, "--namespace", namespace]
    fleet.add(WorkerProcess(["broker", "--rules", str(rules), "--no-reconcile", *common], log=logs / "broker.log"))
    sched = ["schedule", "--mode", options.mode, *common] + (
        ["--windows", str(windows)] if options.mode == "barrier" else []
    )
    fleet.add(WorkerProcess(sched, log=logs / "scheduler.log"))
    fleet.add(WorkerProcess(["latency", *common], log=logs / "latency.log"))  # station latency metric
    for i in range(options.preprocess_workers):
        fleet.add(WorkerProcess(["preprocess", *common], log=logs / f"preprocess-{i}.log"))
    for i in range(options.correlate_workers):
        args = [
            "correlate",
            "--worker-id",
            f"{topics_prefix}-{i}",
            "--threads",
            str(options.correlator_threads),
            "--nice",
            str(options.downstream_nice),
        ]
        fleet.add(WorkerProcess([*args, *common], log=logs / f"correlate-{i}.log"))
    fleet.wait_ready()
    return fleet


def run_pipeline(
    input_dir: Path, output_dir: Path, settings: Settings, progress: Progress | None, options: RunOptions
) -> Report:
    """Run the pipeline in ``options.mode`` on ``input_dir`` and export to ``output_dir``.

    Raises:
        RunFailed: a worker died, or the run did not finish within ``options.timeout_s``.
    """
    run_id = options.run_id or f"run-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    namespace = f"{run_id}/"
    topics = settings.topics.with_prefix(run_id)
    t_setup = time.perf_counter()
    ensure_topics(settings.bootstrap_servers, topic_specs(settings, topics), replication=settings.kafka_replication)
    inventory = scan_folder(input_dir, settings.processing)
    windows = inventory.windows()
    store = open_store(settings)
    fleet = start_workers(settings, run_id, run_id, options, len(windows), output_dir / "logs")
    setup_s = time.perf_counter() - t_setup
    collector = StackCollector(
        store.scoped(namespace),
        settings.processing,
        output_dir,
        inventory.seed_ids(),
        inventory.coordinates_of,
        nice=options.downstream_nice,
    )
    monitor = RunMonitor(settings, topics, namespace, on_result=lambda key: collector.offer(key[len(namespace) :]))
    try:
        run = _Run(settings.model_copy(update={"namespace": run_id}), topics, store, inventory, windows, options)
        report = run.drive(fleet, monitor, progress, collector)
        t_export = time.perf_counter()
        pairs = collector.finish()
        report.timings_s["export_tail"] = round(time.perf_counter() - t_export, 6)
        report.makespan_s = round(time.time() - run.t0, 6)  # ingest start → stacks on disk
        report.started_at = run.t0
    finally:
        monitor.close()
        peak_rss, cpu = fleet.peak_rss_mb(), fleet.cpu_s()
        fleet.stop()
    report.pairs = pairs
    report.timings_s["setup"] = round(setup_s, 6)
    report.outputs = {
        "stacks": str(output_dir),
        "run_id": run_id,
        "namespace": namespace,
        "topic_prefix": run_id,
        "logs": str(output_dir / "logs"),
        "peak_rss_mb": peak_rss,
        "cpu_s": cpu,
    }
    report.config = {**settings.public_dump(), "run": options.__dict__}
    if options.cleanup:
        from xcorrflow.runs import delete_run

        delete_run(settings, store, run_id)
        report.outputs["cleaned_up"] = True
        return report
    store.put(f"runs/{run_id}/report.json", json.dumps(report.to_dict(), default=str).encode())
    store.put(f"runs/{run_id}/config.json", json.dumps(report.config, default=str).encode())
    return report


class _Run:
    """One run's ingest and its progress until every pair is done."""

    def __init__(
        self,
        settings: Settings,
        topics: TopicNames,
        store: ObjectStore,
        inventory: Inventory,
        windows: list[str],
        options: RunOptions,
    ) -> None:
        self.settings, self.topics, self.store = settings, topics, store
        self.inventory, self.windows, self.options = inventory, windows, options
        self.t0 = 0.0
        self.ingested: list[IngestReport] = []
        self.failure: list[BaseException] = []
        self.control = Producer(producer_config(settings))

    def _ingest(self) -> None:
        try:
            ingestor = Ingestor(self.settings, self.topics, self.store)
            opts = self.options
            self.ingested.append(
                ingestor.ingest_inventory(self.inventory, spread_s=opts.spread_s, shuffle_seed=opts.shuffle_seed)
            )
        except BaseException as exc:  # surfaced by the main loop
            self.failure.append(exc)

    def drive(self, fleet: Fleet, monitor: RunMonitor, progress: Progress | None, collector: StackCollector) -> Report:
        """Start the clock, ingest in a thread, follow the topics until done."""
        table = self.inventory.by_window()
        counts = {w: len(stations) for w, stations in table.items()}
        monitor.state.expected.update(counts)
        for window, stations in table.items():
            for station in stations:
                monitor.state.planned.setdefault(station, set()).add(window)
        if progress is not None:
            progress.set_total(sum(counts.values()) + sum(n * (n - 1) // 2 for n in counts.values()))
        self.t0 = time.time()
        thread = threading.Thread(target=self._ingest, name="ingest", daemon=True)
        thread.start()
        seen, next_write = 0, 0.0
        while thread.is_alive() or not monitor.state.done(self.windows):
            for letter in monitor.poll(0.05):
                _drop_station(letter, monitor.state, self.control, self.topics, self.settings.key_prefix)
            self._check(fleet)
            seen = _advance(progress, monitor.state, seen)
            if time.monotonic() >= next_write:
                collector.write_final(monitor.state.windows_of_pair)
                next_write = time.monotonic() + 0.25
        thread.join()
        for failure in self.ingested[0].failed if self.ingested else ():  # never uploaded: never correlated
            monitor.state.failed.add(failure)
        return self._report(monitor.state)

    def _check(self, fleet: Fleet) -> None:
        if self.failure:
            raise RunFailed(f"ingest failed: {self.failure[0]}") from self.failure[0]
        fleet.check_alive()
        if time.time() - self.t0 > self.options.timeout_s:
            raise RunFailed(f"the run did not finish within {self.options.timeout_s:.0f} s; see the worker logs")

    def _report(self, s: RunState) -> Report:
        t0 = self.t0
        ingested = self.ingested[0] if self.ingested else IngestReport()
        last_arrival = ingested.last_arrival or t0
        report = Report(mode=self.options.mode)
        report.stations = len({st for v in s.ready.values() for st in v})
        report.windows = len(self.windows)
        report.first_result_s = round(s.first_result_at - t0, 6) if s.first_result_at else None
        report.dead_letters = [{"source": d.source, "reason": d.reason} for d in ingested.dead_letters] + [
            {"source": d.source, "reason": d.reason} for d in s.dead_letters if d.service != "ingest"
        ]
        report.skipped = s.skipped
        report.timings_s = {
            "ingest": round(last_arrival - t0, 6),
            "first_ready": round((s.first_ready_at or t0) - t0, 6),
            "last_ready": round((s.last_ready_at or t0) - t0, 6),
            "last_pair": round((s.last_pair_at or t0) - t0, 6),
            "last_arrival_to_last_pair": round((s.last_pair_at or t0) - last_arrival, 6),
        }
        if len(ingested.arrivals) >= 2 and s.first_result_at:
            # the first pair needs two stations: time to the first CCF after the second raw arrival
            report.timings_s["second_arrival"] = round(sorted(ingested.arrivals)[1] - t0, 6)
            report.timings_s["first_result_after_two_arrivals"] = round(
                s.first_result_at - sorted(ingested.arrivals)[1], 6
            )
        report.pair_times_s = [round(t - t0, 4) for t in sorted(s.timeline)]
        return report


def _advance(progress: Progress | None, state: RunState, seen: int) -> int:
    ready = sum(len(v) for v in state.ready.values())
    done = ready + len(state.pairs)
    if progress is not None and done > seen:
        progress.advance(done - seen, f"{ready} stations ready, {len(state.pairs)} pairs")
    return max(done, seen)


def _drop_station(letter: DeadLetter, state: RunState, control: Producer, topics: TopicNames, ns: str) -> None:
    """A station-window failed to preprocess: lower its window's CnF count so the window can still commit.

    The dead letter's payload is the RawFileArrived that failed, which names the window.
    """
    try:
        failed = decode(letter.payload.encode())
    except EventDecodeError:
        return
    if not isinstance(failed, RawFileArrived):
        return
    window = failed.window
    state.failed.add((window, failed.station))
    state.expected[window] = max(0, state.expected.get(window, 0) - 1)
    directory = f"{ns}prep/{window}/"
    event = DirectoryExpected(directory=directory, n_files=state.expected[window])
    produce_event(control, topics.files, directory, event)
    control.flush(10)
