"""The /metrics helper: serves the text format, registers for discovery, cleans up after itself, starts the known
error series at 0 and survives a scrape storm."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from contracts.metrics import (
    KNOWN_DEAD_LETTER_REASONS,
    KNOWN_S3_OPS,
    prune_stale_targets,
    serve_metrics,
    write_target,
)


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


def test_known_error_series_start_at_zero(tmp_path: Path) -> None:
    """A service's dead-letter and error counters exist at 0 before anything went wrong."""
    endpoint = serve_metrics("correlate", targets_dir=None)
    try:
        with urllib.request.urlopen(endpoint.url, timeout=5) as resp:
            text = resp.read().decode()
    finally:
        endpoint.close()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("xcorrflow_dead_letters_total", (("reason", "EventDecodeError"), ("service", "correlate")))] == 0
    assert samples[("xcorrflow_kafka_errors_total", (("service", "client"),))] == 0


def test_zero_table_covers_every_label_the_code_uses() -> None:
    """Every literal S3 op and every service that dead-letters is in the zero table, so none starts unseen."""
    root = Path(__file__).resolve().parents[3]
    sources = {
        "preprocess": "producers/worker.py",
        "stack": "consumers/stacker.py",
        "correlate": "consumers/correlator.py",
        "broker": "commit_broker/service.py",
        "scheduler": "consumers/scheduler.py",
    }
    for service, path in sources.items():
        code = (root / path).read_text()
        ops = set(re.findall(r'S3_ERRORS\.labels\(service=SERVICE, op="(\w+)"\)', code))
        assert ops <= set(KNOWN_S3_OPS.get(service, ())), (service, ops)
        if "DEAD_LETTERS.labels" in code:
            assert "EventDecodeError" in KNOWN_DEAD_LETTER_REASONS[service], service


def test_stale_targets_of_dead_processes_are_pruned(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    write_target(tmp_path, f"broker-{dead.pid}", "127.0.0.1:1")
    write_target(tmp_path, f"correlate-{os.getpid()}", "127.0.0.1:2")
    write_target(tmp_path, "prometheus", "127.0.0.1:3")
    removed = prune_stale_targets(tmp_path)
    assert [p.name for p in removed] == [f"broker-{dead.pid}.json"]
    assert sorted(p.name for p in tmp_path.glob("*.json")) == sorted(
        [f"correlate-{os.getpid()}.json", "prometheus.json"]
    )


def test_endpoint_answers_a_storm_of_200_concurrent_scrapes_completely() -> None:
    """200 scrapers at once: every one gets the whole exposition quickly, and the counter it reads is right."""
    registry = CollectorRegistry()
    counter = Counter("xcorrflow_probe_total", "a probe", ["n"], registry=registry)
    for n in range(300):  # a page of realistic size (~30 kB)
        counter.labels(n=str(n)).inc(n)
    endpoint = serve_metrics("probe", targets_dir=None, registry=registry)
    start = threading.Barrier(200)

    def scrape(_: int) -> tuple[float, dict[str, float]]:
        start.wait()
        t0 = time.monotonic()
        with urllib.request.urlopen(endpoint.url, timeout=20) as resp:
            body = resp.read().decode()
        families = text_string_to_metric_families(body)
        values = {s.labels["n"]: s.value for f in families for s in f.samples if s.name == "xcorrflow_probe_total"}
        return time.monotonic() - t0, values

    try:
        with ThreadPoolExecutor(200) as pool:
            results = list(pool.map(scrape, range(200)))
    finally:
        endpoint.close()
    assert len(results) == 200
    assert all(values == {str(n): float(n) for n in range(300)} for _, values in results)
    assert max(seconds for seconds, _ in results) < 10, "no scraper may wait for TCP retransmits"


def _scrape_as_prometheus(url: str) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "Prometheus/2.42.0"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        resp.read()


def test_close_waits_for_prometheus_to_scrape_once_more() -> None:
    """A stopping worker's last counts reach Prometheus: close() waits for the next scrape of its rhythm."""
    endpoint = serve_metrics("probe", targets_dir=None, registry=CollectorRegistry())
    stop = threading.Event()

    def prometheus() -> None:
        while not stop.wait(0.3):
            try:
                _scrape_as_prometheus(endpoint.url)
            except OSError:
                return  # the endpoint closed

    scraper = threading.Thread(target=prometheus, daemon=True)
    scraper.start()
    try:
        time.sleep(1.0)  # a few scrapes set the rhythm
        t0 = time.monotonic()
        endpoint.close()
        waited = time.monotonic() - t0
    finally:
        stop.set()
        scraper.join()
    last = endpoint.scrapes.last()
    assert last is not None and last > t0, "Prometheus scraped once more after close() began"
    assert waited < 2.0, "at most one and a half intervals, plus the server's shutdown poll"


def test_close_does_not_wait_when_no_prometheus_scrapes() -> None:
    endpoint = serve_metrics("probe", targets_dir=None, registry=CollectorRegistry())
    with urllib.request.urlopen(endpoint.url, timeout=5) as resp:  # a person's curl is not Prometheus
        resp.read()
    t0 = time.monotonic()
    endpoint.close()
    assert time.monotonic() - t0 < 0.9, "only the server's shutdown poll (0.5 s)"
    assert endpoint.scrapes.last() is None


def test_commit_latency_of_every_rule_kind_starts_at_zero() -> None:
    """A run's first commit must be a step from 0, or rate() and the dashboard never see it."""
    from prometheus_client import REGISTRY

    import commit_broker.service  # noqa: F401 - defines the histogram

    for rule in ("n_files", "on_termination", "on_file"):
        count = REGISTRY.get_sample_value("xcorrflow_commit_latency_seconds_count", {"rule": rule})
        assert count is not None, rule
