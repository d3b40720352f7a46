"""``xcorrflow worker <service>``: run one pipeline service on its own, scaled by starting more of them.

Every worker reads endpoints, topics and parameters from the settings (``XCORRFLOW_*`` or ``--config``), so an
operator can run each stage on other machines against the same Kafka and S3.
"""

from __future__ import annotations

import argparse
import os

from contracts.settings import Settings, load_settings
from xcorrflow.cliutil import env_flag

MODES = ["streaming", "cnf", "barrier"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``worker`` command and one sub-command per service."""
    parser = subparsers.add_parser("worker", help="run one pipeline service (broker, preprocess, ...)")
    services = parser.add_subparsers(dest="service", metavar="SERVICE", required=True)
    broker = services.add_parser("broker", help="commit broker: rules → FileReady / DirectoryCommitted")
    env_flag(broker, "--rules", "XCORRFLOW_RULES", None, "rules file (default: built-in)")
    broker.add_argument("--no-reconcile", action="store_true", help="do not list the store for lost notifications")
    broker.add_argument("--reconcile-interval", type=float, default=30.0, help="seconds between listings")
    schedule = services.add_parser("schedule", help="pair scheduler: ready files → pair tasks")
    env_flag(schedule, "--mode", "XCORRFLOW_MODE", "streaming", "when pairs are released", choices=MODES)
    schedule.add_argument("--windows", type=int, default=None, help="windows of the run (barrier mode)")
    preprocess = services.add_parser("preprocess", help="preprocess worker: raw station-windows → products")
    correlate = services.add_parser("correlate", help="correlator: pair tasks → CCFs")
    correlate.add_argument("--worker-id", default=None, help="stable id (its transactional id); default host-pid")
    correlate.add_argument("--threads", type=int, default=1, help="kernel threads per worker")
    for sub in (broker, schedule, preprocess, correlate):
        _common(sub)
    correlate.set_defaults(func=run_correlator)
    broker.set_defaults(func=run_broker)
    preprocess.set_defaults(func=run_preprocess)
    schedule.set_defaults(func=run_scheduler)
    _register_stack(services)
    _register_monitor(services)
    latency = services.add_parser("latency", help="latency tracker: raw arrival → all pairs of a station done")
    _common(latency)
    latency.set_defaults(func=run_latency)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--topic-prefix",
        default=None,
        help="use the topics under '<prefix>.' (env: XCORRFLOW_TOPIC_PREFIX; default: the plain names)",
    )
    parser.add_argument(
        "--namespace",
        default=None,
        help="key prefix of this deployment's objects (env: XCORRFLOW_NAMESPACE; default: bucket root)",
    )
    env_flag(
        parser,
        "--nice",
        "XCORRFLOW_NICE",
        0,
        "lower this worker's CPU priority by N: on a busy machine, let the stage on the critical path go first",
        convert=int,
    )


def _settings(args: argparse.Namespace) -> Settings:
    """Apply ``--nice`` to this process, then load the settings (``--namespace`` and ``--topic-prefix`` win over
    the environment)."""
    if getattr(args, "nice", 0):
        os.nice(args.nice)
    scope = {"namespace": args.namespace, "topic_prefix": args.topic_prefix}
    return load_settings(**{name: value for name, value in scope.items() if value is not None})


def run_broker(args: argparse.Namespace) -> int:
    """Run the commit broker."""
    from commit_broker.rules import DEFAULT_RULES, RuleSet
    from commit_broker.service import BrokerOptions, CommitBroker
    from xcorrflow.orchestration.workers import run_service

    settings = _settings(args)
    rules = (
        RuleSet.load(args.rules, settings.namespace) if args.rules else RuleSet.parse(DEFAULT_RULES, settings.namespace)
    )
    topics = settings.scoped_topics
    lister = None
    if not args.no_reconcile:
        from storage import open_store

        store = open_store(settings)
        lister = lambda prefix: ((o.key, o.size) for o in store.list(prefix))  # noqa: E731
    options = BrokerOptions(reconcile_interval=args.reconcile_interval, notifications=settings.s3_notifications)
    broker = CommitBroker(settings, rules, topics, lister=lister, options=options)
    return run_service("broker", broker, settings, {"files_topic": topics.files})


def run_scheduler(args: argparse.Namespace) -> int:
    """Run the pair scheduler."""
    from consumers.scheduler import PairScheduler
    from results.windows import WindowStore
    from results.zarrio import bucket_root, open_root
    from storage import open_store
    from xcorrflow.orchestration.workers import run_service

    settings = _settings(args)
    topics = settings.scoped_topics
    windows = WindowStore(open_root(bucket_root(settings), settings), settings.processing)
    scheduler = PairScheduler(
        settings, topics, args.mode, windows_expected=args.windows, store=open_store(settings), windows=windows
    )
    return run_service("scheduler", scheduler, settings, {"mode": args.mode})


def run_preprocess(args: argparse.Namespace) -> int:
    """Run one preprocess worker (start more for more throughput, up to the raw topic's partitions)."""
    from contracts.kafka import group_name
    from producers.worker import PreprocessWorker
    from storage import open_store
    from xcorrflow.orchestration.workers import run_service

    settings = _settings(args)
    topics = settings.scoped_topics
    worker = PreprocessWorker(
        settings, topics, open_store(settings), group=group_name("preprocess", settings.topic_prefix)
    )
    return run_service("preprocess", worker, settings)


def run_correlator(args: argparse.Namespace) -> int:
    """Run one correlator (start more for more throughput, up to the pairs topic's partitions)."""
    from consumers.correlator import Correlator
    from contracts.kafka import group_name
    from results.windows import WindowStore
    from results.zarrio import bucket_root, open_root
    from storage import open_store
    from xcorrflow.orchestration.workers import run_service

    settings = _settings(args)
    topics = settings.scoped_topics
    windows = WindowStore(open_root(bucket_root(settings), settings), settings.processing)
    worker = Correlator(
        settings,
        topics,
        open_store(settings),
        windows,
        group=group_name("correlate", settings.topic_prefix),
        worker_id=args.worker_id,
        threads=args.threads,
    )
    return run_service("correlate", worker, settings)


def _register_stack(services: argparse._SubParsersAction) -> None:
    stack = services.add_parser("stack", help="stacker: RowCorrelated → running stacks (zarr) in the results store")
    env_flag(
        stack,
        "--stacks",
        "XCORRFLOW_STACKS",
        None,
        "where the stacks go: s3://bucket/prefix.zarr or a local folder.zarr (default: the namespace's "
        "results.zarr in the bucket, beside the windows' CCFs)",
    )
    _common(stack)
    stack.set_defaults(func=run_stacker)


def run_stacker(args: argparse.Namespace) -> int:
    """Run the stacker (one per namespace: every task of every window feeds the stacks)."""
    from consumers.stacker import Stacker
    from results.stacks import StackStore
    from results.windows import WindowStore
    from results.zarrio import bucket_root, open_root
    from storage import open_store
    from xcorrflow.orchestration.workers import run_service

    settings = _settings(args)
    topics = settings.scoped_topics
    windows = WindowStore(open_root(bucket_root(settings), settings), settings.processing)
    root = open_root(args.stacks or bucket_root(settings), settings)
    stacks = StackStore(root, settings.processing, chunk_pairs=settings.stack_chunk_pairs)
    stacker = Stacker(settings, topics, open_store(settings), windows, stacks, memory_mb=settings.stack_memory_mb)
    return run_service("stack", stacker, settings)


def _register_monitor(services: argparse._SubParsersAction) -> None:
    monitor = services.add_parser("monitor", help="dv/v monitor: complete windows → dv/v table (zarr) and gauges")
    monitor.add_argument(
        "--stacks",
        default=os.environ.get("XCORRFLOW_STACKS"),
        help="the hierarchy that holds the stations and gets the dv/v table: s3://bucket/prefix.zarr or a local "
        "folder.zarr (env: XCORRFLOW_STACKS; default: the namespace's results.zarr in the bucket)",
    )
    _common(monitor)
    monitor.set_defaults(func=run_monitor)


def run_monitor(args: argparse.Namespace) -> int:
    """Run one dv/v monitor (members of the ``monitor`` group share the stacks topic's partitions)."""
    from consumers.dvvwork import DvvWork
    from consumers.monitor import Monitor
    from contracts.kafka import group_name
    from results.zarrio import bucket_root, open_root
    from storage import open_store
    from xcorrflow.orchestration.workers import run_service

    settings = _settings(args)
    topics = settings.topics.with_prefix(args.topic_prefix)
    windows = open_root(bucket_root(settings), settings)
    root = open_root(args.stacks or bucket_root(settings), settings)
    work = DvvWork(windows, root, open_store(settings), settings.processing, settings.dvv, settings.key_prefix)
    monitor = Monitor(settings, topics, work, group=group_name("monitor", args.topic_prefix))
    return run_service("monitor", monitor, settings)


def run_latency(args: argparse.Namespace) -> int:
    """Run the station-latency tracker (one per namespace: it must see every partition)."""
    from consumers.latency import LatencyTracker
    from contracts.kafka import group_name
    from xcorrflow.orchestration.workers import run_service

    settings = _settings(args)
    topics = settings.scoped_topics
    tracker = LatencyTracker(settings, topics, group=group_name("latency", settings.topic_prefix))
    return run_service("latency", tracker, settings)
