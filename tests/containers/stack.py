"""Kafka and an S3 server as containers, started through testcontainers-python on any Docker-API engine.

Both are configured the same way whatever the image: Kafka through KAFKA_* variables (which the xcorrflow
image and the official apache/kafka read alike), S3 by kind (versitygw or minio). Every port is published on
127.0.0.1 only. Kafka's host port is chosen first and used inside the container too, so the advertised
listener 127.0.0.1:<port> is right on both sides.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from contracts.settings import ContainerImages, Settings
from xcorrflow.localstack.health import s3_ok
from xcorrflow.localstack.kafka import kafka_metadata_ok

S3_PORTS = {"versitygw": 7070, "minio": 9000}


def kafka_env(port: int, controller_port: int) -> dict[str, str]:
    """A single-node KRaft broker listening on ``port`` inside the container and advertised on 127.0.0.1."""
    return {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": f"PLAINTEXT://:{port},CONTROLLER://:{controller_port}",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:{port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": f"1@localhost:{controller_port}",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        "KAFKA_HEAP_OPTS": "-Xmx512m -Xms256m",
    }


def s3_container_spec(kind: str, access: str, secret: str) -> tuple[int, dict[str, str], list[str] | None]:
    """(port inside the container, environment, command or None for the image's own) of an S3 image."""
    if kind == "minio":
        env = {"MINIO_ROOT_USER": access, "MINIO_ROOT_PASSWORD": secret, "MINIO_REGION": "us-east-1"}
        return S3_PORTS["minio"], env, ["server", "/data", "--address", ":9000"]
    return S3_PORTS["versitygw"], {"ROOT_ACCESS_KEY": access, "ROOT_SECRET_KEY": secret}, None


@dataclass
class ContainerStack:
    """The running containers and the settings that reach them."""

    settings: Settings
    containers: list[Any]

    def stop(self) -> None:
        """Remove every container this stack started."""
        for container in self.containers:
            container.stop()


def start_stack(images: ContainerImages, kafka_port: int, controller_port: int, s3_port: int) -> ContainerStack:
    """Start Kafka and S3 containers and wait until both answer (Kafka metadata, an S3 request).

    Raises:
        TimeoutError: a service did not answer within two minutes (the container's log is in the message).
    """
    from testcontainers.core.container import DockerContainer  # after the engine's variables are set

    base = Settings()
    access, secret = base.s3_access_key.get_secret_value(), base.s3_secret_key.get_secret_value()
    kafka = DockerContainer(images.kafka).with_envs(**kafka_env(kafka_port, controller_port))
    _publish(kafka, kafka_port, kafka_port)
    inner, env, command = s3_container_spec(images.s3_kind, access, secret)
    s3 = DockerContainer(images.s3).with_envs(**env)
    if command:
        s3 = s3.with_command(command)
    _publish(s3, inner, s3_port)
    stack = ContainerStack(Settings(), [])
    for container in (kafka, s3):
        container.start()
        stack.containers.append(container)
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{kafka_port}", s3_endpoint=f"127.0.0.1:{s3_port}")
    stack.settings = settings
    _wait(lambda: kafka_metadata_ok(settings.bootstrap_servers), "Kafka answers metadata requests", kafka)
    _wait(lambda: s3_ok(settings)[0], "the S3 server answers", s3)
    return stack


def _publish(container: Any, inner: int, host_port: int) -> None:
    """Publish ``inner``/tcp on 127.0.0.1:``host_port`` only (docker-py's (address, port) form)."""
    container.ports[f"{inner}/tcp"] = ("127.0.0.1", host_port)


def _wait(ready: Callable[[], bool], what: str, container: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            logs = container.get_wrapped_container().logs().decode(errors="replace")[-3000:]
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting until {what}; container log:\n{logs}")
        time.sleep(0.5)
