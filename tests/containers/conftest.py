"""The testcontainers suite: Kafka and S3 in containers, then tests of the other suites run against them.

``make test-containers`` builds the images (``make images``) and runs this folder. The engine is whatever
``DOCKER_HOST`` names; when it is unset, the session starts Debian's podman as a Docker-API service on a socket
of its own (:class:`xcorrflow.localstack.podman.PodmanService`) and stops it at the end. Images come from the
``test_images`` settings (``XCORRFLOW_TEST_IMAGES__*``): the locally built ones by default, the official ones
for Docker users.

Workers started by the tests are processes of this machine; they reach the containers through the
``XCORRFLOW_*`` variables this session exports, exactly as they reach the native stack in ``make test``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from contracts.settings import Settings
from tests.integration.conftest import topics, unique
from tests.integration.observe import free_port
from xcorrflow.localstack.health import ensure_bucket

__all__ = ["topics", "unique"]  # shared with tests/integration: per-test topic and key prefixes


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything here needs a container engine."""
    for item in items:
        if "tests/containers" in str(item.fspath):
            item.add_marker(pytest.mark.containers)


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``DOCKER_HOST`` of the container engine; starts podman's API service when none is given."""
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")  # read when testcontainers is first imported
    os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")
    if os.environ.get("DOCKER_HOST"):
        yield os.environ["DOCKER_HOST"]
        return
    from xcorrflow.localstack.podman import PodmanService

    home = tmp_path_factory.mktemp("podman")
    service = PodmanService(home / "podman.sock", home / "podman.log").start()
    os.environ["DOCKER_HOST"] = service.docker_host
    try:
        yield service.docker_host
    finally:
        os.environ.pop("DOCKER_HOST", None)
        service.stop()


@pytest.fixture(scope="session", autouse=True)
def stack(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Kafka and S3 containers; the session's ``XCORRFLOW_*`` variables point every client and worker at them."""
    from tests.containers.stack import start_stack

    images = Settings().test_images
    running = start_stack(images, kafka_port=free_port(), controller_port=free_port(), s3_port=free_port())
    home = Path(tmp_path_factory.mktemp("stack-home"))
    exports = {
        "XCORRFLOW_KAFKA_BOOTSTRAP": running.settings.bootstrap_servers,
        "XCORRFLOW_S3_ENDPOINT": running.settings.s3_address,
        "XCORRFLOW_S3_NOTIFICATIONS": "false",  # the container's S3 server sends none
        "XCORRFLOW_HOME": str(home),  # discovery files of the workers stay out of the native stack's
    }
    saved = {name: os.environ.get(name) for name in exports}
    os.environ.update(exports)
    try:
        settings = Settings()
        ensure_bucket(settings)
        yield settings
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        running.stop()
