"""``xcorrflow runs list|delete``: the topics and objects earlier pipeline runs left on the stack."""

from __future__ import annotations

import argparse

from contracts.settings import load_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``runs`` command."""
    parser = subparsers.add_parser("runs", help="list or delete what earlier pipeline runs left on the stack")
    parser.add_argument("action", choices=["list", "delete"])
    parser.add_argument("run_ids", nargs="*", help="runs to delete (run-YYYYmmddTHHMMSS-xxxxxx)")
    parser.add_argument("--all", action="store_true", help="delete every run found")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """List runs, or delete the named ones (or all)."""
    from storage import open_store
    from xcorrflow.orchestration.runs import delete_run, list_runs

    settings = load_settings()
    if args.action == "list":
        for run_id in list_runs(settings):
            print(run_id)
        return 0
    targets = list_runs(settings) if args.all else args.run_ids
    store = open_store(settings)
    for run_id in targets:
        gone = delete_run(settings, store, run_id)
        print(f"{run_id}: deleted {gone.objects} objects and {len(gone.topics)} topics")
    return 0
