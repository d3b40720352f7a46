"""``xcorrflow dvv plot``: the dv/v time series of a run's table (results.zarr/dvv) as a PNG."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xcorrflow.errors import CommandError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``dvv`` command and its ``plot`` sub-command."""
    parser = subparsers.add_parser("dvv", help="dv/v monitoring results (plot)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = actions.add_parser(
        "plot",
        help="draw the dv/v time series, per pair and for the network, with error bars",
        description="Network dv/v (weighted median of the pairs, both coda sides) per method with 1-sigma error "
        "bars, over the pairs' values, in window order. Reads results.zarr/dvv (the newest series by default).",
    )
    p.add_argument("input", type=Path, metavar="IN", help="a run's OUT folder or its results.zarr")
    p.add_argument("--output", type=Path, default=None, help="PNG to write (default: IN/dvv.png)")
    p.add_argument("--series", default=None, help="the series (reference) to draw (default: the newest)")
    p.add_argument("--truth", type=Path, default=None, help="a synth truth.json: draw the true dv/v too")
    p.set_defaults(func=plot)


def plot(args: argparse.Namespace) -> int:
    """Draw the PNG; returns 0."""
    from results.dvvplot import plot_dvv
    from results.errors import ResultsError
    from results.zarrio import open_root
    from storage.layout import RESULTS_ROOT

    path = args.input / RESULTS_ROOT if (args.input / RESULTS_ROOT).is_dir() else args.input
    output = args.output or (args.input if args.input.suffix != ".zarr" else args.input.parent) / "dvv.png"
    try:
        summary = plot_dvv(open_root(path, read_only=True), output, series=args.series, truth=args.truth)
    except (ResultsError, ValueError) as exc:
        raise CommandError(f"dvv plot: {exc}") from exc
    print(f"dv/v: {summary}", file=sys.stderr)
    return 0
