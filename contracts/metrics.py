"""Metrics helpers: serve ``/metrics`` and register the endpoint for Prometheus' file-based discovery.

Every long-running service calls :func:`serve_metrics` once. The endpoint is written to
``<stack home>/prometheus/targets/<service>-<pid>.json`` and removed on exit, so Prometheus scrapes workers
that come and go without a restart.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from contracts.exporter import ScrapeLog, start_server

# Latency buckets from a few ms (an in-memory hop) up to ten minutes (a barrier run waiting for all stations).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)

# Series every service shares; each package defines its own stage-specific ones next to its code.
EVENTS_IN = Counter("xcorrflow_events_in", "events consumed", ["service", "type"])
EVENTS_OUT = Counter("xcorrflow_events_out", "events produced", ["service", "type"])
DEAD_LETTERS = Counter("xcorrflow_dead_letters", "records sent to the dead-letter topic", ["service", "reason"])
KAFKA_ERRORS = Counter("xcorrflow_kafka_errors", "Kafka client errors reported by librdkafka", ["service"])
S3_ERRORS = Counter("xcorrflow_s3_errors", "object-store operations that failed", ["service", "op"])
CONSUMER_LAG = Gauge("xcorrflow_consumer_lag", "messages behind the end of the log", ["group", "topic", "service"])

# Label values each service is known to produce, exported at 0 from the moment it serves /metrics, as Prometheus
# advises for labelled counters: a clean run then shows 0 errors instead of "no data", and rate(), increase() and
# the alert rules see the first error as a step from 0 rather than as a series that merely appeared.
# Dead-letter reasons are exception class names; every consuming service dead-letters undecodable messages.
KNOWN_DEAD_LETTER_REASONS: dict[str, tuple[str, ...]] = {
    "broker": ("EventDecodeError", "NotificationError", "ValueError"),
    "scheduler": ("EventDecodeError", "ValueError"),
    "preprocess": ("EventDecodeError", "ValueError"),
    "correlate": ("EventDecodeError", "ValueError"),
    "stack": ("EventDecodeError", "ValueError", "ObjectNotFound"),
}
KNOWN_S3_OPS: dict[str, tuple[str, ...]] = {
    "preprocess": ("transient",),
}
# librdkafka's error callback counts under one label in every process (contracts.kafka._error_cb).
KAFKA_ERROR_SERVICES = ("client",)


def zero_known_series(service: str) -> None:
    """Create, at 0, the error and dead-letter series ``service`` is known to produce (idempotent).

    Args:
        service: the service name given to :func:`serve_metrics` (``broker``, ``correlate``, ...); unknown
            names get the shared series only.
    """
    for reason in KNOWN_DEAD_LETTER_REASONS.get(service, ()):
        DEAD_LETTERS.labels(service=service, reason=reason)
    for op in KNOWN_S3_OPS.get(service, ()):
        S3_ERRORS.labels(service=service, op=op)
    for name in KAFKA_ERROR_SERVICES:
        KAFKA_ERRORS.labels(service=name)


def prune_stale_targets(targets_dir: Path) -> list[Path]:
    """Remove discovery files ``<service>-<pid>.json`` whose process no longer runs on this machine.

    A worker killed with -9 never deregisters; its target would stay "down" forever and keep the
    worker-down alert firing after a replacement started. Files without a pid suffix are left alone.

    Args:
        targets_dir: Prometheus' file_sd directory (missing is fine).

    Returns:
        The files removed.
    """
    removed = []
    for path in targets_dir.glob("*-*.json"):
        pid = path.stem.rsplit("-", 1)[1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _pid_alive(pid: int) -> bool:
    """True when a process with this pid exists (signal 0 checks without signalling)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def write_target(targets_dir: Path, name: str, address: str, labels: dict[str, str] | None = None) -> Path:
    """Register ``address`` for scraping by writing ``<targets_dir>/<name>.json`` atomically.

    Args:
        targets_dir: Prometheus' file_sd directory.
        name: file stem, unique per process (``<service>-<pid>``); its first dash-separated part is the
            ``service`` label.
        address: host:port serving /metrics.
        labels: extra target labels.

    Returns:
        The path written.
    """
    targets_dir.mkdir(parents=True, exist_ok=True)
    path = targets_dir / f"{name}.json"
    tmp = path.with_name(f".{path.name}.tmp")
    entry = {"targets": [address], "labels": {"service": name.split("-")[0], **(labels or {})}}
    tmp.write_text(json.dumps([entry]))
    os.replace(tmp, path)  # Prometheus must never read a half-written file
    return path


@dataclass
class MetricsEndpoint:
    """A running /metrics server and its discovery file."""

    service: str
    host: str
    port: int
    target_file: Path | None
    _server: object = field(repr=False, default=None)
    _closed: threading.Event = field(repr=False, default_factory=threading.Event)
    scrapes: ScrapeLog = field(repr=False, default_factory=ScrapeLog)

    @property
    def url(self) -> str:
        """URL of the metrics page."""
        return f"http://{self.host}:{self.port}/metrics"

    def close(self, final_scrape_s: float = 15.0) -> None:
        """Let Prometheus scrape once more, then deregister from discovery and stop serving. Idempotent.

        Args:
            final_scrape_s: longest wait for the last scrape. The wait happens only while a Prometheus is
                scraping this endpoint, and lasts at most one and a half of its intervals: the work done since
                its previous scrape (often a run's whole last window) would otherwise be lost.
        """
        if self._closed.is_set():
            return
        self._closed.set()
        if final_scrape_s > 0:
            self.scrapes.wait_for_next(final_scrape_s)
        if self.target_file is not None:
            self.target_file.unlink(missing_ok=True)
        for method in ("shutdown", "server_close"):  # stop the serve loop, then release the port
            call = getattr(self._server, method, None)
            if call is not None:
                call()


def serve_metrics(
    service: str,
    *,
    targets_dir: Path | None,
    host: str = "127.0.0.1",
    port: int = 0,
    registry: CollectorRegistry = REGISTRY,
    labels: dict[str, str] | None = None,
) -> MetricsEndpoint:
    """Serve ``registry`` on host:port (0 picks a free port) and register it for file-based discovery.

    On the default registry, the service's known error and dead-letter series are created at 0 first; stale
    discovery files of dead processes are pruned before this one is written.

    Args:
        service: service name (``broker``, ``preprocess``, ``correlate``, …); the target file is
            ``<service>-<pid>.json``.
        targets_dir: discovery directory, or None to serve without registering (tests, ad-hoc runs).
        host: address to bind.
        port: port to bind; 0 picks a free one.
        registry: the collector registry to expose.
        labels: extra target labels (e.g. the run id).

    Returns:
        The endpoint; it deregisters itself at interpreter exit as well.
    """
    if registry is REGISTRY:
        zero_known_series(service)
    server, scrapes = start_server(host, port, registry)
    bound = server.server_port
    target = None
    if targets_dir is not None:
        prune_stale_targets(targets_dir)
        target = write_target(targets_dir, f"{service}-{os.getpid()}", f"{host}:{bound}", labels)
    endpoint = MetricsEndpoint(
        service=service, host=host, port=bound, target_file=target, _server=server, scrapes=scrapes
    )
    atexit.register(endpoint.close)
    return endpoint
