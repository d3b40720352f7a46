"""The suite really talks to containers: the endpoints it exports are the ports the engine published."""

from __future__ import annotations

from contracts.settings import Settings


def test_endpoints_are_the_published_ports_of_running_containers(stack: Settings) -> None:
    from testcontainers.core.docker_client import DockerClient

    published = {}
    for container in DockerClient().client.containers.list():
        image = container.attrs["Config"]["Image"]
        for bindings in (container.attrs["NetworkSettings"]["Ports"] or {}).values():
            for binding in bindings or []:
                published[f"{binding['HostIp']}:{binding['HostPort']}"] = image
    images = stack.test_images
    assert published.get(stack.bootstrap_servers, "").endswith(images.kafka.split("/")[-1]), published
    assert published.get(stack.s3_address, "").endswith(images.s3.split("/")[-1]), published
