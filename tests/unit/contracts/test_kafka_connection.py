"""The Kafka connection block: one mapping to librdkafka properties, and secrets that never show."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from contracts.kafka import client_config, connection_config, consumer_config, producer_config
from contracts.settings import KafkaConnection, Settings

PASSWORD = "s3cr3t-sasl-pa55"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """`make test` exports endpoints that must not leak into these tests."""
    for name in list(os.environ):
        if name.startswith("XCORRFLOW_"):
            monkeypatch.delenv(name)


def secured(tmp_path: Path) -> Settings:
    connection = KafkaConnection(
        security_protocol="sasl_ssl",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="xcorr",
        sasl_password=PASSWORD,  # type: ignore[arg-type]
        ssl_ca_file=tmp_path / "ca.pem",
    )
    return Settings(kafka_bootstrap="broker:9093", kafka_connection=connection)


def test_plaintext_is_the_bootstrap_alone() -> None:
    assert connection_config(Settings(kafka_bootstrap="b:1")) == {"bootstrap.servers": "b:1"}
    assert connection_config("b:2") == {"bootstrap.servers": "b:2"}


def test_the_block_maps_to_librdkafka_properties(tmp_path: Path) -> None:
    assert connection_config(secured(tmp_path)) == {
        "bootstrap.servers": "broker:9093",
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "xcorr",
        "sasl.password": PASSWORD,
        "ssl.ca.location": str(tmp_path / "ca.pem"),
    }


def test_mutual_tls_files() -> None:
    connection = KafkaConnection(security_protocol="ssl", ssl_cert_file=Path("c.pem"), ssl_key_file=Path("k.pem"))
    config = connection_config(Settings(kafka_connection=connection))
    assert config["ssl.certificate.location"] == "c.pem" and config["ssl.key.location"] == "k.pem"
    assert "sasl.mechanism" not in config


def test_every_client_starts_from_the_connection(tmp_path: Path) -> None:
    settings = secured(tmp_path)
    for config in (producer_config(settings), consumer_config(settings, "g"), client_config(settings)):
        assert config["sasl.password"] == PASSWORD and config["security.protocol"] == "sasl_ssl"


def test_env_vars_fill_the_block(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XCORRFLOW_KAFKA_CONNECTION__SECURITY_PROTOCOL", "sasl_plaintext")
    monkeypatch.setenv("XCORRFLOW_KAFKA_CONNECTION__SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("XCORRFLOW_KAFKA_CONNECTION__SASL_USERNAME", "u")
    monkeypatch.setenv("XCORRFLOW_KAFKA_CONNECTION__SASL_PASSWORD", PASSWORD)
    assert connection_config(Settings())["sasl.password"] == PASSWORD


@pytest.mark.parametrize(
    "fields",
    [
        {"security_protocol": "sasl_ssl"},  # no mechanism nor credentials
        {"security_protocol": "sasl_plaintext", "sasl_mechanism": "PLAIN", "sasl_username": "u"},  # no password
        {"sasl_username": "u"},  # SASL on a plaintext protocol
        {"security_protocol": "sasl_plaintext", "sasl_mechanism": "PLAIN", "sasl_username": "u",
         "sasl_password": "p", "ssl_ca_file": "ca.pem"},  # TLS files without TLS
        {"security_protocol": "ssl", "ssl_cert_file": "c.pem"},  # a certificate without its key
        {"security_protocol": "tls"},  # not a protocol librdkafka knows
    ],
)  # fmt: skip
def test_inconsistent_blocks_are_refused(fields: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        KafkaConnection(**fields)  # type: ignore[arg-type]


def test_the_password_never_shows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = secured(tmp_path)
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("test").info("settings: %s %r", settings, settings.kafka_connection)
    shown = [repr(settings), str(settings), repr(settings.kafka_connection), caplog.text]
    shown += [str(settings.public_dump()), settings.model_dump_json()]
    assert not [text for text in shown if PASSWORD in text]
    assert settings.public_dump()["kafka_connection"]["sasl_password"] == "**********"
