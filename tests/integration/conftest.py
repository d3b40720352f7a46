"""Fixtures for tests against the real stack (Kafka, S3, Prometheus).

Endpoints come from ``XCORRFLOW_*`` env vars when set (``make test`` exports them after ``make up``). Otherwise
the session starts the native stack itself and stops, at the end, only what it started. Every test gets its own
topic prefix and S3 key prefix, so tests never see each other's data.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from contracts.settings import Settings, TopicNames
from contracts.topics import delete_topics, ensure_topics, topic_specs


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration needs the stack."""
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack() -> Iterator[Settings]:
    """Settings pointing at a running stack; starts the native stack when no endpoint is given."""
    settings = Settings()
    started: dict[str, str] = {}
    native = None
    if "XCORRFLOW_KAFKA_BOOTSTRAP" not in os.environ:
        from xcorrflow.localstack.manager import NativeStack

        native = NativeStack(settings, say=lambda line: print(line))
        started = native.up()
    from xcorrflow.localstack.health import check_all

    health = check_all(settings)
    down = [name for name, item in health.items() if not item["ok"]]
    if down:
        pytest.fail(f"stack services down: {down}; status: {health}. Run `make up` or see .stack/logs/")
    yield settings
    if native is not None:
        for svc in reversed(native.services):
            if started.get(svc.name) == "started":
                svc.stop()


@pytest.fixture
def unique(request: pytest.FixtureRequest) -> Iterator[str]:
    """A short unique id for topic and key prefixes; objects under ``<id>/`` are deleted afterwards."""
    name = f"t{uuid.uuid4().hex[:10]}"
    store = None
    if "stack" in request.fixturenames:
        from storage import open_store

        store = open_store(request.getfixturevalue("stack"))
    yield name
    if store is not None:
        for info in list(store.list(f"{name}/")):
            store.delete(info.key)


@pytest.fixture
def topics(stack: Settings, unique: str) -> Iterator[TopicNames]:
    """The pipeline's topics under a per-test prefix, created before and deleted after the test."""
    names = stack.topics.with_prefix(unique)
    ensure_topics(stack.bootstrap_servers, topic_specs(stack, names))
    yield names
    delete_topics(stack.bootstrap_servers, [t for t in names.model_dump().values() if t.startswith(f"{unique}.")])
