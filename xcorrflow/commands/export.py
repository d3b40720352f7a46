"""``xcorrflow export``: stacks or per-window CCFs of a namespace, from the object store to SAC files."""

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
        help="write a namespace's stacks (or per-window CCFs) as SAC files",
        description="Stack every pair over the windows of the CCF objects in <ns>ccf/ and write OUT/<A>__<B>.sac "
        "(default), copy the stacker's <ns>stacks/ (--from-stacks), or write every window's CCFs as "
        "OUT/ccf/<window>/<A>__<B>.sac (--ccfs). Station coordinates come from the products in <ns>prep/.",
    )
    env_flag(p, "--output", "XCORRFLOW_EXPORT_OUTPUT", None, "output folder", Path)
    p.add_argument(
        "--namespace",
        default=None,
        help="key prefix of the deployment or run, e.g. a run id (env: XCORRFLOW_NAMESPACE; default: bucket root)",
    )
    p.add_argument("--windows", default=None, help="comma-separated window ids, e.g. 20240101T000000Z (default: all)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--ccfs", action="store_true", help="per-window CCFs instead of stacks")
    what.add_argument("--from-stacks", action="store_true", help="copy the stacker's stacks/ instead of stacking")
    p.add_argument("--threads", type=int, default=8, help="parallel object-store requests")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export; returns 0, or 1 when nothing was found to export."""
    from storage import open_store
    from xcorrflow.export import export_ccfs, export_from_stacks, export_stacks

    if args.output is None:
        raise CommandError("export: --output is required")
    settings = load_settings(**({"namespace": args.namespace} if args.namespace is not None else {}))
    windows = [w.strip() for w in args.windows.split(",") if w.strip()] if args.windows else None
    if windows and args.from_stacks:
        raise CommandError("export: --windows does not apply to --from-stacks (the stacker's stacks span every window)")
    ns, store = settings.key_prefix, open_store(settings)
    t0 = time.perf_counter()
    if args.from_stacks:
        result = export_from_stacks(store, ns, args.output, threads=args.threads)
    elif args.ccfs:
        result = export_ccfs(store, ns, args.output, windows=windows, threads=args.threads)
    else:
        result = export_stacks(store, ns, args.output, settings.processing, windows=windows, threads=args.threads)
    what = "CCF files" if args.ccfs else "stacks"
    where = f"s3://{settings.s3_bucket}/{ns}"
    print(
        f"exported {len(result.files)} {what} ({result.pairs} pairs, {result.windows} windows) from {where} "
        f"to {args.output} in {time.perf_counter() - t0:.1f} s",
        file=sys.stderr,
    )
    if not result.files:
        source = "stacks/" if args.from_stacks else "ccf/"
        print(
            f"xcorrflow: nothing under {where}{source}; check --namespace (a run's namespace is its run id)",
            file=sys.stderr,
        )
        return 1
    return 0
