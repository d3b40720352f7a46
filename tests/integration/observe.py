"""Helpers for the observability tests: a private Prometheus, its HTTP API, headless Chromium and a scrape storm.

The private Prometheus is the stack's own :class:`~xcorrflow.localstack.prometheus.PrometheusService` (same config,
rules and consoles as ``make up``'s) under a temporary home, on a free port, scraping every second; workers
started with ``XCORRFLOW_HOME=<that home>`` register in its discovery directory and in no other.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from contracts.settings import Settings
from xcorrflow.localstack.prometheus import PrometheusService
from xcorrflow.localstack.service import StackPaths

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
METRIC_NAME = re.compile(r"\b(?:xcorrflow[_:][A-Za-z0-9_:]*|up)\b")


class PromQueryError(AssertionError):
    """Prometheus refused a query; carries the expression and Prometheus' own error text."""

    def __init__(self, expr: str, error: str) -> None:
        super().__init__(f"{expr!r}: {error}")
        self.expr, self.error = expr, error


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_prometheus(home: Path, scrape_interval_s: float = 1.0) -> tuple[PrometheusService, Settings]:
    """Start a private Prometheus under ``home`` on a free port; returns the service and its settings."""
    settings = Settings(home=home, prometheus_port=free_port(), prometheus_scrape_interval_s=scrape_interval_s)
    service = PrometheusService(settings, StackPaths(home), say=lambda line: None)
    service.start()
    return service, settings


def api(base: str, path: str, **params: str | float) -> Any:
    """GET ``base/api/v1/<path>`` and return its ``data``.

    Raises:
        PromQueryError: Prometheus answered with an error (its message is kept).
    """
    url = f"{base}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read() or b"{}")
    if body.get("status") != "success":
        raise PromQueryError(str(params.get("query", path)), str(body.get("error", body)))
    return body["data"]


def finite_samples(data: dict[str, Any]) -> int:
    """Finite values in a query or query_range answer (NaN is what histogram_quantile gives for no data)."""
    values: list[str] = []
    for series in data["result"]:
        values += [v for _, v in series.get("values", [])] + ([series["value"][1]] if "value" in series else [])
    return sum(1 for v in values if math.isfinite(float(v)))


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (label values and strings are not names)."""
    return set(METRIC_NAME.findall(re.sub(r'"[^"]*"', '""', expr)))


class _ExprParser(HTMLParser):
    """Collects ``data-expr`` attributes: a JSON list on graphs, one expression on stats."""

    def __init__(self) -> None:
        super().__init__()
        self.graphs: list[list[str]] = []
        self.stats: list[str] = []
        self.states: list[str] = []
        self.classes: dict[str, int] = {}  # class name → elements carrying it
        self.tags: dict[str, int] = {}  # tag → elements

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.tags[tag] = self.tags.get(tag, 0) + 1
        classes = (found.get("class") or "").split()
        for name in classes:
            self.classes[name] = self.classes.get(name, 0) + 1
        if "xf_graph" in classes:
            self.graphs.append(json.loads(found.get("data-expr") or "[]"))
            self.states.append(found.get("data-state") or "")
        elif "xf_stat_value" in classes:
            self.stats.append(found.get("data-expr") or "")


def console_exprs(html: str) -> _ExprParser:
    """The graphs' and stats' expressions (and, in a rendered DOM, each graph's state) of a console page."""
    parser = _ExprParser()
    parser.feed(html)
    return parser


def chromium(url: str, *extra: str, budget_ms: int = 20000, tries: int = 2) -> str:
    """Run headless Debian Chromium on ``url`` with a fresh profile; returns its stdout.

    ``--virtual-time-budget`` lets the page's scripts and queries finish before the DOM dump or screenshot. A
    browser that exits non-zero is started once more (a crash of the browser is not what the tests test).
    """
    binary = shutil.which("chromium")
    assert binary, "Debian's chromium is missing: `make test` installs it (infra/ensure-packages.sh)"
    failures = []
    for _ in range(tries):
        with tempfile.TemporaryDirectory(prefix="xcorrflow-chromium-") as profile:
            argv = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}"]
            done = subprocess.run([*argv, *extra, url], capture_output=True, text=True, timeout=120, check=False)
        if done.returncode == 0:
            return done.stdout
        failures.append(f"exit {done.returncode}: {done.stderr[-1500:]}")
    raise AssertionError("chromium failed: " + " | ".join(failures))


@dataclass
class StormResult:
    """What 200 concurrent scrapes of one endpoint got."""

    service: str
    url: str
    ok: int = 0
    errors: list[str] = field(default_factory=list)
    slowest_s: float = 0.0
    families: set[str] = field(default_factory=set)


def storm(service: str, url: str, scrapers: int = 200, timeout_s: float = 20.0) -> StormResult:
    """Scrape ``url`` from ``scrapers`` threads released at once; every answer must parse as a full exposition."""
    result = StormResult(service, url)
    start = threading.Barrier(scrapers)
    lock = threading.Lock()

    def one(_: int) -> None:
        start.wait()
        t0 = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                names = {f.name for f in text_string_to_metric_families(resp.read().decode())}
            with lock:
                result.ok += 1
                result.families = names if not result.families else result.families & names
        except Exception as exc:  # every failure is reported, whatever its kind
            with lock:
                result.errors.append(f"{type(exc).__name__}: {exc}")
        with lock:
            result.slowest_s = max(result.slowest_s, time.monotonic() - t0)

    with ThreadPoolExecutor(scrapers) as pool:
        list(pool.map(one, range(scrapers)))
    return result


def endpoints(targets_dir: Path) -> dict[str, str]:
    """``{file stem: metrics URL}`` of the workers registered in a discovery directory."""
    found = {}
    for path in targets_dir.glob("*-*.json"):
        try:
            entry = json.loads(path.read_text())[0]
        except (OSError, ValueError, IndexError):
            continue  # deregistered meanwhile
        found[path.stem] = f"http://{entry['targets'][0]}/metrics"
    return found
