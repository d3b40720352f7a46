"""Alert rules and the native stack's Prometheus files: promtool checks and unit tests, threshold from settings.

promtool ships with Debian's prometheus package, which ``make up`` installs (``make test-unit`` too).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from contracts.settings import Settings
from xcorrflow.localstack import promconfig

# One n_files commit a minute, each between 300 s and 600 s: p95 ≈ 585 s.
SLOW_COMMITS = """
rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'xcorrflow_commit_latency_seconds_bucket{rule="n_files",le="300"}'
        values: '0x30'
      - series: 'xcorrflow_commit_latency_seconds_bucket{rule="n_files",le="600"}'
        values: '0+1x30'
      - series: 'xcorrflow_commit_latency_seconds_bucket{rule="n_files",le="+Inf"}'
        values: '0+1x30'
    alert_rule_test:
      - eval_time: 10m
        alertname: XcorrflowCommitLatencyHigh
        exp_alerts: ALERTS
"""
FIRING = """
          - exp_labels: {severity: warning, rule: n_files}
            exp_annotations:
              summary: "p95 commit latency of n_files directories is 9m 45s"
              description: "first file to directory commit takes longer than the configured alert_commit_latency_p95_s"
"""


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run promtool; fails the test (with the fix) when it is not installed."""
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is missing: Debian's prometheus package provides it (make up installs it)")
    return subprocess.run([binary, *args], capture_output=True, text=True, cwd=cwd, check=False, timeout=120)


def test_promtool_accepts_the_rules_file() -> None:
    done = promtool("check", "rules", str(promconfig.RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 6 rules found" in done.stdout


def test_each_alert_fires_and_stays_silent_in_promtool_unit_tests() -> None:
    tests = sorted(promconfig.RULE_TESTS.glob("*.yml"))
    assert tests, "the unit tests of the rules are missing"
    done = promtool("test", "rules", *map(str, tests), cwd=promconfig.RULE_TESTS)
    assert done.returncode == 0, done.stdout + done.stderr
    covered = {
        t["alertname"] for f in tests for g in yaml.safe_load(f.read_text())["tests"] for t in g["alert_rule_test"]
    }
    alerts = {
        r["alert"] for g in yaml.safe_load(promconfig.RULES.read_text())["groups"] for r in g["rules"] if "alert" in r
    }
    assert covered == alerts, "every alert has a unit test"


def test_the_committed_threshold_is_the_settings_default() -> None:
    rules = yaml.safe_load(promconfig.RULES.read_text())
    default = Settings.model_fields["alert_commit_latency_p95_s"].default
    assert promconfig.threshold_rule(rules)["expr"] == f"vector({default:g})"


@pytest.mark.parametrize(("threshold", "fires"), [(300.0, True), (1000.0, False)])
def test_the_rendered_threshold_is_the_one_the_alert_uses(tmp_path: Path, threshold: float, fires: bool) -> None:
    (tmp_path / "rules.yml").write_text(promconfig.render_rules(Settings(alert_commit_latency_p95_s=threshold)))
    (tmp_path / "test.yml").write_text(SLOW_COMMITS.replace(" ALERTS", FIRING if fires else " []"))
    done = promtool("test", "rules", "test.yml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_rendered_config_takes_interval_and_address_from_settings(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, prometheus_port=12345, prometheus_scrape_interval_s=0.5)
    config_path = promconfig.write_files(settings, tmp_path)
    config = yaml.safe_load(config_path.read_text())
    assert config["global"] == {"scrape_interval": "500ms", "evaluation_interval": "500ms"}
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["prometheus"]["static_configs"] == [{"targets": ["127.0.0.1:12345"]}]
    assert jobs["xcorrflow"]["file_sd_configs"][0]["files"] == ["targets/*.json"]
    assert config["rule_files"] == ["rules/*.yml"] and (tmp_path / "rules" / "xcorrflow.yml").exists()
    done = promtool("check", "config", str(config_path))
    assert done.returncode == 0, done.stdout + done.stderr


def test_make_ups_prometheus_serves_the_consoles_from_the_checkout(tmp_path: Path) -> None:
    from xcorrflow.localstack.prometheus import PrometheusService
    from xcorrflow.localstack.service import StackPaths

    argv = PrometheusService(Settings(home=tmp_path), StackPaths(tmp_path), print).argv()
    assert f"--web.console.templates={promconfig.CONSOLES}" in argv
    assert f"--web.console.libraries={promconfig.CONSOLE_LIBRARIES}" in argv
    assert (promconfig.CONSOLES / "xcorrflow.html").exists()
