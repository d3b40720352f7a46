"""``xcorrflow plot``: the record section of a run's stacks (its results.zarr, or a folder of SAC stacks)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xcorrflow.errors import CommandError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``plot`` sub-command."""
    p = subparsers.add_parser(
        "plot",
        help="draw the record section (one CCF per row) of a folder of SAC stacks",
        description="One normalised CCF per row, sorted by inter-station distance when the SAC headers have it "
        "(else by the lag of the peak), lag in seconds on x, each peak marked. Wiggles up to 60 traces, an "
        "image above. Files that are not SAC traces are skipped and listed.",
    )
    p.add_argument(
        "input", type=Path, metavar="IN", help="a run's OUT folder or results.zarr, or a folder of <A>__<B>.sac files"
    )
    p.add_argument("--output", type=Path, default=None, help="PNG to write (default: IN/record_section.png)")
    p.add_argument("--sort", choices=["auto", "distance", "lag"], default="auto", help="row order (default: auto)")
    p.add_argument("--max-lag", type=float, default=None, help="lag range ±S seconds (default: around the peaks)")
    p.add_argument("--velocity", type=float, default=None, help="draw ±distance/V (km/s) when sorted by distance")
    p.add_argument("--title", default=None, help="figure title")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Draw the PNG; returns 0, or 1 when the folder holds no usable trace."""
    from results.plot import plot_record_section, read_any

    if not args.input.is_dir():
        raise CommandError(f"plot: {args.input} is not a folder")
    section = read_any(args.input)
    for name, reason in section.skipped:
        print(f"skipped {name}: {reason}", file=sys.stderr)
    if not len(section):
        print(f"xcorrflow: no SAC trace to plot in {args.input}", file=sys.stderr)
        return 1
    output = args.output or args.input / "record_section.png"
    try:
        summary = plot_record_section(
            section, output, sort=args.sort, max_lag=args.max_lag, velocity=args.velocity, title=args.title
        )
    except ValueError as exc:
        raise CommandError(f"plot: {exc}") from exc
    print(
        f"record section: {summary.traces} traces ({summary.style}), sorted by {summary.sorted_by}, "
        f"lags ±{summary.max_lag_s:g} s, {len(summary.skipped)} files skipped -> {summary.output}",
        file=sys.stderr,
    )
    return 0
