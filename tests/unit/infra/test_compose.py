"""infra/docker-compose.yml cannot run here (no Docker engine), so check that it is faithful to the settings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from contracts.settings import LOCAL_ACCESS_KEY, LOCAL_SECRET_KEY, Settings

INFRA = Path(__file__).resolve().parents[3] / "infra"


def _compose() -> dict[str, Any]:
    return yaml.safe_load((INFRA / "docker-compose.yml").read_text())


def _default(expr: str, var: str) -> str:
    """The default of ``${VAR:-default}`` inside ``expr``."""
    match = re.search(r"\$\{" + var + r":-([^}]*)\}", expr)
    assert match, f"{var} with a default not found in {expr!r}"
    return match.group(1)


def test_services_are_the_documented_four() -> None:
    assert set(_compose()["services"]) == {"kafka", "minio", "prometheus", "grafana"}


def test_published_ports_match_settings_defaults() -> None:
    services, settings = _compose()["services"], Settings()
    kafka_port = services["kafka"]["ports"][0]
    assert kafka_port.startswith("127.0.0.1:")
    assert _default(kafka_port, "XCORRFLOW_KAFKA_PORT") == str(settings.kafka_port)
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert _default(advertised, "XCORRFLOW_KAFKA_PORT") == str(settings.kafka_port)
    s3_port = services["minio"]["ports"][0]
    assert _default(s3_port, "XCORRFLOW_S3_PORT") == str(settings.s3_port)
    assert "--web.listen-address=127.0.0.1:${XCORRFLOW_PROMETHEUS_PORT:-19090}" in services["prometheus"]["command"]
    assert settings.prometheus_port == 19090
    grafana = services["grafana"]["environment"]["GF_SERVER_HTTP_PORT"]
    assert _default(grafana, "XCORRFLOW_GRAFANA_PORT") == str(settings.grafana_port)


def test_credentials_use_the_same_variables_and_defaults() -> None:
    env = _compose()["services"]["minio"]["environment"]
    assert _default(env["MINIO_ROOT_USER"], "XCORRFLOW_S3_ACCESS_KEY") == LOCAL_ACCESS_KEY
    assert _default(env["MINIO_ROOT_PASSWORD"], "XCORRFLOW_S3_SECRET_KEY") == LOCAL_SECRET_KEY
    settings = Settings()
    assert settings.s3_access_key.get_secret_value() == LOCAL_ACCESS_KEY


def test_prometheus_config_is_shared_and_discovers_workers_from_files() -> None:
    prom = _compose()["services"]["prometheus"]
    assert "./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prom["volumes"]
    config = yaml.safe_load((INFRA / "prometheus" / "prometheus.yml").read_text())
    sd = [job["file_sd_configs"][0]["files"] for job in config["scrape_configs"] if "file_sd_configs" in job]
    assert sd == [["targets/*.json"]]
    assert any(v.endswith(":/etc/prometheus/targets:ro") for v in prom["volumes"])


def test_grafana_is_provisioned_with_datasource_and_dashboards() -> None:
    grafana = _compose()["services"]["grafana"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    ds = yaml.safe_load((INFRA / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert ds["datasources"][0]["type"] == "prometheus"
    assert list((INFRA / "grafana" / "dashboards").glob("*.json")), "a provisioned dashboard must exist"


def test_compose_kafka_version_equals_the_native_pom() -> None:
    from xcorrflow.localstack.kafka import pom_kafka_version

    image = _compose()["services"]["kafka"]["image"]
    assert image == f"apache/kafka:{pom_kafka_version()}"
