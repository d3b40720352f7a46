"""Issue 10's faults, struck mid-run into the ``xcorrflow run`` users start, on a private stack.

The stack here is this module's own Kafka and S3 server (its own home, ports from 29000 up, below the
kernel's ephemeral range, never the shared stack), since the tests kill and freeze them. Each test runs the
harness of ``make chaos`` (``bench/``) on a smaller deployment, 6 stations x 2 h arriving over 4 s (one
worker per stage unless a test kills one of two), and fails if a pair is lost (a stack missing, or short of
a window, or an announced CCF not in the store), doubled (a window stacked twice, or a (window, pair)
announced twice), or off its true lag; or if a process of the run outlives it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench import chaos_scenarios as sc
from bench import fuzz
from bench.chaos_run import Fault, Live, Outcome, RunSpec, evaluate
from bench.checks import Expectation
from bench.faults import PrivateStack, free_port_base
from bench.hostile import build_hostile, check_hostile
from contracts.events import StacksUpdated
from dsp.synthetic.stations import SynthConfig, synthesise
from dsp.windows import window_id

pytestmark = pytest.mark.slow

REFERENCE = {  # shorter sub-windows keep the runs quick; the lags stay whole 20 Hz samples
    "XCORRFLOW_PROCESSING__CC_LEN_S": "600",
    "XCORRFLOW_PROCESSING__STEP_S": "300",
    "XCORRFLOW_PROCESSING__MAXLAG_S": "100",
}
SPREAD_S, TIMEOUT_S = 4.0, 90.0
TRIGGER = 6  # strike once this many (window, pair) results of 30 are correlated


@pytest.fixture(scope="module")
def private_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateStack]:
    """Kafka and the S3 server of this module alone; wiped at the end."""
    stack = PrivateStack(tmp_path_factory.mktemp("faults-stack"), free_port_base(29000))
    stack.check_private()
    stack.up()
    yield stack
    stack.wipe()


@dataclass(frozen=True)
class Deployment:
    """An input folder and the truth of its stations."""

    folder: Path
    truth: dict[str, Any]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    """6 stations x 2 h at 50/100 Hz with known lags: 15 pairs, 30 (window, pair) results."""
    out = tmp_path_factory.mktemp("faults-data")
    return Deployment(out, synthesise(SynthConfig(stations=6, hours=2, rates=(50, 100), seed=4), out))


def _windows(truth: dict[str, Any]) -> tuple[str, ...]:
    import obspy

    start = float(obspy.UTCDateTime(truth["start"]))
    return tuple(window_id(start + 3600 * h) for h in range(truth["hours"]))


def _run(
    stack: PrivateStack,
    dep: Deployment,
    work: Path,
    inject: sc.Inject | None = None,
    *,
    exp: Expectation | None = None,
    p: int = 1,
    c: int = 1,
    env: dict[str, str] | None = None,
) -> tuple[Outcome, Fault, Live]:
    """One run on ``dep`` with ``inject`` struck mid-run; returns what it left behind."""
    stack.up()  # a test that failed half-way may have left a service down
    exp = exp or Expectation.from_truth(dep.truth)
    spec = RunSpec(dep.folder, work / "out", p, c, SPREAD_S, TIMEOUT_S, env={**REFERENCE, **(env or {})})
    ctx = sc.Ctx(stack, _windows(dep.truth), tuple(sorted(dep.truth["stations"])), TRIGGER)
    ctx.live = live = Live(stack, spec, work / "run.log")
    try:
        fault = inject(ctx) if inject else Fault()
        assert not fault.flags.get("not_injected"), f"the fault was never struck: {fault.notes}"
        live.wait(TIMEOUT_S + 30)
        return evaluate(live, exp, fault), fault, live
    finally:
        if live.alive():
            live.kill()


def assert_exact(o: Outcome) -> None:
    """The run completed with every pair once, at its true lag, every window stacked once, and no orphan."""
    assert o.exit_code == 0 and o.complete is not False, f"the run failed: {o.reason}"
    assert o.missing == 0 and o.present == o.pairs_expected, f"pairs lost: {o.examples}"
    assert o.wrong_windows == 0, f"a stack lost or doubled a window: {o.examples}"
    assert o.off_lag == 0 and o.extra == 0, f"stacks off their lag, or pairs that must not exist: {o.examples}"
    assert o.window_pairs_on_wire == o.window_pairs_expected, "a (window, pair) was never announced"
    assert o.wire_duplicates == 0, "a (window, pair) was announced twice"
    assert o.ccfs_checked >= o.window_pairs_expected, f"only {o.ccfs_checked} announced CCFs checked"
    assert o.ccfs_absent == 0 and o.ccfs_off_lag == 0, f"announced CCFs absent or off their lag: {o.examples}"
    assert not o.orphans, f"processes outlived the run: {o.orphans}"


def test_kafka_broker_killed_and_restarted(private_stack: PrivateStack, deployment: Deployment, tmp_path: Path) -> None:
    outcome, fault, _ = _run(private_stack, deployment, tmp_path, sc.service_restart("kafka", 0))
    assert_exact(outcome)
    assert outcome.recovery_s is not None, f"no pair was correlated after Kafka came back: {fault.notes}"


def test_kafka_away_longer_than_the_setting_fails_clearly(
    private_stack: PrivateStack, deployment: Deployment, tmp_path: Path
) -> None:
    env = {"XCORRFLOW_FAULTS__KAFKA_OUTAGE_S": "10"}
    o, fault, live = _run(private_stack, deployment, tmp_path, sc.kafka_away_too_long(60), env=env)
    assert fault.flags["failed_while_down"], "the run did not give up while Kafka was away"
    assert o.exit_code not in (0, None) and o.complete is False, f"exit {o.exit_code}, complete {o.complete}"
    assert "kafka" in (o.reason or "").lower(), f"the reason does not say Kafka: {o.reason!r}"
    assert o.durable_lost == 0, "CCFs announced before the outage were not kept in the store"
    assert o.ccfs_absent == 0 and o.ccfs_off_lag == 0, f"an announced CCF is absent or wrong: {o.examples}"
    assert o.off_lag == 0 and o.doubled == 0, f"a kept stack is wrong: {o.examples}"
    assert not o.orphans, f"processes outlived the run: {o.orphans}"
    report = json.loads((live.spec.out / "report.json").read_text())
    assert report["missing"]["count"] > 0, "a failed run must say what is missing"


def test_s3_server_killed_and_restarted(private_stack: PrivateStack, deployment: Deployment, tmp_path: Path) -> None:
    outcome, _, _ = _run(private_stack, deployment, tmp_path, sc.service_restart("s3", 5))
    assert_exact(outcome)
    assert outcome.dead_letters == 0, "a brief S3 outage dead-lettered good data"


def test_s3_server_frozen(private_stack: PrivateStack, deployment: Deployment, tmp_path: Path) -> None:
    outcome, _, _ = _run(private_stack, deployment, tmp_path, sc.s3_freeze(10))
    assert_exact(outcome)
    assert outcome.dead_letters == 0, "a brief S3 outage dead-lettered good data"


@pytest.mark.parametrize(("service", "p", "c"), [("preprocess", 2, 2), ("correlate", 2, 2), ("correlate", 2, 1)])
def test_kill_9_of_a_worker(
    private_stack: PrivateStack, deployment: Deployment, tmp_path: Path, service: str, p: int, c: int
) -> None:
    outcome, _, _ = _run(private_stack, deployment, tmp_path, sc.kill_worker(service), p=p, c=c)
    assert_exact(outcome)


def test_kill_9_of_the_stacker_mid_group_loses_and_doubles_nothing(
    private_stack: PrivateStack, deployment: Deployment, tmp_path: Path
) -> None:
    small_groups = {"XCORRFLOW_STACK_MEMORY_MB": "1", "XCORRFLOW_STACK_CHUNK_PAIRS": "4"}  # 4 chunks per group
    outcome, fault, _ = _run(private_stack, deployment, tmp_path, sc.kill_stacker, env=small_groups)
    assert_exact(outcome)
    assert outcome.restarts.get("stack", 0) >= 1, f"the stacker was not restarted: {outcome.restarts}"
    assert outcome.stacks_recovery_s is not None, f"no StacksUpdated after the kill: {fault.notes}"


def test_kill_9_of_the_run_leaves_no_orphan_and_a_rerun_resumes(
    private_stack: PrivateStack, deployment: Deployment, tmp_path: Path
) -> None:
    first, _, _ = _run(private_stack, deployment, tmp_path, sc.at_strike(sc.kill_run))
    assert first.exit_code == -9
    assert not first.orphans, f"workers outlived the killed run: {first.orphans}"
    again, _, _ = _run(private_stack, deployment, tmp_path)
    assert again.run_id == first.run_id, "the second run did not resume the first"
    assert_exact(again)  # the wire check spans both runs: a pair correlated again shows as a duplicate


def test_malformed_and_forged_records_on_every_topic(
    private_stack: PrivateStack, deployment: Deployment, tmp_path: Path
) -> None:
    def records(target: fuzz.Target) -> dict[str, list[fuzz.KeyValue]]:
        mixed = {topic: fuzz.malformed(target, topic, 150) for topic in fuzz.TOPICS}
        mixed["raw"] += [fuzz.poison(target), *fuzz.forged_raw_arrivals(target, 40)]
        mixed["commits"] += fuzz.forged_file_ready(target, 10)
        return mixed

    outcome, _, _ = _run(private_stack, deployment, tmp_path, sc.produce(records, "records"))
    assert_exact(outcome)
    assert outcome.dlq_records > 0, "hostile records must reach the dead-letter topic"


def test_forged_stacks_updated_do_not_end_the_run(
    private_stack: PrivateStack, deployment: Deployment, tmp_path: Path
) -> None:
    """Anyone who reaches the stacks topic can say every window is stacked; the run must not stop on it."""

    def claims(target: fuzz.Target) -> dict[str, list[fuzz.KeyValue]]:
        n = len(target.stations) * (len(target.stations) - 1) // 2
        forged = [StacksUpdated(window=w, stacked=n, expected=n, complete=True) for w in target.windows]
        return {"stacks": [(e.window.encode(), e.encode()) for e in forged]}

    outcome, _, _ = _run(private_stack, deployment, tmp_path, sc.produce(claims, "forged StacksUpdated"))
    assert_exact(outcome)


def test_hostile_input_folder(private_stack: PrivateStack, tmp_path: Path) -> None:
    hostile = build_hostile(tmp_path / "hostile", stations=6)
    dep = Deployment(hostile.folder, hostile.truth)
    outcome, _, live = _run(private_stack, dep, tmp_path, exp=hostile.expectation())
    assert_exact(outcome)
    assert check_hostile(hostile, live.report() or {}) == []
