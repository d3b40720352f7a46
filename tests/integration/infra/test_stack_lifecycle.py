"""`make up` is idempotent, `make down` stops exactly what it started, and data survives down/up.

Runs a second, private stack on other ports and in a temporary home, so the shared stack is untouched.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from contracts.kafka import connection_config
from contracts.settings import Settings
from contracts.topics import TopicSpec, ensure_topics
from xcorrflow.localstack import process
from xcorrflow.localstack.health import check_all
from xcorrflow.localstack.manager import NativeStack


@pytest.mark.slow
def test_private_stack_up_idempotent_down_and_persistent(stack: Settings, tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path / "stack",
        kafka_port=29192,
        kafka_controller_port=29193,
        s3_port=29100,
        prometheus_port=29190,
        kafka_bootstrap=None,
        s3_endpoint=None,
    )
    lines: list[str] = []
    native = NativeStack(settings, say=lines.append)
    try:
        assert native.up() == {"kafka": "started", "s3": "started", "prometheus": "started"}
        assert all(item["ok"] for item in check_all(settings).values())
        assert native.up() == {"kafka": "running", "s3": "running", "prometheus": "running"}, "up is idempotent"
        ensure_topics(settings.bootstrap_servers, [TopicSpec("persisted", 2)])
        pids = [process.read_pid_file(svc.pid_file) for svc in native.services]

        assert native.down() == {"prometheus": True, "s3": True, "kafka": True}
        for record in pids:
            assert record is not None and not process.is_alive(record)
        for svc in native.services:
            for host, port in svc.endpoints():
                assert not process.port_open(host, port), f"{svc.name} still listens on {port}"
        assert native.down() == {"prometheus": False, "s3": False, "kafka": False}, "down twice is harmless"

        native.up()
        topics = AdminClient(connection_config(settings)).list_topics(timeout=10).topics
        assert "persisted" in topics, "Kafka data must survive down/up"
    finally:
        native.clean_data()
    assert not (tmp_path / "stack").exists()
