"""``xcorrflow run``: correlate a folder of MiniSEED files and write SAC stacks plus report.json."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from contracts.settings import Settings, load_settings
from xcorrflow.cliutil import env_flag
from xcorrflow.errors import ModeUnavailable

if TYPE_CHECKING:  # the science and Kafka stacks load only when a run starts, so `xcorrflow --help` stays fast
    from xcorrflow.orchestration.progress import Progress
    from xcorrflow.orchestration.report import Report

MODES = ("streaming", "cnf", "barrier", "inprocess")
FORMATS = ("zarr", "sac", "both")
REPORT_NAME = "report.json"

# A runner takes (input_dir, output_dir, settings, progress) and returns the report; Kafka modes plug in here.
Runner = Callable[[Path, Path, Settings, "Progress | None"], "Report"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``run`` sub-command."""
    p = subparsers.add_parser(
        "run",
        help="correlate a folder of MiniSEED files into SAC stacks",
        description="Correlate every pair of channels in a folder of MiniSEED files. Writes OUT/<A>__<B>.sac "
        "and OUT/report.json. DSP parameters come from the settings (--config, XCORRFLOW_PROCESSING__*).",
    )
    env_flag(
        p,
        "--mode",
        "XCORRFLOW_RUN_MODE",
        "streaming",
        "streaming | cnf | barrier run the Kafka pipeline (make up); inprocess needs no service",
        choices=MODES,
    )
    env_flag(p, "--input", "XCORRFLOW_RUN_INPUT", None, "folder of MiniSEED files", Path)
    env_flag(p, "--output", "XCORRFLOW_RUN_OUTPUT", None, "output folder", Path)
    env_flag(
        p,
        "--format",
        "XCORRFLOW_RUN_FORMAT",
        "zarr",
        "what OUT gets: zarr (OUT/results.zarr, opened by xarray), sac (OUT/<A>__<B>.sac), or both",
        choices=FORMATS,
    )
    p.add_argument(
        "--dvv",
        action="store_true",
        help="also measure dv/v (settings dvv.*): results.zarr/dvv, OUT/dvv_network.csv and OUT/dvv_pairs.csv; "
        "pipeline modes start the monitor worker",
    )
    p.add_argument("--no-ccfs", action="store_true", help="inprocess: do not keep per-window CCFs in results.zarr")
    env_flag(p, "--workers", "XCORRFLOW_RUN_WORKERS", 2, "inprocess: threads for the kernel's inverse FFTs", int)
    env_flag(p, "--preprocess-workers", "XCORRFLOW_RUN_PREPROCESS_WORKERS", 1, "pipeline: preprocess workers", int)
    env_flag(p, "--correlate-workers", "XCORRFLOW_RUN_CORRELATE_WORKERS", 1, "pipeline: correlators", int)
    p.add_argument("--spread", type=float, default=0.0, help="pipeline: ingest the files over this many seconds")
    p.add_argument("--shuffle-seed", type=int, default=None, help="pipeline: random arrival order with this seed")
    p.add_argument("--timeout", type=float, default=3600.0, help="pipeline: give up after this many seconds")
    p.add_argument(
        "--cleanup", action="store_true", help="pipeline: delete the run's objects and topics once OUT is written"
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="pipeline: start a new run even if OUT holds an unfinished one (by default the same command resumes it)",
    )
    p.set_defaults(func=run)


def runner_for(mode: str, args: argparse.Namespace) -> Runner:
    """The function that runs ``mode`` with the command's options."""
    formats = ("zarr", "sac") if args.format == "both" else (args.format,)
    if mode == "inprocess":
        from xcorrflow.orchestration.inprocess import run_inprocess

        def inprocess(inp: Path, out: Path, settings: Settings, progress: Progress | None) -> Report:
            if args.dvv and args.no_ccfs:
                raise ModeUnavailable(mode, "--dvv measures the per-window CCFs: drop --no-ccfs")
            report = run_inprocess(
                inp, out, settings, progress, keep_ccfs=not args.no_ccfs, workers=args.workers, formats=formats
            )
            if args.dvv:
                _inprocess_dvv(out, settings, report)
            return report

        return inprocess
    from xcorrflow.orchestration.pipeline import RunOptions, run_pipeline

    options = RunOptions(
        mode=mode,
        preprocess_workers=args.preprocess_workers,
        correlate_workers=args.correlate_workers,
        spread_s=args.spread,
        shuffle_seed=args.shuffle_seed,
        timeout_s=args.timeout,
        cleanup=args.cleanup,
        fresh=args.fresh,
        formats=formats,
        dvv=args.dvv,
    )

    def pipeline(inp: Path, out: Path, settings: Settings, progress: Progress | None) -> Report:
        _require_stack(settings, mode)
        return run_pipeline(inp, out, settings, progress, options)

    return pipeline


def _inprocess_dvv(out: Path, settings: Settings, report: Report) -> None:
    """Measure the run's windows and write the two CSV files (see :mod:`xcorrflow.orchestration.dvvout`)."""
    import time

    from results.zarrio import open_root
    from storage.layout import RESULTS_ROOT
    from xcorrflow.orchestration.dvvout import check_reference, measure_inprocess, write_csvs

    t0 = time.perf_counter()
    check_reference(settings, report.windows)
    root = open_root(out / RESULTS_ROOT)
    report.outputs["dvv"] = measure_inprocess(root, settings)
    write_csvs(root, out, settings.dvv_csv_method)
    report.timings_s["dvv"] = round(time.perf_counter() - t0, 6)


def _require_stack(settings: Settings, mode: str) -> None:
    """Fail early, with the fix, when the stack is not running."""
    from xcorrflow.localstack.health import check_all

    down = [name for name, item in check_all(settings).items() if not item["ok"] and name != "prometheus"]
    if down:
        raise ModeUnavailable(mode, f"{', '.join(down)} not reachable; start the stack with `make up`")


def run(args: argparse.Namespace) -> int:
    """Run the chosen mode and write the report; returns 0 when the run is complete, 1 otherwise."""
    if args.input is None or args.output is None:
        raise ModeUnavailable(args.mode, "--input and --output are required")
    runner = runner_for(args.mode, args)
    if not args.input.is_dir():
        raise ModeUnavailable(args.mode, f"input folder {args.input} does not exist")
    from xcorrflow.orchestration.progress import Progress
    from xcorrflow.orchestration.report import write_report
    from xcorrflow.orchestration.tuning import tune_allocator

    settings = load_settings()
    tune_allocator()  # large temporaries are reused instead of re-faulted (see xcorrflow.orchestration.tuning)
    progress = Progress(1, label=args.mode)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a stopped run still writes its report
    try:
        report = runner(args.input, args.output, settings, progress)
    finally:
        signal.signal(signal.SIGTERM, previous)
        progress.close()
    write_report(args.output / REPORT_NAME, report)
    state = "" if report.complete else f" INCOMPLETE ({report.reason})"
    print(
        f"{report.mode}: {report.stations} channels, {report.windows} windows, {report.pairs} pairs, "
        f"{len(report.dead_letters)} dead letters, {report.makespan_s:.1f} s -> {args.output}{state}",
        file=sys.stderr,
    )
    return 0 if report.complete and report.pairs > 0 else 1


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt
