"""``xcorrflow run``: correlate a folder of MiniSEED files and write SAC stacks plus report.json."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from contracts.settings import Settings, load_settings
from xcorrflow.cliutil import env_flag
from xcorrflow.errors import ModeUnavailable
from xcorrflow.inprocess import run_inprocess
from xcorrflow.progress import Progress
from xcorrflow.report import Report, write_report
from xcorrflow.tuning import tune_allocator

MODES = ("streaming", "cnf", "barrier", "inprocess")
REPORT_NAME = "report.json"

# A runner takes (input_dir, output_dir, settings, progress) and returns the report; Kafka modes plug in here.
Runner = Callable[[Path, Path, Settings, Progress | None], Report]


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
        "streaming | cnf | barrier need the Kafka pipeline; inprocess needs no service",
        choices=MODES,
    )
    env_flag(p, "--input", "XCORRFLOW_RUN_INPUT", None, "folder of MiniSEED files", Path)
    env_flag(p, "--output", "XCORRFLOW_RUN_OUTPUT", None, "output folder", Path)
    p.add_argument("--no-ccfs", action="store_true", help="do not keep per-window CCFs (OUT/ccf/<window>.npz)")
    env_flag(p, "--workers", "XCORRFLOW_RUN_WORKERS", 2, "threads for the kernel's inverse FFTs", int)
    p.set_defaults(func=run)


def runner_for(mode: str, *, keep_ccfs: bool = True, workers: int | None = None) -> Runner:
    """The function that runs ``mode``.

    Raises:
        ModeUnavailable: the mode needs the Kafka pipeline, which this command does not drive yet.
    """
    if mode == "inprocess":

        def inprocess(inp: Path, out: Path, settings: Settings, progress: Progress | None) -> Report:
            return run_inprocess(inp, out, settings, progress, keep_ccfs=keep_ccfs, workers=workers)

        return inprocess
    raise ModeUnavailable(mode, "it needs the Kafka pipeline (make up); use --mode inprocess to run without it")


def run(args: argparse.Namespace) -> int:
    """Run the chosen mode and write the report; returns 0, or 1 when no pair could be correlated."""
    if args.input is None or args.output is None:
        raise ModeUnavailable(args.mode, "--input and --output are required")
    runner = runner_for(args.mode, keep_ccfs=not args.no_ccfs, workers=args.workers)
    if not args.input.is_dir():
        raise ModeUnavailable(args.mode, f"input folder {args.input} does not exist")
    settings = load_settings()
    tune_allocator()  # large temporaries are reused instead of re-faulted (see xcorrflow.tuning)
    progress = Progress(1, label=args.mode)
    report = runner(args.input, args.output, settings, progress)
    progress.close()
    write_report(args.output / REPORT_NAME, report)
    print(
        f"{report.mode}: {report.stations} channels, {report.windows} windows, {report.pairs} pairs, "
        f"{len(report.dead_letters)} dead letters, {report.makespan_s:.1f} s -> {args.output}",
        file=sys.stderr,
    )
    return 0 if report.pairs > 0 else 1
