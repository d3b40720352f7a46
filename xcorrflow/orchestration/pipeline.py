"""``xcorrflow run --mode streaming|cnf|barrier``: one run of the Kafka pipeline on the running stack.

A run gets its own topics (prefix ``<run id>.``) and its own key namespace (``<run id>/``), starts the
workers as processes (commit broker, pair scheduler, P preprocessors, C correlators, the stacker, the latency
tracker), waits until they are ready, then starts the clock and ingests the input. The correlators write each
window's CCFs into the bucket's ``<ns>results.zarr``; the stacker writes the stacks into ``OUT/results.zarr``.
The run follows the commits, results, stacks and dead-letter topics until the stacker has every planned window
(:mod:`xcorrflow.orchestration.runstate`), checks the stacks against its plan from the objects
(:mod:`xcorrflow.orchestration.verify`), exports SAC files when asked (``--format sac|both``), writes report.json
(also to ``runs/<run id>/`` in the bucket) and stops the workers. The run process itself holds no CCF and no stack.

The clock starts at ingest, with the workers already deployed, as the paper compares fixed resources with
and without the I/O boundary; worker start-up (Python imports, group joins) is reported separately.

**Faults.** The run rides through a Kafka broker restart or an S3 outage of up to ``faults.*_outage_s`` (one
line in the log when a service goes away, one when it is back); it restarts workers that die
(:meth:`xcorrflow.orchestration.fleet.Fleet.supervise`); and a run that fails anyway (a service away too long, a
worker dying over and over, a timeout, a signal) still writes report.json with ``"complete": false``, the reason
and what is missing, keeping the SAC files of every pair that is final. Running the same command again resumes
the run (:mod:`xcorrflow.orchestration.manifest`). The run exits 0 only when every planned (window, pair) is in its
stack.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from confluent_kafka import Producer

from commit_broker.rules import DEFAULT_RULES
from contracts.errors import XcorrflowError
from contracts.events import DirectoryExpected
from contracts.kafka import configure_kafka_outage, produce_event, producer_config, watch_kafka
from contracts.outage import KAFKA
from contracts.settings import Settings, TopicNames
from contracts.topics import ensure_topics, topic_specs
from producers.ingest import Ingestor, IngestReport, plan
from producers.inventory import Inventory, scan_folder
from results.export import export_sac
from results.layout import window_group
from results.zarrio import bucket_root, open_root, subgroup
from storage import ObjectStore, open_store
from storage.layout import RESULTS_ROOT, Layout, run_object
from xcorrflow.errors import CommandError
from xcorrflow.orchestration.dvvout import check_reference, wait_for_monitor, write_csvs
from xcorrflow.orchestration.fleet import Fleet, WorkerProcess
from xcorrflow.orchestration.manifest import RunManifest, claim
from xcorrflow.orchestration.progress import Progress
from xcorrflow.orchestration.report import Report
from xcorrflow.orchestration.runstate import MAX_LISTED, FailureCheck, RunMonitor, RunState
from xcorrflow.orchestration.verify import Verdict, verify

log = logging.getLogger(__name__)


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
    fresh: bool = False  # start a new run even if OUT holds an unfinished one
    formats: tuple[str, ...] = ("zarr",)  # zarr: OUT/results.zarr holds the stacks; sac: OUT/<A>__<B>.sac
    dvv: bool = False  # start the dv/v monitor; OUT gets dvv_network.csv and dvv_pairs.csv
    dvv_wait_s: float = 120.0  # after the stacks are done, how long the run waits for the monitor


def start_workers(
    settings: Settings,
    topics_prefix: str,
    namespace: str,
    options: RunOptions,
    windows: int,
    logs: Path,
    stacks: Path | None = None,
) -> Fleet:
    """Start broker, scheduler, P preprocessors, C correlators, the stacker (its stacks in ``stacks``, default the
    bucket) and the latency tracker for one run, and wait until all are ready."""
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
    target = ["--stacks", str(stacks)] if stacks is not None else []
    fleet.add(
        WorkerProcess(["stack", *target, *common, "--nice", str(options.downstream_nice)], log=logs / "stack.log")
    )
    fleet.add(WorkerProcess(["latency", *common], log=logs / "latency.log"))  # station latency metric
    if options.dvv:
        fleet.add(WorkerProcess(["monitor", *target, *common], log=logs / "monitor.log"))
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
    try:
        fleet.wait_ready()
    except BaseException:
        fleet.stop()
        raise
    return fleet


def run_pipeline(
    input_dir: Path, output_dir: Path, settings: Settings, progress: Progress | None, options: RunOptions
) -> Report:
    """Run the pipeline in ``options.mode`` on ``input_dir`` and export to ``output_dir``.

    Returns:
        The report; ``report.complete`` is False when the run failed (``report.reason`` says why), in which
        case the SAC files of the pairs that are final are written and ``report.missing`` lists the rest.

    Raises:
        CannotResume: ``output_dir`` holds a run of another input or other settings.
        ServiceUnavailable: Kafka does not answer when the run starts.
    """
    configure_kafka_outage(settings)
    inventory = scan_folder(input_dir, settings.processing)
    if options.dvv:
        check_reference(settings, len(inventory.windows()))
    manifest, how = claim(
        output_dir, input_dir, inventory, settings, options.mode, run_id=options.run_id, fresh=options.fresh
    )
    if how == "complete":
        return _already_complete(output_dir, manifest)
    if how == "resumed":
        log.warning("resuming run %s (attempt %d): durable work is reused", manifest.run_id, manifest.attempts)
    run_id = manifest.run_id
    scoped = settings.scoped(run_id)
    topics = scoped.scoped_topics
    t_setup = time.perf_counter()
    ensure_topics(settings, topic_specs(settings, topics), replication=settings.kafka_replication)
    store = open_store(settings)
    run = _Run(scoped, topics, store, inventory, options, output_dir)
    stacks = output_dir / RESULTS_ROOT
    fleet = start_workers(settings, run_id, run_id, options, len(inventory.windows()), output_dir / "logs", stacks)
    try:
        report = run.execute(fleet, progress, setup_s=time.perf_counter() - t_setup)
    finally:
        peak_rss, cpu = fleet.peak_rss_mb(), fleet.cpu_s()
        fleet.stop()
    report.outputs.update({"run_id": run_id, "topic_prefix": run_id, "resumed": how == "resumed"})
    report.outputs.update({"peak_rss_mb": peak_rss, "cpu_s": cpu})
    report.outputs["restarts"] = fleet.restarts()
    report.config = {**settings.public_dump(), "run": options.__dict__}
    manifest.status = "complete" if report.complete else "failed"
    manifest.save(output_dir)
    _keep(settings, store, run_id, report, options.cleanup and report.complete)
    return report


def _already_complete(output_dir: Path, manifest: RunManifest) -> Report:
    """The report of a run that completed earlier into the same folder (nothing is redone)."""
    log.warning("run %s already completed into %s; nothing to do (use --fresh to run again)", manifest.run_id,
                output_dir)  # fmt: skip
    try:
        data = json.loads((output_dir / "report.json").read_text())
        report = Report(**{k: v for k, v in data.items() if k in Report.__dataclass_fields__})
    except (OSError, ValueError, TypeError):
        report = Report(mode=manifest.mode, complete=True)
    report.outputs["already_complete"] = True
    return report


def _keep(settings: Settings, store: ObjectStore, run_id: str, report: Report, cleanup: bool) -> None:
    """Delete the run's objects and topics (``--cleanup``), or keep its report and config in the bucket."""
    if cleanup:
        from xcorrflow.orchestration.runs import delete_run

        delete_run(settings, store, run_id)
        report.outputs["cleaned_up"] = True
        return
    try:
        store.put(run_object(run_id, "report.json"), json.dumps(report.to_dict(), default=str).encode())
        store.put(run_object(run_id, "config.json"), json.dumps(report.config, default=str).encode())
    except XcorrflowError as exc:  # the report in OUT is what counts; the bucket copy is a convenience
        log.warning("report not copied to the bucket: %s", exc)


