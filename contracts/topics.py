"""The topics of the pipeline (DESIGN.md §1) and their idempotent creation with the AdminClient."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from contracts.errors import ServiceUnavailable, XcorrflowError
from contracts.settings import Settings, TopicNames


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its name, partition count and topic-level configs."""

    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)

    @property
    def compacted(self) -> bool:
        """True for topics that hold state (latest value per key)."""
        return self.config.get("cleanup.policy") == "compact"


class TopicError(XcorrflowError):
    """A topic could not be created or has an incompatible layout."""


COMPACT = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1", "segment.ms": "600000"}


def topic_specs(settings: Settings, topics: TopicNames | None = None) -> list[TopicSpec]:
    """The pipeline's topics with partition counts from the settings.

    Args:
        settings: supplies partition counts.
        topics: topic names to use instead of ``settings.topics`` (e.g. a run's prefixed names).

    Returns:
        One spec per topic; the state topics are compacted.
    """
    names = topics or settings.topics
    parts = settings.partitions
    return [
        TopicSpec(names.raw, parts.raw),
        TopicSpec(names.files, parts.files),
        TopicSpec(names.commits, parts.commits),
        TopicSpec(names.pairs, parts.pairs),
        TopicSpec(names.results, parts.results),
        TopicSpec(names.dlq, parts.dlq),
        TopicSpec(names.s3_events, 1),  # the S3 server writes every notification to one partition anyway
        TopicSpec(names.broker_state, parts.state, dict(COMPACT)),
        TopicSpec(names.scheduler_state, parts.state, dict(COMPACT)),
        TopicSpec(names.stacks, parts.results),
        TopicSpec(names.stacker_state, parts.state, dict(COMPACT)),
    ]


def ensure_topics(
    kafka: Settings | str, specs: Iterable[TopicSpec], *, replication: int = 1, timeout: float = 30.0
) -> dict[str, str]:
    """Create the topics that do not exist yet. Existing topics are left alone.

    Args:
        kafka: the settings (their connection), or a plaintext bootstrap string.
        specs: the topics wanted.
        replication: replication factor of new topics.
        timeout: seconds to wait for the broker.

    Returns:
        ``{topic: "created" | "exists"}``.

    Raises:
        ServiceUnavailable: Kafka did not answer.
        TopicError: a topic could not be created, or exists with fewer partitions than wanted.
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    from contracts.kafka import connection_config

    config = connection_config(kafka)
    admin = AdminClient(config)
    try:
        existing = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise ServiceUnavailable("kafka", config["bootstrap.servers"], str(exc)) from exc
    wanted = list(specs)
    outcome: dict[str, str] = {}
    missing = []
    for spec in wanted:
        if spec.name in existing:
            have = len(existing[spec.name].partitions)
            if have < spec.partitions:
                raise TopicError(f"topic {spec.name} has {have} partitions, {spec.partitions} wanted")
            outcome[spec.name] = "exists"
        else:
            missing.append(
                NewTopic(
                    spec.name,
                    num_partitions=spec.partitions,
                    replication_factor=replication,
                    config=spec.config,
                )
            )
    if not missing:
        return outcome
    for name, future in admin.create_topics(missing, request_timeout=timeout).items():
        try:
            future.result()
            outcome[name] = "created"
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # a concurrent creator won the race
                raise TopicError(f"cannot create topic {name}: {exc}") from exc
            outcome[name] = "exists"
    return outcome


def delete_topics(kafka: Settings | str, names: Iterable[str], timeout: float = 30.0) -> None:
    """Delete topics (tests and per-run cleanup); missing topics are ignored.

    Args:
        kafka: the settings (their connection), or a plaintext bootstrap string.
        names: the topics.
        timeout: seconds to wait for the broker.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    from contracts.kafka import connection_config

    admin = AdminClient(connection_config(kafka))
    for future in admin.delete_topics(list(names), request_timeout=timeout).values():
        with contextlib.suppress(KafkaException):
            future.result()
