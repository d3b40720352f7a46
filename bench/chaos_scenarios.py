"""The scenarios of ``make chaos`` (issue 10's table) and the injection each one performs mid-run.

Every injection waits until a tenth of the run's (window, pair) results are correlated, so the fault strikes
while all stages are busy (the input arrives over ``--spread`` seconds), then does its harm and returns a
:class:`~bench.chaos_run.Fault` saying when the fault started and ended.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import faults, fuzz
from bench.chaos_run import Fault, Live
from xcorrflow.localstack.process import wait_until

KAFKA_OUTAGE_SETTING_S = 30  # faults.kafka_outage_s for the "away too long" scenario (the default is 120)
FUZZ_PER_TOPIC = 500  # x 6 topics: 3,000 mixed records


@dataclass
class Ctx:
    """What an injection works with: its stack, the real windows and stations it attacks, when to strike
    (correlated (window, pair) results), and the live run (set when the run starts)."""

    stack: faults.PrivateStack
    windows: tuple[str, ...]
    stations: tuple[str, ...]
    trigger_pairs: int
    live: Live = field(init=False)

    @property
    def target(self) -> fuzz.Target:
        """The run as a target for forged records."""
        return fuzz.Target(self.live.run_id, self.windows, self.stations)


Inject = Callable[[Ctx], Fault]


@dataclass(frozen=True)
class Scenario:
    """One row of the table: a fault, the deployment it strikes, and what counts as passing."""

    name: str
    fault: str
    inject: Inject | None = None
    preprocess: int = 2
    correlate: int = 2
    env: dict[str, str] = field(default_factory=dict)
    expect_failure: bool = False  # passes when the run fails clearly (Kafka away past the setting)
    hostile: bool = False  # runs on the hostile input folder
    rerun: bool = False  # after the fault, run the same command again: it must resume and complete


def strike(ctx: Ctx, fault: Fault) -> bool:
    """Wait for the moment to strike; False (noted in the fault) when the run ended or stalled first."""
    if ctx.live.wait_pairs(ctx.trigger_pairs):
        fault.flags["results_at_strike"] = ctx.live.pairs_seen
        return True
    fault.notes.append(f"not injected: the run {'ended' if not ctx.live.alive() else 'stalled'} first")
    fault.flags["not_injected"] = True
    return False


def at_strike(act: Callable[[Ctx, Fault], None]) -> Inject:
    """An injector that waits for the strike (:func:`strike`) and then does ``act`` to the run."""

    def inject(ctx: Ctx) -> Fault:
        fault = Fault()
        if strike(ctx, fault):
            act(ctx, fault)
        return fault

    return inject


def service_restart(service: str, down_s: float) -> Inject:
    """kill -9 of a stack service (``kafka``, ``s3``); started again after ``down_s`` seconds (a Kafka restart
    itself takes ~15 s)."""

    def act(ctx: Ctx, fault: Fault) -> None:
        fault.start = faults.kill_service(ctx.stack, service)
        time.sleep(down_s)
        fault.end = faults.restart_service(ctx.stack, service)
        fault.notes.append(f"{service} away {fault.end - fault.start:.0f} s")

    return at_strike(act)


def kafka_away_too_long(max_down_s: float) -> Inject:
    """kill -9 of the broker, kept away until the run gives up (or ``max_down_s``), then started again."""

    def act(ctx: Ctx, fault: Fault) -> None:
        fault.start = faults.kill_service(ctx.stack, "kafka")
        wait_until(lambda: not ctx.live.alive(), timeout=max_down_s, interval=0.5)
        fault.flags["failed_while_down"] = not ctx.live.alive()
        if not ctx.live.alive():
            fault.notes.append(f"the run ended {time.time() - fault.start:.0f} s after the kill")
        fault.end = faults.restart_service(ctx.stack, "kafka")
        fault.notes.append(f"kafka away {fault.end - fault.start:.0f} s")

    return at_strike(act)


def s3_freeze(frozen_s: float) -> Inject:
    """SIGSTOP of the S3 server for ``frozen_s`` seconds, then SIGCONT."""

    def act(ctx: Ctx, fault: Fault) -> None:
        fault.start = faults.freeze(ctx.stack, "s3")
        time.sleep(frozen_s)
        fault.end = faults.thaw(ctx.stack, "s3")

    return at_strike(act)


def kill_worker(service: str) -> Inject:
    """kill -9 of the busiest worker of ``service`` (the one holding work, not an idle group member)."""

    def act(ctx: Ctx, fault: Fault) -> None:
        victim = faults.busiest(faults.workers_of(ctx.live.run_id, service))
        fault.start = fault.end = faults.kill9(victim.pid)
        fault.notes.append(f"killed {service} pid {victim.pid}")

    return at_strike(act)


STACKING = b"stacking window"  # the stacker's log line once a group's intent is recorded, before its chunks
STACKER_SETTINGS = {  # groups of one 32-pair chunk: the stacker writes chunks all through the run, not only at
    "XCORRFLOW_STACK_MEMORY_MB": "1",  # the end of each window, so a kill lands mid-stacking
    "XCORRFLOW_STACK_CHUNK_PAIRS": "32",
}


def kill_stacker(ctx: Ctx) -> Fault:
    """kill -9 of the stacker right after it logs that it is stacking a group: its intent is recorded, its
    chunks are being read or written, the group's StacksUpdated is not sent yet. The run's supervisor must
    restart it, and the new one must finish the group once, neither losing nor doubling a window."""
    fault = Fault()
    if not strike(ctx, fault):
        return fault
    log = ctx.live.spec.out / "logs" / "stack.log"
    seen = _mentions(log, STACKING)
    if not wait_until(lambda: _mentions(log, STACKING) > seen or not ctx.live.alive(), timeout=120, interval=0.01):
        fault.notes.append("not injected: the stacker stacked no group within 120 s of the strike")
        fault.flags["not_injected"] = True
        return fault
    victims = faults.workers_of(ctx.live.run_id, "stack")
    if not ctx.live.alive() or len(victims) != 1:
        fault.notes.append(f"not injected: {len(victims)} stacker processes, the run alive: {ctx.live.alive()}")
        fault.flags["not_injected"] = True
        return fault
    fault.start = fault.end = faults.kill9(victims[0].pid)
    fault.notes.append(f"killed stack pid {victims[0].pid} while stacking group {_mentions(log, STACKING)}")
    return fault


def _mentions(log: Path, text: bytes) -> int:
    """How often ``text`` occurs in the file ``log`` (0 while it does not exist)."""
    try:
        return log.read_bytes().count(text)
    except OSError:
        return 0


def kill_run(ctx: Ctx, fault: Fault) -> None:
    """kill -9 of the ``xcorrflow run`` process itself (its workers must not outlive it)."""
    fault.start = fault.end = faults.kill9(ctx.live.proc.pid)
    fault.notes.append(f"killed run pid {ctx.live.proc.pid}")


def produce(make: Callable[[fuzz.Target], dict[str, list[fuzz.KeyValue]]], what: str) -> Inject:
    """Produce hostile records on the run's topics (``make`` gives them per short topic name)."""

    def act(ctx: Ctx, fault: Fault) -> None:
        fault.start = time.time()
        for short, records in make(ctx.target).items():
            topic = ctx.target.topic(short)
            fault.injected[topic] = fuzz.produce(ctx.stack.bootstrap, topic, records)
        fault.end = time.time()
        fault.notes.append(f"{sum(map(len, fault.injected.values()))} {what}")

    return at_strike(act)


