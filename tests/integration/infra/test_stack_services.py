"""What `make up` promises: real Kafka, a real S3 server and Prometheus, reachable by clients that know nothing
of the project, with file-based discovery of workers."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from contracts.kafka import connection_config
from contracts.metrics import serve_metrics
from contracts.settings import Settings


def _listener_pid(port: int) -> int:
    out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    pid = out.split("pid=")[1].split(",")[0]
    return int(pid)


def test_status_json_reports_every_service_ok_without_secrets(stack: Settings) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "xcorrflow", "status", "--json"], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["kafka"] == {"bootstrap": stack.bootstrap_servers, "ok": True}
    assert report["s3"]["ok"] and report["prometheus"]["ok"]
    assert stack.s3_secret_key.get_secret_value() not in out.stdout + out.stderr


def test_kafka_endpoint_is_apache_kafka_jvm(stack: Settings) -> None:
    metadata = AdminClient(connection_config(stack)).list_topics(timeout=10)
    assert len(metadata.brokers) == 1
    port = int(stack.bootstrap_servers.rsplit(":", 1)[1])
    cmdline = Path(f"/proc/{_listener_pid(port)}/cmdline").read_bytes().split(b"\0")
    assert Path(cmdline[0].decode()).name == "java"
    assert b"kafka.Kafka" in cmdline


def test_s3_anonymous_request_is_denied_with_s3_xml(stack: Settings) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{stack.s3_url}/", timeout=5)
    body = info.value.read().decode()
    assert info.value.code == 403
    assert "<Code>AccessDenied</Code>" in body


def test_s3_signed_request_lists_the_project_bucket(stack: Settings) -> None:
    from xcorrflow.localstack.health import s3_client

    names = [b.name for b in s3_client(stack).list_buckets()]
    assert stack.s3_bucket in names


def test_prometheus_is_ready_and_discovers_a_new_worker(stack: Settings) -> None:
    with urllib.request.urlopen(f"{stack.prometheus_url}/-/ready", timeout=5) as resp:
        assert resp.status == 200
    endpoint = serve_metrics("probe", targets_dir=stack.targets_dir)
    try:
        address = f"{endpoint.host}:{endpoint.port}"
        deadline = time.monotonic() + 60
        health = None
        while time.monotonic() < deadline and health != "up":
            with urllib.request.urlopen(f"{stack.prometheus_url}/api/v1/targets", timeout=5) as resp:
                targets = json.load(resp)["data"]["activeTargets"]
            health = next((t["health"] for t in targets if t["labels"].get("instance") == address), None)
            time.sleep(1)
        assert health == "up", f"Prometheus did not scrape {address} via file discovery"
    finally:
        endpoint.close()
    assert endpoint.target_file is not None and not endpoint.target_file.exists()
