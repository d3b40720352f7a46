"""``make bench``: streaming vs CnF vs barrier vs the in-process ideal, on the paper's problem size.

Data: a synthetic 130-station hour (8,385 pairs), raw input at 100 Hz. Every Kafka mode gets the same workers
(P preprocessors, C correlators), deployed before the clock starts. Scenarios: ``batch`` (every raw file is
there at the start) and ``live`` (the files arrive over 60 s in random order). Runs are interleaved, mode
after mode, for several rounds; the report quotes medians and in-run ratios. Each run is a separate
``xcorrflow run`` process, so what one run leaves in memory cannot help or hurt the next.

Writes ``bench/results/pipeline.json``, ``pipeline.md`` and ``pipeline.png`` (cumulative pairs vs time).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
DATA = Path(__file__).parent / ".data"
KAFKA_MODES = ("barrier", "cnf", "streaming")


def synth(stations: int, rate: int) -> Path:
    """The benchmark deployment (cached between runs)."""
    folder = DATA / f"syn{stations}x1h@{rate}"
    if not (folder / "truth.json").exists():
        shutil.rmtree(folder, ignore_errors=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "xcorrflow",
                "synth",
                str(folder),
                "--stations",
                str(stations),
                "--hours",
                "1",
                "--rates",
                str(rate),
                "--seed",
                "2026",
            ],
            check=True,
        )
    return folder


def run_once(mode: str, data: Path, out: Path, *, p: int = 1, c: int = 1, spread: float = 0.0) -> dict[str, Any]:
    """One ``xcorrflow run``; returns its report plus the process's own peak RSS and CPU time."""
    shutil.rmtree(out, ignore_errors=True)
    args = [sys.executable, "-m", "xcorrflow", "run", "--mode", mode, "--input", str(data), "--output", str(out)]
    if mode != "inprocess":
        args += ["--preprocess-workers", str(p), "--correlate-workers", str(c), "--timeout", "900", "--cleanup"]
        if spread:
            args += ["--spread", str(spread), "--shuffle-seed", "7"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise RuntimeError(f"{mode} run failed (status {status}); see {out}/logs")
    report = json.loads((out / "report.json").read_text())
    report["run_process"] = {
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
    }
    shutil.rmtree(out, ignore_errors=True)  # 8,385 SAC files per run: keep the disk and the page cache clean
    return report


def figures(report: dict[str, Any]) -> dict[str, Any]:
    """The figures the table quotes for one run."""
    t = report.get("timings_s", {})
    makespan = report["makespan_s"]
    rss = dict(report.get("outputs", {}).get("peak_rss_mb") or {})
    rss["run"] = report["run_process"]["peak_rss_mb"]
    return {
        "makespan_s": makespan,
        "first_result_s": report["first_result_s"],
        "first_after_two_arrivals_s": t.get("first_result_after_two_arrivals"),
        "last_arrival_to_last_pair_s": t.get("last_arrival_to_last_pair"),
        "pairs_per_s": round(report["pairs"] / makespan, 1),
        "t_prep_s": t.get("last_ready"),
        "t_last_pair_s": t.get("last_pair"),
        "peak_rss_mb": rss,
        "pairs": report["pairs"],
        # the in-process run persists all pairs of a window at once: they are done when its CCF file lands
        "pair_times_s": report.get("pair_times_s") or [report["first_result_s"]] * report["pairs"],
    }


def median(runs: list[dict[str, Any]], key: str) -> float | None:
    """Median of a figure over rounds (None when absent)."""
    values = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(values), 3) if values else None


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the report files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=130)
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--live-spread", type=float, default=60.0)
    parser.add_argument("--no-live", action="store_true", help="skip the live scenario")
    parser.add_argument("--no-scaling", action="store_true", help="skip the C=2 and P=2 rows")
    args = parser.parse_args(argv)
    data = synth(args.stations, args.rate)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "xcorrflow-bench"
    results: dict[str, dict[str, list[dict[str, Any]]]] = {"batch": {}, "live": {}, "scaling": {}}
    t0 = time.time()
    for rnd in range(args.rounds):
        for mode in (*KAFKA_MODES, "inprocess"):
            _record(results["batch"], mode, run_once(mode, data, work / mode), rnd)
        if not args.no_live:
            for mode in KAFKA_MODES:
                _record(results["live"], mode, run_once(mode, data, work / mode, spread=args.live_spread), rnd)
        if not args.no_scaling:
            for label, p, c in (
                ("streaming P1 C2", 1, 2),
                ("streaming P2 C1", 2, 1),
                ("barrier P1 C2", 1, 2),
                ("barrier P2 C1", 2, 1),
            ):
                mode = label.split()[0]
                _record(results["scaling"], label, run_once(mode, data, work / mode, p=p, c=c), rnd)
    summary = summarise(results, args, time.time() - t0)
    write_outputs(summary, results)
    print(markdown(summary))
    return 0


