"""``xcorrflow topics create|list``: the pipeline's topics (DESIGN.md §1), created idempotently."""

from __future__ import annotations

import argparse

from contracts.settings import load_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``topics`` command."""
    parser = subparsers.add_parser("topics", help="create or list the pipeline's Kafka topics")
    parser.add_argument("action", choices=["create", "list"])
    parser.add_argument("--prefix", default="", help="create the topics under '<prefix>.' (isolated runs)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Create or list the topics."""
    from contracts.topics import ensure_topics, topic_specs

    settings = load_settings()
    specs = topic_specs(settings, settings.topics.with_prefix(args.prefix))
    if args.action == "list":
        for spec in specs:
            print(f"{spec.name:<32} partitions={spec.partitions:<3} {'compacted' if spec.compacted else ''}")
        return 0
    outcome = ensure_topics(settings, specs, replication=settings.kafka_replication)
    for name, state in outcome.items():
        print(f"{name:<32} {state}")
    return 0
