"""The settings model: defaults for the local stack, env/YAML precedence, secrets that never leak."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from contracts.settings import LOCAL_SECRET_KEY, Settings, load_settings
from contracts.topics import topic_specs


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about precedence; `make test` exports endpoints that must not leak into them."""
    for name in list(os.environ):
        if name.startswith("XCORRFLOW_"):
            monkeypatch.delenv(name)


def test_defaults_point_at_the_local_stack_on_non_standard_ports() -> None:
    s = Settings()
    assert s.bootstrap_servers == "127.0.0.1:19092"
    assert s.s3_address == "127.0.0.1:19000" and s.s3_url == "http://127.0.0.1:19000"
    assert s.prometheus_url == "http://127.0.0.1:19090"
    assert {s.kafka_port, s.s3_port, s.prometheus_port}.isdisjoint({9092, 9000, 9090})


@pytest.mark.parametrize(
    ("options", "unsigned"),
    [
        ({}, True),  # the local stack: loopback
        ({"s3_endpoint": "localhost:9000"}, True),
        ({"s3_endpoint": "[::1]:9000"}, True),
        ({"s3_endpoint": "10.0.0.7:9000"}, False),  # plain HTTP across a network: the body's SHA-256 is signed
        ({"s3_endpoint": "minio:9000"}, False),
        ({"s3_endpoint": "s3.example.org", "s3_secure": True}, True),  # TLS keeps the body intact
        ({"s3_endpoint": "10.0.0.7:9000", "s3_unsigned_payload": True}, True),  # an explicit choice wins
        ({"s3_unsigned_payload": False}, False),
    ],
)
def test_unsigned_payloads_only_where_the_transport_keeps_the_body_intact(
    options: dict[str, object], unsigned: bool
) -> None:
    assert Settings(**options).s3_unsigned is unsigned


def test_env_overrides_flat_and_nested_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XCORRFLOW_KAFKA_BOOTSTRAP", "broker:1234")
    monkeypatch.setenv("XCORRFLOW_S3_PORT", "29000")
    monkeypatch.setenv("XCORRFLOW_PARTITIONS__PAIRS", "3")
    monkeypatch.setenv("XCORRFLOW_PROCESSING__CC_LEN_S", "600")
    s = Settings()
    assert s.bootstrap_servers == "broker:1234"
    assert s.s3_address == "127.0.0.1:29000"
    assert s.partitions.pairs == 3
    assert s.processing.cc_len_s == 600


def test_yaml_file_is_read_and_env_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "xcorrflow.yaml"
    config.write_text("s3_bucket: from-yaml\nkafka_port: 29092\nprocessing:\n  maxlag_s: 100\n")
    monkeypatch.setenv("XCORRFLOW_KAFKA_PORT", "39092")
    s = load_settings(config)
    assert s.s3_bucket == "from-yaml"
    assert s.processing.maxlag_s == 100
    assert s.kafka_port == 39092, "environment variables beat the YAML file"


def test_secrets_are_masked_everywhere_they_could_be_printed() -> None:
    s = Settings()
    assert LOCAL_SECRET_KEY not in repr(s)
    assert LOCAL_SECRET_KEY not in str(s.public_dump())
    assert s.s3_secret_key.get_secret_value() == LOCAL_SECRET_KEY


def test_model_is_frozen_and_strict() -> None:
    s = Settings()
    with pytest.raises(ValidationError):
        s.kafka_port = 1  # type: ignore[misc]
    with pytest.raises(ValidationError):
        Settings(kafka_prot=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        Settings(partitions={"pairs": 0})


def test_topic_prefix_and_compaction() -> None:
    s = Settings()
    names = s.topics.with_prefix("run42")
    assert names.files == "run42.xcorr.files"
    assert names.s3_events == s.topics.s3_events, "the S3 server's notification topic is shared"
    specs = {spec.name: spec for spec in topic_specs(s, names)}
    assert {name for name, spec in specs.items() if spec.compacted} == names.compacted()
    assert specs[names.pairs].partitions == s.partitions.pairs
    assert set(specs) == set(names.model_dump().values()), "every named topic is created"