def _record(table: dict[str, list[dict[str, Any]]], mode: str, report: dict[str, Any], rnd: int) -> None:
    table.setdefault(mode, []).append(figures(report))
    print(
        f"round {rnd + 1} {mode}: makespan {report['makespan_s']:.1f} s, first CCF {report['first_result_s']} s",
        file=sys.stderr,
        flush=True,
    )


def summarise(results: dict[str, Any], args: argparse.Namespace, elapsed: float) -> dict[str, Any]:
    """Medians per mode and scenario, in-run ratios, and the streaming bound from the stage times."""
    out: dict[str, Any] = {
        "config": {
            "stations": args.stations,
            "pairs": args.stations * (args.stations - 1) // 2,
            "rate_hz": args.rate,
            "rounds": args.rounds,
            "live_spread_s": args.live_spread,
            "P": 1,
            "C": 1,
            "cpus": os.cpu_count(),
        },
        "elapsed_s": round(elapsed, 1),
    }
    for scenario, modes in results.items():
        out[scenario] = {
            mode: {
                key: median(runs, key)
                for key in (
                    "makespan_s",
                    "first_result_s",
                    "first_after_two_arrivals_s",
                    "last_arrival_to_last_pair_s",
                    "pairs_per_s",
                    "t_prep_s",
                    "t_last_pair_s",
                )
            }
            | {"peak_rss_mb": _max_rss(runs)}
            for mode, runs in modes.items()
        }
    batch = results["batch"]
    if "barrier" in batch and "streaming" in batch:
        out["ratios"] = _ratios(batch)
    return out


def _max_rss(runs: list[dict[str, Any]]) -> dict[str, float]:
    services: dict[str, float] = {}
    for run in runs:
        for name, mb in run["peak_rss_mb"].items():
            if mb is not None:
                services[name] = max(services.get(name, 0.0), mb)
    return services


