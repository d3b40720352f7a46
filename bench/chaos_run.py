"""One ``xcorrflow run`` under attack: start it on a private stack, wait for a moment to strike, and measure
what it left behind (the stacks, the wire, the report, the processes).

Shared by ``bench/chaos.py`` and ``tests/integration/xcorrflow/test_faults.py``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zarr
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from bench import checks, faults
from bench.checks import Expectation, Offset
from contracts.kafka import connection_config, partitions_of
from results.errors import ResultsError
from results.zarrio import bucket_root, open_root
from storage.layout import RESULTS_ROOT


@dataclass(frozen=True)
class RunSpec:
    """The ``xcorrflow run`` command of a scenario, and the environment it runs in."""

    input: Path
    out: Path
    preprocess: int = 2
    correlate: int = 2
    spread_s: float = 20.0
    timeout_s: float = 240.0
    shuffle_seed: int = 1
    env: dict[str, str] = field(default_factory=dict)

    def argv(self) -> list[str]:
        """``python -m xcorrflow run …``."""
        return [
            *(sys.executable, "-m", "xcorrflow", "run", "--input", str(self.input), "--output", str(self.out)),
            *("--preprocess-workers", str(self.preprocess), "--correlate-workers", str(self.correlate)),
            *("--spread", str(self.spread_s), "--shuffle-seed", str(self.shuffle_seed)),
            *("--timeout", str(self.timeout_s)),
        ]


@dataclass
class Fault:
    """What an injection did: when the fault started and ended (Unix seconds), notes, and the records it
    produced per topic (left out of every count)."""

    start: float | None = None
    end: float | None = None
    notes: list[str] = field(default_factory=list)
    injected: dict[str, list[Offset]] = field(default_factory=dict)
    flags: dict[str, Any] = field(default_factory=dict)


class Live:
    """A running ``xcorrflow run`` process (in its own session, so a signal to it reaches it alone)."""

    def __init__(self, stack: faults.PrivateStack, spec: RunSpec, log: Path) -> None:
        self.stack, self.spec, self.log = stack, spec, log
        log.parent.mkdir(parents=True, exist_ok=True)
        self.started = time.time()
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                spec.argv(),
                env=stack.process_env(spec.env),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._run_id: str | None = None
        self._counter: PairCounter | None = None
        self.ended: float | None = None

    @property
    def known_run_id(self) -> str | None:
        """The run id if it was found already (no waiting)."""
        return self._run_id

    @property
    def run_id(self) -> str:
        """The run id (found from the workers' command lines the first time it is asked for)."""
        if self._run_id is None:
            self._run_id = faults.run_id_of(self.proc.pid)
        return self._run_id

    def alive(self) -> bool:
        """True while the run process runs."""
        return self.proc.poll() is None

    def wait_pairs(self, n: int, timeout: float = 180.0) -> bool:
        """Wait until ``n`` pairs are correlated (read_committed), the run ends, or ``timeout``; True on ``n``."""
        if self._counter is None:
            self._counter = PairCounter(self.stack.bootstrap, f"{self.run_id}.xcorr.results")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.alive():
            if self._counter.count() >= n:
                return True
        return False

    @property
    def pairs_seen(self) -> int:
        """(window, pair) results counted by the last :meth:`wait_pairs`."""
        return self._counter.seen if self._counter else 0

    def wait(self, timeout: float) -> int | None:
        """Wait for the run to exit; returns its exit code, or None when it was still running after ``timeout``
        seconds (it is then killed, with its workers)."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        finally:
            self.ended = self.ended or time.time()
            if self._counter is not None:
                self._counter.close()
                self._counter = None
        return code

    def kill(self) -> None:
        """SIGKILL the run process and every process that names its run id (cleanup after a hang)."""
        faults.kill9(self.proc.pid)
        self.proc.wait(10)
        if self._run_id:
            faults.kill_all(faults.naming(self._run_id))

    def report(self) -> dict[str, Any] | None:
        """The run's report.json, or None when it wrote none."""
        try:
            data: dict[str, Any] = json.loads((self.spec.out / "report.json").read_text())
            return data
        except (OSError, ValueError):
            return None

    def message(self) -> str:
        """What the run said last about an error (at most 300 characters): its ``xcorrflow: error:`` line, with
        the exception line that follows it when the error quotes a worker's log; else the last exception
        line of a traceback; else its last line."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        lines = [ln.strip() for ln in re.split(r"[\r\n]+", text) if ln.strip()]
        exception = [i for i, ln in enumerate(lines) if re.match(r"^[\w.]+(Error|Exception|Interrupt)\b", ln)]
        errors = [i for i, ln in enumerate(lines) if ln.startswith("xcorrflow: error:")]
        if errors:
            after = [lines[i] for i in exception if i > errors[-1]]
            return " ".join([lines[errors[-1]], *after[-1:]])[:300]
        return (lines[exception[-1]] if exception else lines[-1] if lines else "")[:300]


class PairCounter:
    """Counts the (window, pair) results announced on a results topic as they arrive (read_committed), for triggers."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = Consumer(
            {
                **connection_config(bootstrap),
                "group.id": f"chaos-trigger-{time.monotonic_ns()}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "log_level": 0,
            }
        )
        parts = partitions_of(self.consumer, topic, timeout=30)
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        self.seen = 0

    def count(self) -> int:
        """(window, pair) results announced so far (waits up to 0.5 s for more)."""
        for msg in self.consumer.consume(1000, 0.5):
            if not msg.error():
                self.seen += len(checks.correlated([checks.Record(0, 0, msg.value())]))
        return self.seen

    def close(self) -> None:
        """Leave."""
        self.consumer.close()


