"""``xcorrflow ingest DIR``: upload raw MiniSEED into the store and announce it on Kafka."""

from __future__ import annotations

import argparse
import sys

from contracts.settings import load_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``ingest`` command."""
    parser = subparsers.add_parser("ingest", help="upload raw MiniSEED and emit RawFileArrived events")
    parser.add_argument("input", help="folder of MiniSEED files (station metadata: stations.csv or StationXML)")
    parser.add_argument("--follow", action="store_true", help="keep watching the folder for new files")
    parser.add_argument("--spread", type=float, default=0.0, help="spread arrivals over this many seconds")
    parser.add_argument("--shuffle-seed", type=int, default=None, help="random arrival order with this seed")
    parser.add_argument("--expected", type=int, default=None, help="stations per window (default: as found)")
    parser.add_argument("--topic-prefix", default=None, help="topics under '<prefix>.' (env: XCORRFLOW_TOPIC_PREFIX)")
    parser.add_argument("--namespace", default=None, help="key prefix of the objects (env: XCORRFLOW_NAMESPACE)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Ingest once, or follow the folder until interrupted."""
    from producers.ingest import follow_folder, ingest_folder
    from storage import open_store

    scope = {"namespace": args.namespace, "topic_prefix": args.topic_prefix}
    settings = load_settings(**{name: value for name, value in scope.items() if value is not None})
    topics = settings.scoped_topics
    store = open_store(settings)
    if args.follow:
        for report in follow_folder(settings, topics, store, args.input, stop=lambda: False, expected=args.expected):
            print(f"ingested {report.objects} station-windows, {len(report.dead_letters)} dead letters", flush=True)
        return 0
    report = ingest_folder(
        settings,
        topics,
        store,
        args.input,
        spread_s=args.spread,
        shuffle_seed=args.shuffle_seed,
        expected=args.expected,
    )
    print(
        f"ingested {report.objects} station-windows of {len(report.stations)} stations in "
        f"{len(report.windows)} windows; {len(report.dead_letters)} dead letters",
        file=sys.stderr,
    )
    for letter in report.dead_letters:
        print(f"  dead letter: {letter.source}: {letter.reason}", file=sys.stderr)
    return 0