def _ratios(batch: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """In-run ratios (each round's own streaming vs barrier vs ideal), then their medians."""
    rounds = range(min(len(v) for v in batch.values()))
    stream_barrier = [batch["streaming"][i]["makespan_s"] / batch["barrier"][i]["makespan_s"] for i in rounds]
    cnf_barrier = [batch["cnf"][i]["makespan_s"] / batch["barrier"][i]["makespan_s"] for i in rounds]
    stream_ideal = [batch["streaming"][i]["makespan_s"] / batch["inprocess"][i]["makespan_s"] for i in rounds]
    # Stage times from the barrier runs: phase 1 ends at the last FileReady, phase 2 at the last pair.
    t_prep = [batch["barrier"][i]["t_prep_s"] for i in rounds]
    t_xcorr = [batch["barrier"][i]["makespan_s"] - batch["barrier"][i]["t_prep_s"] for i in rounds]
    bound = [max(a, b) / (a + b) for a, b in zip(t_prep, t_xcorr, strict=True)]
    return {
        "streaming_over_barrier": round(statistics.median(stream_barrier), 3),
        "cnf_over_barrier": round(statistics.median(cnf_barrier), 3),
        "streaming_over_ideal": round(statistics.median(stream_ideal), 3),
        "t_prep_s": round(statistics.median(t_prep), 3),
        "t_xcorr_s": round(statistics.median(t_xcorr), 3),
        "bound_max_over_sum": round(statistics.median(bound), 3),
        "per_round": {
            "streaming_over_barrier": [round(x, 3) for x in stream_barrier],
            "streaming_over_ideal": [round(x, 3) for x in stream_ideal],
        },
    }


def markdown(summary: dict[str, Any]) -> str:
    """The results as a markdown table."""
    c = summary["config"]
    lines = [
        f"Synthetic {c['stations']} stations x 1 h at {c['rate_hz']} Hz ({c['pairs']} pairs), "
        f"{c['rounds']} interleaved rounds, medians; {c['cpus']} CPUs; P = 1, C = 1 unless stated.",
        "",
    ]
    head = (
        "| scenario | mode | makespan s | first CCF s | first CCF after 2nd arrival s | last arrival → last pair s "
        "| pairs/s | peak RSS MiB (largest service) |"
    )
    lines += [head, "|" + "---|" * 8]
    for scenario in ("batch", "live", "scaling"):
        for mode, f in summary.get(scenario, {}).items():
            rss = max(f["peak_rss_mb"].items(), key=lambda kv: kv[1]) if f["peak_rss_mb"] else ("", 0)
            lines.append(
                f"| {scenario} | {mode} | {f['makespan_s']} | {f['first_result_s']} | "
                f"{_fmt(f['first_after_two_arrivals_s'])} | {_fmt(f['last_arrival_to_last_pair_s'])} | "
                f"{f['pairs_per_s']} | {rss[1]} ({rss[0]}) |"
            )
    r = summary.get("ratios")
    if r:
        lines += [
            "",
            f"In-run ratios (batch): streaming/barrier **{r['streaming_over_barrier']}** against the bound "
            f"max(T_prep, T_xcorr)/(T_prep + T_xcorr) = **{r['bound_max_over_sum']}** "
            f"(T_prep = {r['t_prep_s']} s, T_xcorr = {r['t_xcorr_s']} s from the barrier runs); "
            f"cnf/barrier {r['cnf_over_barrier']}; streaming/ideal **{r['streaming_over_ideal']}**.",
        ]
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value}"


def write_outputs(summary: dict[str, Any], results: dict[str, Any]) -> None:
    """pipeline.json (summary + every run's figures), pipeline.md and pipeline.png."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    slim = {
        s: {m: [{k: v for k, v in run.items() if k != "pair_times_s"} for run in runs] for m, runs in modes.items()}
        for s, modes in results.items()
    }
    (RESULTS / "pipeline.json").write_text(json.dumps({"summary": summary, "runs": slim}, indent=1) + "\n")
    (RESULTS / "pipeline.md").write_text(markdown(summary) + "\n")
    plot(results, RESULTS / "pipeline.png")


def plot(results: dict[str, Any], path: Path) -> None:
    """Cumulative pairs completed against time, one line per mode (the median-makespan round)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = [s for s in ("batch", "live") if results.get(s)]
    fig, axes = plt.subplots(1, len(scenarios), figsize=(6.5 * len(scenarios), 4.5), squeeze=False)
    for ax, scenario in zip(axes[0], scenarios, strict=True):
        for mode, runs in results[scenario].items():
            ordered = sorted(runs, key=lambda r: r["makespan_s"])
            run = ordered[len(ordered) // 2]
            times = run["pair_times_s"]
            ax.step(
                [0, *times, run["makespan_s"]],
                [0, *range(1, len(times) + 1), len(times)],
                where="post",
                label=f"{mode} ({run['makespan_s']:.1f} s)",
            )
        ax.set_title(f"{scenario}: pairs correlated over time")
        ax.set_xlabel("seconds since ingest started")
        ax.set_ylabel("pairs done")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
