"""The runs ``xcorrflow run`` leaves on the stack: list them, and delete their objects and topics.

A pipeline run keeps its key namespace (``<run id>/raw|prep|ccf/…``, ``runs/<run id>/``) and its topics
(``<run id>.xcorr.*``) so that they can be inspected afterwards. They add up: a 130-station hour leaves
~400 MB of objects and 36 partitions, so benchmarks and tests delete what they made.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from contracts.kafka import connection_config
from contracts.settings import Settings
from contracts.topics import delete_topics
from storage import ObjectStore
from storage.layout import run_prefixes

RUN_ID = re.compile(r"run-\d{8}T\d{6}-[0-9a-f]{6}")


@dataclass(frozen=True)
class RunFootprint:
    """What one run left behind."""

    run_id: str
    objects: int
    topics: list[str]


def list_runs(settings: Settings) -> list[str]:
    """Run ids that still have topics on the Kafka cluster, oldest first."""
    from confluent_kafka.admin import AdminClient

    topics = AdminClient(connection_config(settings)).list_topics(timeout=30).topics
    return sorted({m.group(0) for name in topics if (m := RUN_ID.match(name))})


def delete_run(settings: Settings, store: ObjectStore, run_id: str) -> RunFootprint:
    """Delete a run's objects (its namespace and ``runs/<id>/``) and its topics.

    Raises:
        ValueError: ``run_id`` is not a run id (so no other prefix can be deleted by mistake).
    """
    if not RUN_ID.fullmatch(run_id):
        raise ValueError(f"not a run id: {run_id!r} (expected run-YYYYmmddTHHMMSS-xxxxxx)")
    count = 0
    for prefix in run_prefixes(run_id):
        for info in list(store.list(prefix)):
            store.delete(info.key)
            count += 1
    from confluent_kafka.admin import AdminClient

    topics = AdminClient(connection_config(settings)).list_topics(timeout=30).topics
    mine = [name for name in topics if name.startswith(f"{run_id}.")]
    if mine:
        delete_topics(settings, mine)
    return RunFootprint(run_id, count, mine)
