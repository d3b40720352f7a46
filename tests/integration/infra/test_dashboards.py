"""Dashboards, consoles and alert rules checked against the Prometheus that scraped a real run.

One streaming run with --dvv (6 stations, 2 windows, ingest spread over 15 s) is watched by a private Prometheus that
`make up`'s own code starts (same config, rules and consoles) and that scrapes every second. Then:

- every query of the Grafana dashboard and of the console page returns data over the run;
- every alert and recording rule is loaded and healthy, every metric it reads exists, and none fires;
- the console, opened in headless Chromium, draws every graph (and said "no data" before the run);
- every worker's /metrics endpoint answered a storm of 200 concurrent scrapes mid-run, completely, while the
  run still produced the right pairs.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from contracts.settings import Settings
from contracts.topics import delete_topics, ensure_topics, topic_specs
from dsp.synthetic.stations import SynthConfig, synthesise
from tests.integration.kafkatools import WorkerProcess, wait_for
from tests.integration.observe import (
    StormResult,
    api,
    chromium,
    console_exprs,
    endpoints,
    finite_samples,
    metric_names,
    start_prometheus,
    storm,
)
from xcorrflow.cli import main
from xcorrflow.localstack.promconfig import RULES
from xcorrflow.localstack.service import INFRA

DASHBOARD = INFRA / "grafana" / "dashboards" / "xcorrflow.json"
SERVICES = ("broker", "scheduler", "latency", "preprocess", "correlate", "stack", "monitor")
FAST = {
    "XCORRFLOW_PROCESSING__CC_LEN_S": "600",
    "XCORRFLOW_PROCESSING__STEP_S": "300",
    "XCORRFLOW_PROCESSING__MAXLAG_S": "100",
    # dv/v of a plane wave against its first window: values, so that the dv/v panels have data
    "XCORRFLOW_DVV__REFERENCE__FIRST_K": "1",
    "XCORRFLOW_DVV__START_VELOCITY_KM_S": "50",
}


@dataclass
class Observed:
    """A finished run and the private Prometheus that watched it."""

    prometheus: str
    start: float
    end: float
    report: dict[str, Any]
    pairs_expected: int
    storms: dict[str, StormResult]
    before: str  # the console's DOM before the run


@pytest.fixture(scope="module")
def observed(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    """Run the pipeline under a private Prometheus, storming every exporter once the run is under way."""
    home = tmp_path_factory.mktemp("observed")
    service, prom = start_prometheus(home / "stack")
    try:
        before = chromium(f"{prom.prometheus_url}/consoles/xcorrflow.html", "--dump-dom")
        data = home / "data"
        synthesise(SynthConfig(stations=6, hours=2, rates=(50, 100), seed=5), data)
        expected = len(json.loads((data / "truth.json").read_text())["pairs"])
        with pytest.MonkeyPatch.context() as env:
            env.setenv("XCORRFLOW_HOME", str(home / "stack"))  # workers register with the private Prometheus
            for name, value in FAST.items():
                env.setenv(name, value)
            yield _observe(stack, prom, home, data, expected, before)
    finally:
        service.stop()


def _observe(stack: Settings, prom: Settings, home: Path, data: Path, expected: int, before: str) -> Observed:
    """Start an idle stacker (so its exporter is stormed too), run the pipeline, collect the storm results."""
    prefix = f"obs{int(time.time())}"
    topics = stack.topics.with_prefix(prefix)
    ensure_topics(stack.bootstrap_servers, topic_specs(stack, topics))
    stacker = WorkerProcess(["stack", "--topic-prefix", prefix, "--namespace", prefix], log=home / "stack.log")
    storms: dict[str, StormResult] = {}
    stormer = threading.Thread(target=_storm_mid_run, args=(prom.targets_dir, storms), daemon=True)
    try:
        stacker.start().wait_log("stack ready")
        stormer.start()
        start = time.time()
        args = ["run", "--input", str(data), "--output", str(home / "out"), "--spread", "15", "--timeout", "300"]
        args.append("--dvv")  # the monitor too: its panels are on the dashboard
        assert main([*args, "--cleanup"]) == 0
        end = time.time()
        stormer.join(60)
    finally:
        stacker.stop()
        delete_topics(stack.bootstrap_servers, [t for t in topics.model_dump().values() if t.startswith(prefix)])
    time.sleep(2 * prom.prometheus_scrape_interval_s)  # the last scrapes land
    report = json.loads((home / "out" / "report.json").read_text())
    return Observed(prom.prometheus_url, start, end, report, expected, storms, before)


def _storm_mid_run(targets_dir: Path, results: dict[str, StormResult]) -> None:
    """Once every service is registered and preprocessing has begun, storm each endpoint in turn."""

    def registered() -> dict[str, str]:
        return {stem.split("-")[0]: url for stem, url in endpoints(targets_dir).items()}

    wait_for(lambda: set(SERVICES) <= set(registered()), "every service registered", timeout=120)
    preprocess = registered()["preprocess"]
    wait_for(lambda: _preprocessed(preprocess) >= 1, "the first station-window preprocessed", timeout=120)
    for service, url in registered().items():
        if service in SERVICES:
            results[service] = storm(service, url)


def _preprocessed(url: str) -> float:
    """``xcorrflow_files_preprocessed_total`` of one preprocess worker (0 when it cannot be read)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith("xcorrflow_files_preprocessed_total "):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0


