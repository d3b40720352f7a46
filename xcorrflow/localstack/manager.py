"""``make up`` / ``make down``: the local stack as native processes, or the docker compose stack."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from typing import Any

from contracts.settings import Settings
from contracts.topics import ensure_topics, topic_specs
from xcorrflow.localstack.errors import StackError
from xcorrflow.localstack.health import check_all, ensure_bucket
from xcorrflow.localstack.kafka import KafkaService
from xcorrflow.localstack.prometheus import PrometheusService
from xcorrflow.localstack.s3 import VersityGatewayService
from xcorrflow.localstack.service import INFRA, Say, Service, StackPaths

COMPOSE_FILE = INFRA / "docker-compose.yml"


class NativeStack:
    """Kafka, versitygw and Prometheus as processes of this machine, tracked by pid files."""

    def __init__(self, settings: Settings, say: Say = print) -> None:
        self.settings = settings
        self.paths = StackPaths.from_settings(settings)
        self.say = say
        self.kafka = KafkaService(settings, self.paths, say)
        self.s3 = VersityGatewayService(settings, self.paths, say)
        self.prometheus = PrometheusService(settings, self.paths, say)

    @property
    def services(self) -> list[Service]:
        """Services in start order (the S3 server sends notifications to Kafka, so Kafka comes first)."""
        return [self.kafka, self.s3, self.prometheus]

    def up(self) -> dict[str, str]:
        """Start every service that is not running; idempotent.

        Returns:
            ``{service: "started" | "running"}``.
        """
        t0 = time.monotonic()
        outcome = {"kafka": self.kafka.start()}
        created = ensure_topics(
            self.settings,
            topic_specs(self.settings),
            replication=self.settings.kafka_replication,
        )
        if any(v == "created" for v in created.values()):
            self.say(f"kafka: created topics {', '.join(k for k, v in created.items() if v == 'created')}")
        outcome["s3"] = self.s3.start()
        outcome["prometheus"] = self.prometheus.start()
        self.say(f"stack up in {time.monotonic() - t0:.1f} s: " + ", ".join(f"{k} {v}" for k, v in outcome.items()))
        return outcome

    def down(self) -> dict[str, bool]:
        """Stop what this stack started, in reverse order. Returns ``{service: was_running}``."""
        return {svc.name: svc.stop() for svc in reversed(self.services)}

    def clean_data(self) -> None:
        """Stop the stack and delete its data, logs and pid files (the download cache stays)."""
        self.down()
        shutil.rmtree(self.paths.home, ignore_errors=True)
        self.say(f"removed {self.paths.home}")

    def versions(self) -> dict[str, str]:
        """Version of each service."""
        return {svc.name: svc.version() for svc in self.services}


class ComposeStack:
    """The same services from infra/docker-compose.yml (Kafka, MinIO, Prometheus, Grafana), for Docker users."""

    def __init__(self, settings: Settings, say: Say = print) -> None:
        self.settings = settings
        self.say = say

    def _compose(self, *args: str) -> None:
        if shutil.which("docker") is None:
            raise StackError("STACK=compose needs Docker with the compose plugin; use the native stack instead")
        s = self.settings
        env = {
            "XCORRFLOW_KAFKA_PORT": str(s.kafka_port),
            "XCORRFLOW_KAFKA_CONTROLLER_PORT": str(s.kafka_controller_port),
            "XCORRFLOW_S3_PORT": str(s.s3_port),
            "XCORRFLOW_S3_ACCESS_KEY": s.s3_access_key.get_secret_value(),
            "XCORRFLOW_S3_SECRET_KEY": s.s3_secret_key.get_secret_value(),
            "XCORRFLOW_PROMETHEUS_PORT": str(s.prometheus_port),
            "XCORRFLOW_GRAFANA_PORT": str(s.grafana_port),
            "XCORRFLOW_TARGETS_DIR": str(s.targets_dir),
        }
        result = subprocess.run(
            ["docker", "compose", "-f", str(COMPOSE_FILE), *args], env={**os.environ, **env}, check=False
        )
        if result.returncode != 0:
            raise StackError(f"docker compose {' '.join(args)} failed (exit {result.returncode})")

    def up(self) -> dict[str, str]:
        """``docker compose up -d --wait``, then the topics and the bucket."""
        self.settings.targets_dir.mkdir(parents=True, exist_ok=True)
        self._compose("up", "-d", "--wait")
        ensure_topics(self.settings, topic_specs(self.settings))
        ensure_bucket(self.settings)
        return {"compose": "started"}

    def down(self) -> dict[str, bool]:
        """``docker compose down`` (volumes are kept)."""
        self._compose("down")
        return {"compose": True}

    def clean_data(self) -> None:
        """``docker compose down -v``: removes the named volumes."""
        self._compose("down", "-v")


def open_stack(kind: str, settings: Settings, say: Say = print) -> NativeStack | ComposeStack:
    """The stack of the given kind ("native" or "compose")."""
    if kind == "native":
        return NativeStack(settings, say)
    if kind == "compose":
        return ComposeStack(settings, say)
    raise StackError(f"unknown stack kind {kind!r}; use native or compose")


def status(settings: Settings) -> dict[str, Any]:
    """Endpoint and health of each service (secrets never included)."""
    return check_all(settings)
