"""The ``xcorrflow`` command line.

``main(argv)`` takes a list so tests can call it directly. Sub-commands live in :mod:`xcorrflow.commands`; every
module there exposes ``register(subparsers)`` and sets ``func(args) -> int`` on its parser. Service endpoints and
processing parameters come from the settings model (``XCORRFLOW_*`` env vars or ``--config FILE``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys
from collections.abc import Sequence

from contracts.errors import XcorrflowError
from contracts.settings import use_config_file
from xcorrflow import __version__, commands
from xcorrflow.orchestration.tuning import single_threaded_blas


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every discovered sub-command."""
    parser = argparse.ArgumentParser(
        prog="xcorrflow",
        description="Streaming ambient-noise cross-correlation on Kafka and S3.",
    )
    parser.add_argument("--version", action="version", version=f"xcorrflow {__version__}")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="YAML settings file (env: XCORRFLOW_CONFIG); env vars XCORRFLOW_* win",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code."""
    # before build_parser imports the commands, and numpy with them: a service gets one BLAS thread
    single_threaded_blas(sys.argv[1:] if argv is None else argv, os.environ)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.config:
        use_config_file(args.config)
    try:
        return int(args.func(args) or 0)
    except XcorrflowError as exc:
        print(f"xcorrflow: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
