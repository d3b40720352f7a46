"""``xcorrflow status [--json]``: endpoint and health of Kafka, S3 and Prometheus; non-zero when one is down."""

from __future__ import annotations

import argparse
import json

from contracts.settings import load_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``status`` command."""
    parser = subparsers.add_parser("status", help="health of the services the settings point at")
    parser.add_argument("--json", action="store_true", help="print JSON (what scripts should parse)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the status; exit 1 when any service is down."""
    from xcorrflow.localstack.health import check_all

    report = check_all(load_settings())
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name, item in report.items():
            endpoint = item.get("bootstrap") or item.get("endpoint") or item.get("url")
            print(f"{name:<11} {'ok' if item['ok'] else 'DOWN':<5} {endpoint}")
    return 0 if all(item["ok"] for item in report.values()) else 1
