"""``make chaos``: every fault of issue 10, injected mid-run into a real ``xcorrflow run`` on a private stack.

The harness starts its own Kafka and S3 server (home ``bench/.chaos/stack``, ports ``--port-base`` + 92/93
and + 0; never the shared dev stack), synthesises a small deployment with known lags, and runs each scenario
of :mod:`bench.chaos_scenarios`: start ``xcorrflow run``, strike once a tenth of the pairs are correlated,
wait for the run to end, then measure the stacks, the results topic, the report and the processes left
behind. A scenario passes when the run completes with every pair present exactly once at its true lag, no
(window, pair) announced twice on the wire, every announced CCF in the store at its true lag and no orphan
process; the "Kafka away too long" scenario passes when the run fails while Kafka is away, says why, writes
``report.json`` with ``"complete": false``, keeps every CCF announced before the outage and stacks nothing
twice. The harness stops its stack at the end.

Writes ``bench/results/chaos.{json,md}`` (``chaos-selection.*`` with ``--only``); exits 1 when a scenario fails.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import obspy

from bench import chaos_report, faults
from bench.chaos_run import Fault, Live, Outcome, RunSpec, evaluate
from bench.chaos_scenarios import SCENARIOS, Ctx, Scenario
from bench.checks import Expectation
from bench.hostile import HostileInput, build_hostile, check_hostile
from dsp.synthetic.stations import SynthConfig, synthesise
from dsp.windows import window_id
from xcorrflow.localstack.errors import StackError

BENCH = Path(__file__).parent
WORK = BENCH / ".chaos"
HARD_MARGIN_S = 120.0  # the harness kills a run this long after its own --timeout
KAFKA_WORDS = ("kafka", "broker")  # a clear message about a Kafka outage names one of these


@dataclass(frozen=True)
class Inputs:
    """The synthetic deployment (with its truth) and, when a scenario needs it, the hostile folder."""

    synth: Path
    truth: dict[str, Any]
    hostile: HostileInput | None

    def target(self, exp: Expectation) -> dict[str, Any]:
        """What an injection aims at: the real windows (one per hour) and stations, and when to strike (once
        a tenth of the (window, pair) results are correlated)."""
        start = float(obspy.UTCDateTime(self.truth["start"]))
        return {
            "windows": tuple(window_id(start + 3600 * h) for h in range(int(self.truth["hours"]))),
            "stations": tuple(sorted(self.truth["stations"])),
            "trigger_pairs": max(10, exp.window_pairs // 10),
        }


def prepare_inputs(work: Path, stations: int, hours: int, hostile: bool) -> Inputs:
    """Synthesise the deployment (40 stations x 2 h at 50/100 Hz, no gaps) and the hostile folder."""
    synth = work / "input"
    shutil.rmtree(synth, ignore_errors=True)
    truth = synthesise(SynthConfig(stations=stations, hours=hours, rates=(50, 100), seed=1), synth)
    built = build_hostile(work / "hostile", stations=stations, hours=hours) if hostile else None
    return Inputs(synth, truth, built)


@dataclass(frozen=True)
class Timing:
    """How the input arrives and how long a run may take."""

    spread_s: float = 20.0
    timeout_s: float = 240.0


def run_scenario(
    sc: Scenario, stack: faults.PrivateStack, inputs: Inputs, work: Path, timing: Timing
) -> dict[str, Any]:
    """Run one scenario and judge it; returns its row for chaos.json (a harness error fails the row)."""
    stack.up()  # heal whatever an earlier scenario left down or frozen
    shutil.rmtree(work / sc.name, ignore_errors=True)
    hostile = inputs.hostile if sc.hostile else None
    exp = hostile.expectation() if hostile else Expectation.from_truth(inputs.truth)
    folder = hostile.folder if hostile else inputs.synth
    out = work / sc.name / "out"
    spec = RunSpec(folder, out, sc.preprocess, sc.correlate, timing.spread_s, timing.timeout_s, env=sc.env)
    lives: list[Live] = []
    try:
        fault, first_orphans = _play(sc, Ctx(stack=stack, **inputs.target(exp)), spec, lives, timing)
        outcome = evaluate(lives[-1], exp, fault)
        problems = judge(sc, outcome, fault, lives, first_orphans)
        problems += check_hostile(hostile, lives[-1].report() or {}) if hostile else []
    except Exception as exc:  # one broken scenario must not stop the others; its row says what broke
        return {"name": sc.name, "fault": sc.fault, "passed": False, "problems": [f"harness error: {exc!r}"]}
    finally:
        for each in lives:
            if each.alive():
                each.kill()
    return _row(sc, outcome, fault, problems, lives, first_orphans)


def _play(sc: Scenario, ctx: Ctx, spec: RunSpec, lives: list[Live], timing: Timing) -> tuple[Fault, list[str]]:
    """Start the run, strike, wait until it ends; for a re-run scenario, run the same command again.

    Returns:
        The fault, and the processes of the first run that outlived it (re-run scenarios only).
    """
    limit = timing.timeout_s + HARD_MARGIN_S
    ctx.live = Live(ctx.stack, spec, spec.out.parent / "run.log")
    lives.append(ctx.live)
    fault = sc.inject(ctx) if sc.inject else Fault()
    lives[0].wait(limit)
    if not sc.rerun:
        return fault, []
    first_orphans = _leftovers(lives[0])
    lives.append(Live(ctx.stack, spec, spec.out.parent / "rerun.log"))
    fault.end = lives[1].started  # recovery: from the second start to its first new pair
    lives[1].wait(limit)
    return fault, first_orphans


def _leftovers(live: Live, grace_s: float = 10.0) -> list[str]:
    """Processes of a killed run still alive after ``grace_s`` (they are killed afterwards)."""
    run_id = live.known_run_id
    left = faults.wait_gone(run_id, grace_s) if run_id else []
    faults.kill_all(left)
    return [f"{p.pid} {p.cmdline[:200]}" for p in left]


def judge(sc: Scenario, o: Outcome, fault: Fault, lives: list[Live], first_orphans: list[str]) -> list[str]:
    """Why the scenario fails (empty when it passes)."""
    problems = [n for n in fault.notes if n.startswith("not injected")]
    if o.orphans or first_orphans:
        problems.append(f"{len(o.orphans) + len(first_orphans)} orphan processes")
    # A failed run's store may hold stacks short of a window (its report lists them as missing); never one
    # stacked twice, nor one off its lag.
    wrong = o.doubled if sc.expect_failure else o.wrong_windows
    if o.off_lag or wrong:
        problems.append(f"{o.off_lag} stacks off their true lag, {wrong} with the wrong window count")
    if o.extra:
        problems.append(f"{o.extra} pairs that must not exist")
    if o.wire_duplicates:
        problems.append(f"{o.wire_duplicates} (window, pair)s announced twice")
    if o.ccfs_absent or o.ccfs_off_lag:
        problems.append(
            f"of {o.ccfs_checked} announced CCFs, {o.ccfs_absent} are not in the store, {o.ccfs_off_lag} off their lag"
        )
    problems += _judge_failure(o, fault) if sc.expect_failure else _judge_completion(o)
    if sc.rerun and len(lives) == 2 and lives[0].known_run_id != o.run_id:
        problems.append(f"the re-run did not resume run {lives[0].known_run_id} (it ran {o.run_id})")
    return problems


def _judge_completion(o: Outcome) -> list[str]:
    problems = []
    if o.exit_code != 0:
        said = f": {o.reason}" if o.reason else ""
        problems.append(("hung: killed by the harness" if o.exit_code is None else f"exit {o.exit_code}") + said)
    if not o.report:
        problems.append("no report.json")
    elif o.complete is False:
        problems.append("report says complete: false")
    if o.missing:
        problems.append(f"{o.missing} of {o.pairs_expected} pairs missing")
    return problems


def _judge_failure(o: Outcome, fault: Fault) -> list[str]:
    problems = []
    if o.exit_code in (0, None):
        problems.append("the run did not fail" if o.exit_code == 0 else "hung: killed by the harness")
    if not fault.flags.get("failed_while_down"):
        problems.append("it did not give up while Kafka was away")
    if not o.report or o.complete is not False:
        problems.append("no report.json with complete: false")
    if not any(w in (o.reason or "").lower() for w in KAFKA_WORDS):
        problems.append(f"the reason does not name Kafka: {o.reason!r}")
    if o.durable_lost:
        problems.append(f"{o.durable_lost} (window, pair)s announced before the outage are not kept in the store")
    return problems


def _row(
    sc: Scenario, o: Outcome, fault: Fault, problems: list[str], lives: list[Live], first_orphans: list[str]
) -> dict[str, Any]:
    t0 = lives[0].started
    return {
        "name": sc.name,
        "fault": sc.fault,
        "passed": not problems,
        "problems": problems,
        "deployment": {"P": sc.preprocess, "C": sc.correlate, "env": sc.env, "hostile": sc.hostile},
        "outcome": asdict(o),
        "injection": {
            "start_s": round(fault.start - t0, 1) if fault.start else None,
            "start_after_ingest_s": _after_ingest(fault, o),
            "end_s": round(fault.end - t0, 1) if fault.end else None,
            "notes": fault.notes,
            "flags": fault.flags,
            "records": {topic: len(offsets) for topic, offsets in fault.injected.items()},
        },
        "first_run": {"exit_code": lives[0].proc.returncode, "orphans": first_orphans} if sc.rerun else None,
        "logs": str(lives[-1].spec.out / "logs"),
    }


def _after_ingest(fault: Fault, o: Outcome) -> float | None:
    """When the fault struck, counted from the ingest start of the run it struck (None when unknown, or when
    the report is a re-run's, which started after the fault)."""
    if fault.start is None or o.started_at is None or fault.start < o.started_at:
        return None
    return round(fault.start - o.started_at, 1)


def select(only: list[str]) -> list[Scenario]:
    """The scenarios named in ``only`` (all when empty), with the baseline first for the makespan ratio.

    Raises:
        SystemExit: an unknown name.
    """
    names = [n for item in only for n in item.split(",") if n]
    unknown = sorted(set(names) - {s.name for s in SCENARIOS})
    if unknown:
        raise SystemExit(f"unknown scenario(s) {unknown}; see --list")
    return [s for s in SCENARIOS if not names or s.name in names or s.name == "baseline"]


def main(argv: list[str] | None = None) -> int:
    """Run the chosen scenarios on a private stack and write the results; 1 when any scenario failed."""
    args = _parser().parse_args(argv)
    if args.list:
        print("\n".join(f"{s.name:22} {s.fault}" for s in SCENARIOS))
        return 0
    scenarios = select(args.only)
    stack = faults.PrivateStack(args.work.resolve() / "stack", args.port_base)
    t0 = time.time()
    try:
        stack.check_private()
    except faults.FaultError as exc:
        _say(f"chaos: {exc}")
        return 2
    try:
        _say(f"chaos: private stack on ports {stack.ports} up in {stack.up():.1f} s")
    except StackError as exc:  # e.g. a port taken: say so, and how to pick others
        _say(f"chaos: cannot start the private stack: {exc}\nchoose other ports with --port-base")
        stack.wipe()  # stops only what this home's pid files name: what the harness itself started
        return 2
    inputs = prepare_inputs(args.work, args.stations, args.hours, any(s.hostile for s in scenarios))
    rows: list[dict[str, Any]] = []
    try:
        for sc in scenarios:
            rows.append(run_scenario(sc, stack, inputs, args.work, Timing(args.spread, args.timeout)))
            _say(chaos_report.line(rows[-1]))
    finally:
        if not args.keep_stack:
            stack.wipe()
    name = "chaos" if not args.only else "chaos-selection"
    meta = {"stations": args.stations, "hours": args.hours, "spread_s": args.spread, "timeout_s": args.timeout}
    meta["code"] = chaos_report.code_version(BENCH.parent)
    chaos_report.write(args.results / name, rows, {**meta, "total_s": round(time.time() - t0, 1)})
    failed = [r["name"] for r in rows if not r["passed"]]
    _say(
        f"chaos: {len(rows) - len(failed)}/{len(rows)} passed in {time.time() - t0:.0f} s"
        + (f"; failed: {failed}" if failed else "")
    )
    return 1 if failed else 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.splitlines()[0])
    p.add_argument("--only", action="append", default=[], help="scenario names, comma-separated (repeatable)")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument("--port-base", type=int, default=28000, help="Kafka on +92/+93, S3 on +0 (default 28000)")
    p.add_argument("--stations", type=int, default=40)
    p.add_argument("--hours", type=int, default=2)
    p.add_argument("--spread", type=float, default=20.0, help="seconds over which the input arrives")
    p.add_argument("--timeout", type=float, default=240.0, help="the runs' --timeout")
    p.add_argument("--work", type=Path, default=WORK, help="inputs, outputs, logs and the stack home")
    p.add_argument("--results", type=Path, default=BENCH / "results")
    p.add_argument("--keep-stack", action="store_true", help="leave the private stack running at the end")
    return p


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
