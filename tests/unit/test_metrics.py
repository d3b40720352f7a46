"""The /metrics helper: serves the text format, registers for discovery, and cleans up after itself."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter

from contracts.metrics import serve_metrics, write_target


def test_endpoint_serves_registry_and_releases_port(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    Counter("xcorrflow_probe_total", "a probe", registry=registry).inc(3)
    endpoint = serve_metrics("probe", targets_dir=tmp_path, registry=registry)
    try:
        with urllib.request.urlopen(endpoint.url, timeout=5) as resp:
            assert "xcorrflow_probe_total 3.0" in resp.read().decode()
        target = json.loads(next(tmp_path.glob("probe-*.json")).read_text())
        assert target == [{"targets": [f"127.0.0.1:{endpoint.port}"], "labels": {"service": "probe"}}]
    finally:
        endpoint.close()
    assert not list(tmp_path.glob("*.json")), "closing must deregister the target"
    with socket.socket() as sock:
        assert sock.connect_ex((endpoint.host, endpoint.port)) != 0, "closing must release the port"
    endpoint.close()  # idempotent


def test_write_target_replaces_atomically(tmp_path: Path) -> None:
    write_target(tmp_path, "broker-1", "127.0.0.1:1", {"run": "a"})
    path = write_target(tmp_path, "broker-1", "127.0.0.1:2", {"run": "a"})
    assert json.loads(path.read_text())[0]["targets"] == ["127.0.0.1:2"]
    assert [p.name for p in tmp_path.iterdir()] == ["broker-1.json"], "no temporary file may be left behind"