@dataclass
class Outcome:
    """What a finished run left behind, measured against the expectation."""

    exit_code: int | None
    wall_s: float
    run_id: str | None
    report: bool
    complete: bool | None
    reason: str | None
    pairs_expected: int
    present: int
    at_true_lag: int
    missing: int
    off_lag: int
    wrong_windows: int
    extra: int
    window_pairs_expected: int
    window_pairs_on_wire: int
    wire_duplicates: int
    ccfs_checked: int
    ccfs_absent: int
    ccfs_off_lag: int
    recovery_s: float | None
    stacks_recovery_s: float | None
    makespan_s: float | None
    dead_letters: int
    dlq_records: int
    orphans: list[str]
    examples: dict[str, list[str]]
    durable_lost: int = 0  # (window, pair)s announced before a fault whose CCF is not in the store, or wrong
    doubled: int = 0  # stacks holding more windows than the pair has
    stacked_windows: int = 0  # windows the stacker said (StacksUpdated) it completed
    restarts: dict[str, int] = field(default_factory=dict)  # worker label -> restarts by the run's supervisor
    resumed: bool | None = None
    started_at: float | None = None  # Unix time of the ingest start (the report's clock)


def evaluate(live: Live, exp: Expectation, fault: Fault, orphan_grace_s: float = 10.0) -> Outcome:
    """Measure a finished run: stacks, wire, per-window CCFs, report, and processes still naming its run id
    after ``orphan_grace_s`` seconds (those are killed afterwards, so the next scenario starts clean)."""
    report = live.report() or {}
    outputs = report.get("outputs") or {}
    run_id = live.known_run_id or outputs.get("run_id")
    stacks = checks.check_stacks(live.spec.out / RESULTS_ROOT, exp)
    events = checks.correlated(_records(live, run_id, fault, "results"))
    updates = checks.stacks_updated(_records(live, run_id, fault, "stacks"))
    ccfs = checks.check_ccfs(_bucket_root(live, run_id), events, exp)
    orphans = faults.wait_gone(run_id, orphan_grace_s) if run_id else []
    faults.kill_all(orphans)
    bad = set(ccfs.absent) | set(ccfs.off_lag)
    lost = (
        {f"{e.window} {e.pair}" for e in checks.durable(events, fault.start - 2.0) if e.pair in exp.lags} & bad
        if fault.start
        else set()
    )
    return Outcome(
        exit_code=live.proc.returncode,
        wall_s=round((live.ended or time.time()) - live.started, 1),
        run_id=run_id,
        report=bool(report),
        complete=report.get("complete"),
        reason=report.get("reason") or (live.message() if live.proc.returncode else None),
        pairs_expected=stacks.expected,
        present=stacks.present,
        at_true_lag=stacks.at_true_lag,
        missing=len(stacks.missing),
        off_lag=len(stacks.off_lag),
        wrong_windows=len(stacks.wrong_windows),
        extra=len(stacks.extra),
        window_pairs_expected=exp.window_pairs,
        window_pairs_on_wire=checks.wire_coverage(events, exp),
        wire_duplicates=checks.wire_duplicates(events),
        ccfs_checked=ccfs.checked,
        ccfs_absent=len(ccfs.absent),
        ccfs_off_lag=len(ccfs.off_lag),
        recovery_s=checks.recovery_s(events, fault.end) if fault.end else None,
        stacks_recovery_s=checks.stacks_recovery_s(updates, fault.end) if fault.end else None,
        makespan_s=report.get("makespan_s"),
        dead_letters=len(report.get("dead_letters") or []),
        dlq_records=len(_records(live, run_id, fault, "dlq")),
        orphans=[f"{p.pid} {p.cmdline[:200]}" for p in orphans],
        examples=_examples(stacks, ccfs),
        durable_lost=len(lost),
        doubled=len(stacks.doubled),
        stacked_windows=len({u.window for u in updates if u.complete}),
        restarts=dict(report.get("restarts") or outputs.get("restarts") or {}),
        resumed=outputs.get("resumed"),
        started_at=report.get("started_at"),
    )


def _records(live: Live, run_id: str | None, fault: Fault, topic: str) -> list[checks.Record]:
    if not run_id:
        return []
    name = f"{run_id}.xcorr.{topic}"
    skip = set(fault.injected.get(name, []))
    return [r for r in checks.read_topic(live.stack.bootstrap, name) if (r.partition, r.offset) not in skip]


def _bucket_root(live: Live, run_id: str | None) -> zarr.Group | None:
    """The run's hierarchy in the bucket (its per-window CCFs), read-only; None when there is none."""
    if not run_id:
        return None
    try:
        return open_root(bucket_root(live.stack.settings(), f"{run_id}/"), live.stack.settings(), read_only=True)
    except ResultsError:
        return None


def _examples(stacks: checks.StackCheck, ccfs: checks.CcfCheck, n: int = 3) -> dict[str, list[str]]:
    """A few pair names per problem, for the reason column."""
    shown = {
        "missing": stacks.missing[:n],
        "off_lag": stacks.off_lag[:n],
        "wrong_windows": [f"{p}: {w:g}" for p, w in list(stacks.wrong_windows.items())[:n]],
        "extra": stacks.extra[:n],
        "ccf_absent": ccfs.absent[:n],
        "ccf_off_lag": ccfs.off_lag[:n],
    }
    return {k: v for k, v in shown.items() if v}
