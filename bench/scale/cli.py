"""``python -m bench.scale`` (``make bench-scale``): the command line and the benchmark's matrix."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.pipeline import synth
from bench.scale.figures import service_rss
from bench.scale.report import markdown, plot, summarise
from bench.scale.runner import Limits, RunSpec, run_pipeline_once, run_science, run_transport
from bench.scale.stack import HOME, Stack, StackConfig, apply

RESULTS = Path(__file__).resolve().parent.parent / "results"
RUN_MODES = ("streaming", "cnf", "barrier", "inprocess")


def counts(text: str) -> list[int]:
    """``130,260,520`` → [130, 260, 520], ascending and without repeats.

    Raises:
        argparse.ArgumentTypeError: not a comma-separated list of station counts ≥ 2.
    """
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a list of station counts: {text!r}") from exc
    if not values or values[0] < 2:
        raise argparse.ArgumentTypeError(f"station counts must be at least 2: {text!r}")
    return values


def modes(text: str) -> list[str]:
    """``streaming,barrier`` → the modes in that order.

    Raises:
        argparse.ArgumentTypeError: an unknown mode, or none.
    """
    values = list(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
    unknown = [v for v in values if v not in RUN_MODES]
    if unknown or not values:
        raise argparse.ArgumentTypeError(f"modes are {', '.join(RUN_MODES)}; got {text!r}")
    return values


def rotated(items: list[str], rnd: int) -> list[str]:
    """The modes of round ``rnd``: each round starts one mode later, so no mode always runs first."""
    k = rnd % len(items) if items else 0
    return items[k:] + items[:k]


def format_support(help_text: str) -> tuple[list[str], str | None]:
    """The choices of ``xcorrflow run --format`` and its stated default, from ``run --help`` (([], None) if absent)."""
    # The last mention is the option's own help (the first is the usage line, which argparse wraps).
    mentions = list(re.finditer(r"--format \{([a-z0-9_,]+)\}", help_text))
    if not mentions:
        return [], None
    found = mentions[-1]
    tail = help_text[found.end() : found.end() + 400]
    default = re.search(r"default[:=]?\s*\(?['\"]?(" + found.group(1).replace(",", "|") + ")", tail)
    return found.group(1).split(","), default.group(1) if default else None


def resolve_format(requested: str | None, help_text: str) -> tuple[str | None, str]:
    """(the --format value to pass or None, what the runs write) for the flag the bench was given."""
    choices, default = format_support(help_text)
    if not choices:
        return None, "sac (this xcorrflow run has no --format)"
    if requested is None:
        return None, f"{default} (the run's default)" if default else "the run's default"
    if requested not in choices:
        raise SystemExit(f"--format {requested}: xcorrflow run accepts {', '.join(choices)}")
    return requested, requested


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m bench.scale", description="pipeline scaling benchmark (issue 11)")
    p.add_argument("--stations", type=counts, default=[130, 260, 520], help="station counts (default 130,260,520)")
    p.add_argument("--modes", type=modes, default=["streaming", "barrier", "inprocess"],
                   help="modes, interleaved in each round (default streaming,barrier,inprocess)")  # fmt: skip
    p.add_argument("--rounds", type=int, default=1, help="rounds per N (default %(default)s)")
    p.add_argument("--rate", type=int, default=100, help="raw sampling rate, Hz (default %(default)s)")
    p.add_argument("--preprocess-workers", type=int, default=1, help="P (default %(default)s, as make bench)")
    p.add_argument("--correlate-workers", type=int, default=1, help="C (default %(default)s, as make bench)")
    p.add_argument("--format", default="zarr",
                   help="xcorrflow run --format (default %(default)s: the run's own default, passed explicitly so "
                   "that XCORRFLOW_RUN_FORMAT in the environment cannot change what is measured)")  # fmt: skip
    p.add_argument("--no-science", action="store_true", help="skip the science bound")
    p.add_argument("--mem-cap-gib", type=float, default=16.0, help="memory cap of one run's processes (GiB)")
    p.add_argument("--mem-reserve-gib", type=float, default=2.0,
                   help="stop a run when the machine has less than this available (GiB)")  # fmt: skip
    p.add_argument("--run-timeout", type=float, default=1800.0, help="stop a run after this many seconds")
    p.add_argument("--results", type=Path, default=RESULTS, help="where scale.{json,md,png} go")
    p.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "xcorrflow-bench-scale")
    g = p.add_argument_group("the benchmark's own stack (started if needed, stopped at the end if started)")
    g.add_argument("--home", type=Path, default=HOME, help="its home (default bench/.data/stack)")
    g.add_argument("--kafka-port", type=int, default=27092)
    g.add_argument("--kafka-controller-port", type=int, default=27093)
    g.add_argument("--s3-port", type=int, default=27000)
    g.add_argument("--prometheus-port", type=int, default=27090)
    g.add_argument("--keep-stack", action="store_true", help="leave the stack running at the end")
    g.add_argument("--use-running-stack", action="store_true",
                   help="use the stack the XCORRFLOW_* environment names; start and stop nothing")  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the matrix and write the report."""
    args = parser().parse_args(argv)
    config = None if args.use_running_stack else StackConfig(
        args.home, args.kafka_port, args.kafka_controller_port, args.s3_port, args.prometheus_port
    )  # fmt: skip
    env = config.env(dict(os.environ)) if config else dict(os.environ)
    apply(env)
    help_text = subprocess.run([sys.executable, "-m", "xcorrflow", "run", "--help"], env=env, text=True,
                               capture_output=True).stdout  # fmt: skip
    fmt, fmt_label = resolve_format(args.format, help_text)
    data = {n: synth(n, args.rate) for n in args.stations}
    stack = Stack(config, env)
    limits = Limits(args.mem_cap_gib, args.mem_reserve_gib, args.run_timeout)
    records: list[dict[str, Any]] = []
    science: list[dict[str, Any]] = []
    t0 = time.time()
    try:
        uses_stack = any(m != "inprocess" for m in args.modes)
        if uses_stack:
            stack.up()
            for run_id in stack.delete_leftovers():
                _say(f"deleted {run_id}, left on the private stack by an interrupted benchmark")
        for n in args.stations:
            for rnd in range(args.rounds):
                if not args.no_science:
                    science.append({"n": n, "round": rnd} | run_science(data[n], env, limits, args.work))
                    _say(f"N={n} round {rnd + 1} science: {science[-1].get('core_s')} core-s "
                         f"{science[-1].get('reason') or ''}")  # fmt: skip
                    if uses_stack:  # the CCFs through S3 and back: what any run of this layout adds
                        science[-1] |= run_transport(n, env, stack, limits, args.work)
                        _say(f"N={n} round {rnd + 1} transport floor: {science[-1].get('transport_core_s')} core-s "
                             f"{science[-1].get('transport_reason') or ''}")  # fmt: skip
                for mode in rotated(args.modes, rnd):
                    spec = RunSpec(mode, data[n], args.work / f"{mode}-n{n}", args.preprocess_workers,
                                   args.correlate_workers, fmt)  # fmt: skip
                    record = {"n": n, "mode": mode, "round": rnd} | run_pipeline_once(spec, env, stack, limits)
                    record["peak_rss_mb"] = service_rss(record.get("peak_rss_mb") or {},
                                                        record.get("worker_peak_rss_mb") or {})  # fmt: skip
                    records.append(record)
                    _say(_line(record))
                    _save(args.work / "scale.partial.json", records, science)
    finally:
        if not args.keep_stack:
            stack.down()
    cfg = {
        "stations": args.stations,
        "modes": args.modes,
        "rounds": args.rounds,
        "rate_hz": args.rate,
        "P": args.preprocess_workers,
        "C": args.correlate_workers,
        "format": fmt_label,
        "cap_gib": args.mem_cap_gib,
        "reserve_gib": args.mem_reserve_gib,
        "cpus": os.cpu_count() or 1,
        "commit": _commit(),
        "elapsed_s": round(time.time() - t0, 1),
    }
    summary = summarise(records, science, cfg)
    args.results.mkdir(parents=True, exist_ok=True)
    _save(args.results / "scale.json", records, science, summary)
    (args.results / "scale.md").write_text(markdown(summary) + "\n")
    plot(summary, args.results / "scale.png")
    print(markdown(summary))
    return 0


def _line(r: dict[str, Any]) -> str:
    if r["status"] != "ok":
        return f"N={r['n']} round {r['round'] + 1} {r['mode']}: {r['status']}: {str(r.get('reason'))[:300]}"
    rss = max((r.get("peak_rss_mb") or {"-": 0.0}).items(), key=lambda kv: kv[1])
    return (
        f"N={r['n']} round {r['round'] + 1} {r['mode']}: makespan {r['makespan_s']:.1f} s, {r['pairs_per_s']} pairs/s, "
        f"{(r.get('core_s') or {}).get('total')} core-s, peak RSS {rss[1]:.0f} MiB ({rss[0]})"
    )


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _save(path: Path, records: list[dict[str, Any]], science: list[dict[str, Any]], summary: Any = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"summary": summary, "runs": records, "science": science}
    path.write_text(json.dumps(body, indent=1, default=str) + "\n")


def _commit() -> str | None:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).parent)  # fmt: skip
    return done.stdout.strip() or None