class _Run:
    """One run's ingest, its progress until every planned pair is in the stacks, and its report."""

    def __init__(
        self,
        settings: Settings,
        topics: TopicNames,
        store: ObjectStore,
        inventory: Inventory,
        options: RunOptions,
        output_dir: Path,
    ) -> None:
        self.settings, self.topics, self.store = settings, topics, store
        self.inventory, self.options, self.output_dir = inventory, options, output_dir
        self.windows = inventory.windows()
        self.ns = settings.key_prefix
        self.objects = {(o.window, o.seed_id): o for o in plan(inventory)}
        self.t0 = 0.0
        self.ingested = IngestReport()
        self.ingest_failure: list[BaseException] = []
        self.control = Producer(producer_config(settings))
        self.monitor = RunMonitor(settings, topics, self.ns)
        self.state: RunState = self.monitor.state
        for window, station in self.objects:
            self.state.plan.setdefault(window, set()).add(station)
        self.check = FailureCheck(settings, self.objects, self.ns)
        self.verdict = Verdict()
        self._lost_seen = 0
        self._index_checked_at = 0.0
        self._disbelieved: set[str] = set()
        self.dvv_outputs: dict[str, object] = {}
        self.dvv_wait_s = 0.0

    def execute(self, fleet: Fleet, progress: Progress | None, setup_s: float) -> Report:
        """Drive the run to its end and build the report, complete or not."""
        failure: BaseException | None = None
        try:
            self._drive(fleet, progress)
        except (XcorrflowError, KeyboardInterrupt) as exc:
            failure = exc
        finally:
            self.monitor.close()
            self.check.close()
        t_export = time.perf_counter()
        if failure is None and self.options.dvv:
            failure = self._dvv()
        export_error = self._export()
        report = self._report()
        reason = failure or export_error
        if reason is None and not self.verdict.complete:
            reason = RunFailed(f"the stacks do not hold {self.verdict.missing_count} planned (window, pair)s")
        report.complete = reason is None
        report.reason = None if reason is None else _reason(reason)
        if not report.complete:
            report.missing = self._missing()
        report.timings_s["export_tail"] = round(time.perf_counter() - t_export, 6)
        report.timings_s["setup"] = round(setup_s, 6)
        if self.options.dvv:
            report.outputs["dvv"] = self.dvv_outputs
            report.timings_s["dvv_wait"] = round(self.dvv_wait_s, 6)
        report.makespan_s = round(time.time() - (self.t0 or time.time()), 6)  # ingest start → results durable
        report.started_at = self.t0 or None
        return report

    def _dvv(self) -> BaseException | None:
        """Wait for the monitor to measure every window, then write the CSV files from the table."""
        t0 = time.perf_counter()
        try:
            windows = open_root(bucket_root(self.settings), self.settings)
            root = open_root(self.output_dir / RESULTS_ROOT)
            done = wait_for_monitor(windows, root, self.store, self.settings, self.options.dvv_wait_s)
            self.dvv_outputs = done
            if done["series"] is None:
                return RunFailed("dv/v: the monitor elected no reference (see logs/monitor.log)")
            write_csvs(root, self.output_dir, self.settings.dvv_csv_method, done["series"])
            if done["missing"]:
                return RunFailed(f"dv/v: {len(done['missing'])} windows not measured (see logs/monitor.log)")
        except (XcorrflowError, OSError) as exc:
            return exc
        finally:
            self.dvv_wait_s = time.perf_counter() - t0
        return None

    def _export(self) -> BaseException | None:
        """Judge the stacks from the objects, then export: SAC files of the final pairs when asked for."""
        try:
            stacks = open_root(self.output_dir / RESULTS_ROOT)
            self.verdict = verify(stacks, open_root(bucket_root(self.settings), self.settings), self.state)
            if "sac" in self.options.formats:
                export_sac(stacks, self.output_dir, final=self.verdict.final)
            if "zarr" not in self.options.formats and self.verdict.complete:
                shutil.rmtree(self.output_dir / RESULTS_ROOT, ignore_errors=True)
        except (XcorrflowError, OSError, KeyError) as exc:
            return exc
        return None

    # --- the run ---------------------------------------------------------------------------------------------
    def _ingest(self) -> None:
        try:
            ingestor = Ingestor(self.settings, self.topics, self.store)
            opts = self.options
            ingestor.ingest_inventory(
                self.inventory, spread_s=opts.spread_s, shuffle_seed=opts.shuffle_seed, report=self.ingested
            )
        except BaseException as exc:  # surfaced by the main loop
            self.ingest_failure.append(exc)

    def _drive(self, fleet: Fleet, progress: Progress | None) -> None:
        """Start the clock, ingest in a thread, follow the topics until the stacker has every planned window.

        Raises:
            RunFailed, WorkerFailed, DependencyUnavailable: the run cannot complete.
        """
        if progress is not None:
            progress.set_total(sum(len(s) for s in self.state.plan.values()) + self.state.pairs_expected())
        self.t0 = time.time()
        thread = threading.Thread(target=self._ingest, name="ingest", daemon=True)
        thread.start()
        seen = 0
        while True:
            for letter in self.monitor.poll(0.05):
                reason = self.check.claim(letter)
                if reason:
                    self.state.untrusted.append({"source": letter.source, "reason": f"not confirmed: {reason}"})
            self._absorb_failures()
            self._check(fleet)
            seen = self._advance(progress, seen)
            if not thread.is_alive() and not self.ingest_failure and self.state.stacker_done() and self._indexed():
                return

    def _indexed(self) -> bool:
        """Whether every planned window the stacker calls complete has its slot index in the bucket.

        StacksUpdated is an event anyone who reaches the stacks topic can publish, and the run ends on it; the
        stacker writes a window's slot index before it says so. A claim without the index is not believed (it
        is listed under ``untrusted`` once) and the run keeps following the topics. Looked at most once a
        second; a store that cannot be read counts as not yet.
        """
        now = time.monotonic()
        if now < self._index_checked_at + 1.0:
            return False
        self._index_checked_at = now
        try:
            root = open_root(bucket_root(self.settings), self.settings, read_only=True)
            windows = [w for w in sorted(self.state.plan) if self.state.pairs_expected(w)]
            unbacked = [w for w in windows if "pair_index" not in (subgroup(root, window_group(w)) or {})]
        except (XcorrflowError, OSError) as exc:
            log.info("the windows' slot indexes cannot be read yet: %s", exc)
            return False
        for window in unbacked:
            if window not in self._disbelieved:
                self._disbelieved.add(window)
                log.warning("StacksUpdated says window %s is stacked, but it has no slot index: not believed", window)
                self.state.untrusted.append(
                    {"source": f"StacksUpdated for window {window}", "reason": "not confirmed: no slot index"}
                )
        return not unbacked

    def _check(self, fleet: Fleet) -> None:
        if self.ingest_failure:
            exc = self.ingest_failure[0]
            raise RunFailed(f"ingest failed: {_reason(exc)}") from exc
        watch_kafka(self.monitor.consumer)
        KAFKA.check()
        faults = self.settings.faults
        fleet.supervise(faults.max_restarts, faults.restart_backoff_s)
        if time.time() - self.t0 > self.options.timeout_s:
            raise RunFailed(f"the run did not finish within {self.options.timeout_s:.0f} s (--timeout)")

    def _absorb_failures(self) -> None:
        """Station-windows that verifiably cannot be processed leave the plan; the broker learns the new count."""
        for ident, reason in self.check.confirmed():
            if reason is None:
                self.state.untrusted.append(
                    {"source": f"{ident[1]} in {ident[0]}", "reason": "not confirmed: its data preprocess fine here"}
                )
            else:
                self.state.lost.add(ident)
        self.state.lost.update(self.ingested.failed)
        if len(self.state.lost) != self._lost_seen:
            self._lost_seen = len(self.state.lost)
            for window in sorted({w for w, _ in self.state.lost}):
                directory = Layout(self.ns).product_dir(window)
                event = DirectoryExpected(directory=directory, n_files=len(self.state.expected(window)))
                produce_event(self.control, self.topics.files, directory, event)
            self.control.poll(0)

    def _advance(self, progress: Progress | None, seen: int) -> int:
        ready = sum(len(v) for v in self.state.ready.values())
        done = ready + self.state.stacked()
        if progress is not None and done > seen:
            progress.advance(done - seen, f"{ready} stations ready, {self.state.pairs_correlated} pairs correlated")
        return max(done, seen)

    # --- the report ------------------------------------------------------------------------------------------
    def _missing(self) -> dict[str, object]:
        v = self.verdict
        if not v.planned:  # never judged (the run failed before the stacks could be read)
            count = self.state.pairs_expected()
            return {"count": count, "windows": sorted(self.state.plan), "pairs": []}
        return {"count": v.missing_count, "windows": sorted({m["window"] for m in v.missing}), "pairs": v.missing}

    def _report(self) -> Report:
        s, t0 = self.state, self.t0 or time.time()
        ingested = self.ingested
        last_arrival = ingested.last_arrival or t0
        report = Report(mode=self.options.mode)
        report.stations = len({st for w in s.plan for st in s.expected(w)})
        report.windows = len(self.windows)
        report.pairs = sum(1 for (a, b), n in self.verdict.windows_of.items() if n > 0)
        report.first_result_s = _since(s.first_result_at, t0) if s.first_result_at else None
        report.dead_letters = [{"source": d.source, "reason": d.reason} for d in ingested.dead_letters] + [
            {"source": d.source, "reason": d.reason, "service": d.service}
            for d in s.dead_letters
            if d.service != "ingest"
        ]
        report.untrusted = s.untrusted[:MAX_LISTED]
        report.skipped = [{"window": w, "item": "pairs", "reason": f"{u.skipped} pairs without a common sub-window"}
                          for w, u in sorted(s.stacks.items()) if u.skipped]  # fmt: skip
        report.warnings = [w.to_dict() for w in self.inventory.warnings]  # merged duplicates, skipped symlinks
        # A resumed run may have seen events of its earlier attempts: nothing counts before this attempt's clock.
        report.timings_s = {
            "ingest": _since(last_arrival, t0),
            "first_ready": _since(s.first_ready_at or t0, t0),
            "last_ready": _since(s.last_ready_at or t0, t0),
            "last_pair": _since(s.last_pair_at or t0, t0),
            "last_arrival_to_last_pair": _since(s.last_pair_at or t0, last_arrival),
        }
        arrivals = sorted(ingested.arrivals)
        if len(arrivals) >= 2 and s.first_result_at:
            # the first pair needs two stations: time to the first CCF after the second raw arrival
            report.timings_s["second_arrival"] = _since(arrivals[1], t0)
            report.timings_s["first_result_after_two_arrivals"] = _since(s.first_result_at, arrivals[1])
        report.pair_times_s = _pair_times(s.timeline, t0)
        report.outputs = {
            "results": str(self.output_dir / RESULTS_ROOT) if "zarr" in self.options.formats else None,
            "ccfs": bucket_root(self.settings),
            "stacks": str(self.output_dir),
            "namespace": self.ns,
            "logs": str(self.output_dir / "logs"),
        }
        return report


def _pair_times(timeline: list[tuple[float, int]], t0: float, points: int = 2000) -> list[float]:
    """When each pair was correlated (a row task's pairs share its time), thinned to at most ``points`` values."""
    times = np.repeat([t for t, _ in sorted(timeline) if t >= t0], [n for t, n in sorted(timeline) if t >= t0])
    step = max(1, times.size // points)
    return [round(float(t) - t0, 4) for t in times[::step]]


def _since(t: float, t0: float) -> float:
    """Seconds from ``t0`` to ``t``, never negative."""
    return round(max(0.0, t - t0), 6)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (SIGINT or SIGTERM)"
    return f"{type(exc).__name__}: {exc}"