def _empty_over_run(obs: Observed, exprs: list[str]) -> dict[str, str]:
    """The expressions without a single finite sample over the run (or with the error Prometheus gave)."""
    empty = {}
    for expr in exprs:
        try:
            data = api(obs.prometheus, "query_range", query=expr, start=obs.start - 5, end=obs.end + 5, step=1)
        except AssertionError as exc:
            empty[expr] = str(exc)
            continue
        if finite_samples(data) == 0:
            empty[expr] = "no data"
    return empty


# --- the run itself, and the scrape storm ------------------------------------------------------------------------


def test_every_exporter_answers_a_storm_of_200_scrapes_and_the_run_stays_correct(observed: Observed) -> None:
    assert observed.report["pairs"] == observed.pairs_expected and observed.report["dead_letters"] == []
    assert sorted(observed.storms) == sorted(SERVICES), "every service's endpoint was stormed"
    for service, result in observed.storms.items():
        assert (result.ok, result.errors) == (200, []), (service, result.errors[:3])
        assert result.slowest_s < 10, f"{service}: a scraper waited {result.slowest_s:.1f} s"
        assert {"xcorrflow_dead_letters", "xcorrflow_kafka_errors"} <= result.families, service


# --- queries -----------------------------------------------------------------------------------------------------


def test_every_grafana_query_returns_data_after_a_run(observed: Observed) -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    assert len(exprs) == 22, "the dashboard's queries are all here"
    assert _empty_over_run(observed, exprs) == {}


def test_every_console_query_returns_data_after_a_run(observed: Observed) -> None:
    with urllib.request.urlopen(f"{observed.prometheus}/consoles/xcorrflow.html", timeout=30) as resp:
        page = console_exprs(resp.read().decode())
    assert (len(page.graphs), len(page.stats)) == (10, 5), "ten graphs and five stats are served"
    assert _empty_over_run(observed, [e for graph in page.graphs for e in graph]) == {}
    for expr in page.stats:
        assert finite_samples(api(observed.prometheus, "query", query=expr)) > 0, expr


def test_alert_rules_are_loaded_healthy_read_real_metrics_and_stay_quiet(observed: Observed) -> None:
    source = yaml.safe_load(RULES.read_text())
    declared = {r.get("alert") or r.get("record"): r["expr"] for g in source["groups"] for r in g["rules"]}
    loaded = {r["name"]: r for g in api(observed.prometheus, "rules")["groups"] for r in g["rules"]}
    assert set(loaded) == set(declared), "make up's Prometheus loads every rule of the rules file"
    assert {name: r["health"] for name, r in loaded.items() if r["health"] != "ok"} == {}
    names = set().union(*(metric_names(expr) for expr in declared.values()))
    assert {"xcorrflow_consumer_lag", "xcorrflow_dead_letters_total", "up"} <= names
    assert _empty_over_run(observed, [f"count({name})" for name in sorted(names)]) == {}
    for expr in declared.values():  # each parses; an alert may be pending mid-run, so data is allowed
        api(observed.prometheus, "query_range", query=expr, start=observed.start, end=observed.end, step=1)
    firing = api(observed.prometheus, "query", query='ALERTS{alertstate="firing"}')["result"]
    assert firing == [], "a clean run fires no alert"


# --- the console in a browser ------------------------------------------------------------------------------------


def test_console_without_data_says_no_data_not_error(observed: Observed) -> None:
    page = console_exprs(observed.before)
    assert page.states == ["nodata"] * 10, list(zip(page.states, (graph[0] for graph in page.graphs), strict=True))
    assert page.classes.get("xf_nodata", 0) == 1 + 5 + 10, "no alert, and five stats and ten graphs say 'no data'"
    assert "xf_error" not in page.classes and "prom_graph_error" not in page.classes


def test_console_in_chromium_draws_every_graph_and_saves_a_screenshot(observed: Observed, tmp_path: Path) -> None:
    span = int(observed.end - observed.start) + 40
    url = f"{observed.prometheus}/consoles/xcorrflow.html?range={span}s&end={int(observed.end) + 10}"
    page = console_exprs(chromium(url, "--dump-dom"))
    assert page.states == ["data"] * 10, list(zip(page.states, (graph[0] for graph in page.graphs), strict=True))
    assert page.tags.get("svg", 0) >= 10 and "xf_error" not in page.classes, "every graph is drawn"
    shot = Path(os.environ.get("XCORRFLOW_CONSOLE_SCREENSHOT", tmp_path / "console.png"))
    shot.parent.mkdir(parents=True, exist_ok=True)
    chromium(url, f"--screenshot={shot}", "--window-size=1400,1150", "--hide-scrollbars")
    assert shot.stat().st_size > 30_000, "a screenshot with graphs in it"