def _fuzz_all(target: fuzz.Target) -> dict[str, list[fuzz.KeyValue]]:
    return {t: fuzz.malformed(target, t, FUZZ_PER_TOPIC) for t in fuzz.TOPICS}


SCENARIOS = [
    Scenario("baseline", "none (clean run)"),
    Scenario("kafka-restart", "Kafka broker kill -9, restarted at once (away ~15-20 s)", service_restart("kafka", 0)),
    Scenario(
        "kafka-outage-60s", "Kafka broker kill -9, restarted after 45 s (away ~60 s)", service_restart("kafka", 45)
    ),
    Scenario(
        "kafka-away-too-long",
        f"Kafka broker kill -9, away past faults.kafka_outage_s = {KAFKA_OUTAGE_SETTING_S} s",
        kafka_away_too_long(KAFKA_OUTAGE_SETTING_S + 90),
        env={"XCORRFLOW_FAULTS__KAFKA_OUTAGE_S": str(KAFKA_OUTAGE_SETTING_S)},
        expect_failure=True,
    ),
    Scenario("s3-restart", "S3 server kill -9, restarted after 10 s", service_restart("s3", 10)),
    Scenario("s3-freeze-10s", "S3 server frozen (SIGSTOP) 10 s", s3_freeze(10)),
    Scenario("s3-freeze-60s", "S3 server frozen (SIGSTOP) 60 s", s3_freeze(60)),
    Scenario("kill-preprocess", "kill -9 of one preprocess worker (P = 2)", kill_worker("preprocess")),
    Scenario("kill-correlator", "kill -9 of one correlator (C = 2)", kill_worker("correlate")),
    Scenario("kill-correlator-c1", "kill -9 of the only correlator (C = 1)", kill_worker("correlate"), correlate=1),
    Scenario(
        "kill-stacker",
        "kill -9 of the stacker while it stacks a group (groups of 32 pairs)",
        kill_stacker,
        env=STACKER_SETTINGS,
    ),
    Scenario("kill-run", "kill -9 of `xcorrflow run`, then the same command again", at_strike(kill_run), rerun=True),
    Scenario(
        "poison-raw",
        "one record nested 100,000 deep on the raw topic",
        produce(lambda t: {"raw": [fuzz.poison(t)]}, "poison record"),
    ),
    Scenario(
        "fuzz-all-topics",
        f"{FUZZ_PER_TOPIC * len(fuzz.TOPICS):,} mixed malformed and forged records on every input topic",
        produce(_fuzz_all, "mixed records"),
    ),
    Scenario(
        "forged-raw-arrivals",
        "200 RawFileArrived for real windows with missing, `..` or unicode raw keys",
        produce(lambda t: {"raw": fuzz.forged_raw_arrivals(t)}, "forged RawFileArrived"),
    ),
    Scenario(
        "forged-file-ready",
        "20 FileReady for products that do not exist",
        produce(lambda t: {"commits": fuzz.forged_file_ready(t)}, "forged FileReady"),
    ),
    Scenario("hostile-input", "hostile input folder (odd names, symlinks, junk, duplicates)", hostile=True),
]
