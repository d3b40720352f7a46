"""``xcorrflow stack up|down|clean-data|env|versions|dashboard|images``: the local Kafka + S3 + Prometheus stack."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import urllib.error
import urllib.request

from contracts.settings import Settings, load_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``stack`` command."""
    parser = subparsers.add_parser("stack", help="start, stop or wipe the local stack (make up/down/clean-data)")
    parser.add_argument("action", choices=["up", "down", "clean-data", "env", "versions", "dashboard", "images"])
    parser.add_argument(
        "--stack",
        choices=["native", "compose"],
        default="native",
        help="native processes (default) or infra/docker-compose.yml",
    )
    parser.add_argument("--rebuild-base", action="store_true", help="images: debootstrap the Debian base image again")
    parser.set_defaults(func=run)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Carry out one stack action."""
    from xcorrflow.localstack.manager import NativeStack, open_stack

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
    if args.action == "dashboard":
        return _dashboard(settings)
    if args.action == "images":
        from xcorrflow.localstack.images import ImageBuilder

        ImageBuilder(settings, _say).build_all(rebuild_base=args.rebuild_base)
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


def _dashboard(settings: Settings) -> int:
    """Print the console's URL; exit 1 (saying how to start it) when Prometheus does not answer."""
    from xcorrflow.localstack.promconfig import console_url
    from xcorrflow.localstack.prometheus import prometheus_ready

    url = console_url(settings)
    print(url)
    if not prometheus_ready(settings.prometheus_url):
        _say(f"Prometheus does not answer at {settings.prometheus_url}: start it with `make up`")
        return 1
    try:
        with urllib.request.urlopen(url, timeout=10):
            return 0
    except (urllib.error.URLError, OSError) as exc:
        _say(
            f"Prometheus answers but does not serve the console ({exc}); it was started without the consoles: "
            "restart it with `make down && make up`"
        )
        return 1
