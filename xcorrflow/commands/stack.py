"""``xcorrflow stack up|down|clean-data|env|versions``: the local Kafka + S3 + Prometheus stack."""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from contracts.settings import load_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``stack`` command."""
    parser = subparsers.add_parser("stack", help="start, stop or wipe the local stack (make up/down/clean-data)")
    parser.add_argument("action", choices=["up", "down", "clean-data", "env", "versions"])
    parser.add_argument(
        "--stack",
        choices=["native", "compose"],
        default="native",
        help="native processes (default) or infra/docker-compose.yml",
    )
    parser.set_defaults(func=run)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Carry out one stack action."""
    from xcorrflow.stack.manager import NativeStack, open_stack

    settings = load_settings()
    if args.action == "env":
        # What `make test` exports so integration tests use the stack that `make up` started.
        exports = {
            "XCORRFLOW_KAFKA_BOOTSTRAP": settings.bootstrap_servers,
            "XCORRFLOW_S3_ENDPOINT": settings.s3_address,
            "XCORRFLOW_PROMETHEUS_PORT": str(settings.prometheus_port),
        }
        print("\n".join(f"export {k}={shlex.quote(v)}" for k, v in exports.items()))
        return 0
    if args.action == "versions":
        print(json.dumps(NativeStack(settings, _say).versions(), indent=2))
        return 0
    stack = open_stack(args.stack, settings, _say)
    if args.action == "up":
        stack.up()
    elif args.action == "down":
        stopped = stack.down()
        _say("stopped: " + (", ".join(k for k, v in stopped.items() if v) or "nothing was running"))
    else:
        stack.clean_data()
    return 0
