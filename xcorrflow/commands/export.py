"""``xcorrflow export``: a result hierarchy's stacks (or per-window CCFs) as SAC files."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from contracts.settings import load_settings
from xcorrflow.cliutil import env_flag
from xcorrflow.errors import CommandError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` sub-command."""
    p = subparsers.add_parser(
        "export",
        help="write a result hierarchy's stacks (or per-window CCFs) as SAC files",
        description="Write OUT/<A>__<B>.sac for every stacked pair of a result hierarchy (results.zarr), or with "
        "--ccfs every window's CCFs as OUT/<window>/<A>__<B>.sac. Headers: b = -maxlag, delta = 1/fs, station "
        "coordinates when known, user0 = windows stacked.",
    )
    env_flag(p, "--output", "XCORRFLOW_EXPORT_OUTPUT", None, "output folder", Path)
    p.add_argument(
        "--from",
        dest="source",
        default=None,
        help="the hierarchy: a run's OUT/results.zarr, or s3://bucket/<ns>results.zarr (default: the namespace's "
        "hierarchy in the bucket)",
    )
    p.add_argument(
        "--namespace",
        default=None,
        help="key prefix of the deployment or run, e.g. a run id (env: XCORRFLOW_NAMESPACE; default: bucket root)",
    )
    p.add_argument("--format", choices=["sac"], default="sac", help="the export format (default: sac)")
    p.add_argument("--ccfs", action="store_true", help="per-window CCFs instead of stacks")
    p.add_argument("--windows", default=None, help="with --ccfs: comma-separated window ids (default: all)")
    p.add_argument("--threads", type=int, default=8, help="parallel file writes")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export; returns 0, or 1 when nothing was found to export."""
    from results.errors import ResultsError
    from results.export import export_ccfs, export_sac
    from results.zarrio import bucket_root, open_root

    if args.output is None:
        raise CommandError("export: --output is required")
    settings = load_settings(**({"namespace": args.namespace} if args.namespace is not None else {}))
    source = args.source or bucket_root(settings)
    try:
        root = open_root(source, settings, read_only=True)
    except ResultsError as exc:
        raise CommandError(f"export: {exc}") from exc
    t0 = time.perf_counter()
    if args.ccfs:
        windows = [w.strip() for w in args.windows.split(",") if w.strip()] if args.windows else None
        count = export_ccfs(root, args.output, windows, threads=args.threads)
    elif "stacks" in root:
        count = export_sac(root, args.output, threads=args.threads)
    else:
        count = 0
    what = "per-window CCF files" if args.ccfs else "stacks"
    print(
        f"exported {count} {what} from {source} to {args.output} in {time.perf_counter() - t0:.1f} s", file=sys.stderr
    )
    if not count:
        print(f"xcorrflow: nothing to export in {source}; check --from or --namespace", file=sys.stderr)
        return 1
    return 0
