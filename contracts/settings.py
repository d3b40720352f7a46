"""The one settings model of xcorrflow.

Every service, CLI command and test reads its configuration from :class:`Settings`. Values come, in order of
precedence, from keyword arguments, ``XCORRFLOW_*`` environment variables, an optional YAML file
(``XCORRFLOW_CONFIG`` or ``--config``), and the defaults below. Nested models use ``__`` in environment
variable names, e.g. ``XCORRFLOW_PROCESSING__CC_LEN_S=600``.

Defaults describe the local stack that ``make up`` starts: every service on 127.0.0.1, on non-standard ports so
that a developer's own Kafka (9092), S3 (9000) or Prometheus (9090) keeps working beside it.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from contracts.dvvparams import DvvParams
from contracts.params import ProcessingParams

CONFIG_ENV = "XCORRFLOW_CONFIG"
REPO_ROOT = Path(__file__).resolve().parents[1]
LOCAL_ACCESS_KEY = "xcorrflow"
LOCAL_SECRET_KEY = "xcorrflow-local-secret"


class TopicNames(BaseModel):
    """Kafka topic names (DESIGN.md §1). A run may prefix them to isolate itself."""

    model_config = ConfigDict(frozen=True)

    raw: str = Field("xcorr.raw", description="RawFileArrived events, keyed by station id")
    files: str = Field(
        "xcorr.files", description="FileCommitted/DirectoryExpected/ProducerFinished, keyed by directory"
    )
    commits: str = Field("xcorr.commits", description="FileReady and DirectoryCommitted, keyed by directory")
    pairs: str = Field("xcorr.pairs", description="PairTask batches, keyed by window/station-row")
    results: str = Field("xcorr.results", description="RowCorrelated events, keyed by window/station-row")
    dlq: str = Field("xcorr.dlq", description="DeadLetter records with their reason and source offset")
    s3_events: str = Field(
        "xcorr.s3events", description="S3 bucket notifications (Records[] JSON) sent by the S3 server"
    )
    broker_state: str = Field("xcorr.broker-state", description="compacted commit-broker state, keyed by directory")
    scheduler_state: str = Field("xcorr.scheduler-state", description="compacted pair-scheduler state, keyed by window")
    stacks: str = Field("xcorr.stacks", description="StacksUpdated events of the stacker, keyed by window")
    stacker_state: str = Field("xcorr.stacker-state", description="compacted stacker state, keyed by window and task")

    def with_prefix(self, prefix: str) -> TopicNames:
        """Return the same topics under ``<prefix>.``, for runs and tests that must not share topics.

        The S3 notification topic keeps its name: the S3 server writes every notification to one topic fixed
        at its start, and each broker picks the records of its own namespace out of it.
        """
        if not prefix:
            return self
        renamed = {name: f"{prefix}.{value}" for name, value in self.model_dump().items() if name != "s3_events"}
        return self.model_copy(update=renamed)

    def compacted(self) -> set[str]:
        """Names of the topics that hold state and are therefore log-compacted."""
        return {self.broker_state, self.scheduler_state, self.stacker_state}


class TopicPartitions(BaseModel):
    """Partition counts per topic; parallelism of a consumer group is bounded by these."""

    model_config = ConfigDict(frozen=True)

    raw: int = Field(4, ge=1, description="partitions of the raw topic (max useful preprocess workers)")
    files: int = Field(4, ge=1, description="partitions of the files topic")
    commits: int = Field(4, ge=1, description="partitions of the commits topic")
    pairs: int = Field(8, ge=1, description="partitions of the pairs topic (max useful correlators)")
    results: int = Field(4, ge=1, description="partitions of the results topic")
    dlq: int = Field(1, ge=1, description="partitions of the dead-letter topic")
    state: int = Field(4, ge=1, description="partitions of each compacted state topic")


class FaultSettings(BaseModel):
    """How long the pipeline rides through outages, and how it restarts what dies (issue 10)."""

    model_config = ConfigDict(frozen=True)

    kafka_outage_s: float = Field(
        120.0, gt=0, description="a Kafka broker may be unreachable this long before a service or run gives up"
    )
    s3_outage_s: float = Field(
        120.0, gt=0, description="the S3 server may fail transiently this long before a request gives up"
    )
    s3_connect_timeout_s: float = Field(5.0, gt=0, description="S3 connect timeout per request, s")
    s3_read_timeout_s: float = Field(
        30.0, gt=0, description="S3 read timeout per request, s (a frozen server is noticed after this long)"
    )
    max_restarts: int = Field(
        5, ge=0, description="xcorrflow run restarts a dead worker this many times before the run fails"
    )
    restart_backoff_s: float = Field(
        1.0, ge=0, description="first wait before restarting a dead worker; doubles per restart, capped at 30 s"
    )


class KafkaConnection(BaseModel):
    """How clients reach and authenticate to the Kafka cluster: security protocol, SASL, TLS files.

    The defaults are the local stack's plaintext listener. :func:`contracts.kafka.connection_config` is the one
    place that turns this into librdkafka properties. Passwords are ``SecretStr``: repr, logs, ``config show`` and
    run reports print ``**********``.
    """

    model_config = ConfigDict(frozen=True)

    security_protocol: Literal["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"] = Field(
        "plaintext", description="librdkafka security.protocol: plaintext, ssl (TLS), sasl_plaintext or sasl_ssl"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism (with a sasl_* protocol)"
    )
    sasl_username: str | None = Field(None, description="SASL user name")
    sasl_password: SecretStr | None = Field(None, description="SASL password")
    ssl_ca_file: Path | None = Field(None, description="PEM file of the CA that signed the brokers' certificates")
    ssl_cert_file: Path | None = Field(None, description="PEM client certificate (mutual TLS)")
    ssl_key_file: Path | None = Field(None, description="PEM private key of the client certificate (mutual TLS)")
    ssl_key_password: SecretStr | None = Field(None, description="password of the client key, if it is encrypted")

    @model_validator(mode="after")
    def _consistent(self) -> KafkaConnection:
        """Refuse a block that librdkafka would only refuse at the first connection (or silently ignore)."""
        sasl = self.security_protocol.startswith("sasl")
        if sasl and (self.sasl_mechanism is None or not self.sasl_username or self.sasl_password is None):
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism, username and password")
        if not sasl and (self.sasl_mechanism or self.sasl_username or self.sasl_password):
            raise ValueError("SASL settings need security_protocol sasl_plaintext or sasl_ssl")
        tls = self.security_protocol.endswith("ssl")
        if not tls and (self.ssl_ca_file or self.ssl_cert_file or self.ssl_key_file or self.ssl_key_password):
            raise ValueError("TLS files need security_protocol ssl or sasl_ssl")
        if (self.ssl_cert_file is None) != (self.ssl_key_file is None):
            raise ValueError("a client certificate needs its key, and a key its certificate")
        return self


class ContainerImages(BaseModel):
    """Images of the testcontainers suite (``make test-containers``). The defaults are built here by
    ``make images``; with Docker, point them at the official images instead, e.g.
    ``XCORRFLOW_TEST_IMAGES__KAFKA=apache/kafka:4.4.0``, ``XCORRFLOW_TEST_IMAGES__S3=minio/minio:latest`` and
    ``XCORRFLOW_TEST_IMAGES__S3_KIND=minio``."""

    model_config = ConfigDict(frozen=True)

    kafka: str = Field(
        "localhost/xcorrflow/kafka:4.4.0",
        description="Kafka image configured through KAFKA_* variables (the xcorrflow image or apache/kafka)",
    )
    s3: str = Field("localhost/xcorrflow/versitygw:v1.8.0", description="S3 server image")
    s3_kind: Literal["versitygw", "minio"] = Field("versitygw", description="how to start the S3 image")


class Settings(BaseSettings):
    """Frozen configuration shared by every xcorrflow component."""

    model_config = SettingsConfigDict(
        env_prefix="XCORRFLOW_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    # --- Kafka -------------------------------------------------------------------------------------------------
    kafka_host: str = Field("127.0.0.1", description="address the local Kafka binds to and advertises")
    kafka_port: int = Field(19092, description="Kafka client (PLAINTEXT) port of the local stack")
    kafka_controller_port: int = Field(19093, description="KRaft controller port of the local stack")
    kafka_bootstrap: str | None = Field(
        None, description="bootstrap servers; defaults to kafka_host:kafka_port (the local stack)"
    )
    kafka_connection: KafkaConnection = Field(
        default_factory=KafkaConnection, description="security protocol, SASL and TLS of the Kafka clients"
    )
    kafka_replication: int = Field(1, ge=1, description="replication factor of created topics (1 on one node)")
    kafka_heap: str = Field("768m", description="JVM heap (-Xmx) of the local Kafka broker")

    # --- S3 ----------------------------------------------------------------------------------------------------
    s3_host: str = Field("127.0.0.1", description="address the local S3 server binds to")
    s3_port: int = Field(19000, description="S3 API port of the local stack")
    s3_endpoint: str | None = Field(None, description="S3 endpoint host:port; defaults to s3_host:s3_port")
    s3_secure: bool = Field(False, description="use HTTPS for S3")
    s3_unsigned_payload: bool | None = Field(
        None,
        description="sign UNSIGNED-PAYLOAD instead of each body's SHA-256: about 1.4 s of client + server CPU less "
        "per GB written (bench/s3_access.py). Body integrity then rests on the transport, so the default (unset) "
        "does it only where that is safe: over HTTPS, or to a loopback endpoint such as the local stack's",
    )
    s3_access_key: SecretStr = Field(SecretStr(LOCAL_ACCESS_KEY), description="S3 access key id")
    s3_secret_key: SecretStr = Field(SecretStr(LOCAL_SECRET_KEY), description="S3 secret access key")
    s3_region: str = Field("us-east-1", description="S3 region (skips a GetBucketLocation round trip)")
    s3_bucket: str = Field("xcorrflow", description="bucket holding raw/, prep/, ccf/, stacks/ and runs/")
    namespace: str = Field(
        "", description="key prefix under which this deployment's raw/, prep/, ccf/ and stacks/ live ('' = root)"
    )
    topic_prefix: str = Field(
        "",
        description="this deployment's topics are '<prefix>.<name>' ('' = the plain names); with the "
        "namespace, the scope of a run (see Settings.scoped)",
    )
    s3_notifications: bool = Field(
        True, description="make up: wire the S3 server's bucket notifications to the files topic"
    )

    # --- Prometheus and metrics ----------------------------------------------------------------------------------
    prometheus_host: str = Field("127.0.0.1", description="address the local Prometheus binds to")
    prometheus_port: int = Field(19090, description="Prometheus web/API port of the local stack")
    grafana_port: int = Field(13000, description="Grafana port (docker compose stack only)")
    metrics_port: int = Field(0, ge=0, description="port of a worker's /metrics; 0 picks a free port")
    prometheus_scrape_interval_s: float = Field(
        5.0, gt=0, description="how often the local Prometheus scrapes the workers and evaluates the alert rules"
    )
    alert_commit_latency_p95_s: float = Field(
        300.0,
        gt=0,
        description="alert rules: fire when the p95 commit latency (first file → directory commit) stays above "
        "this many seconds",
    )

    # --- Topics ------------------------------------------------------------------------------------------------
    topics: TopicNames = Field(default_factory=TopicNames, description="topic names")
    partitions: TopicPartitions = Field(default_factory=TopicPartitions, description="partition counts")

    # --- Local state -------------------------------------------------------------------------------------------
    home: Path = Field(
        REPO_ROOT / ".stack",
        description="local stack state: data, logs, pid files, service-discovery targets",
    )
    cache_dir: Path = Field(
        Path.home() / ".cache" / "xcorrflow",
        description="downloaded and built artefacts (Kafka jars, S3 server binary), reused across checkouts",
    )

    # --- Faults ------------------------------------------------------------------------------------------------
    faults: FaultSettings = Field(default_factory=FaultSettings, description="outage limits and worker restarts")

    # --- Tests ------------------------------------------------------------------------------------------------
    test_images: ContainerImages = Field(
        default_factory=ContainerImages, description="images of the testcontainers suite"
    )

    # --- Results -----------------------------------------------------------------------------------------------
    stack_memory_mb: int = Field(
        1024, ge=1, description="memory the stacker may hold in stack chunks and CCFs (sets its group size)"
    )
    stack_chunk_pairs: int = Field(
        128, ge=1, description="pairs per chunk of new stack arrays (128 x 8001 lags x 4 B = 4 MB objects)"
    )
    task_columns: int = Field(
        1024,
        ge=64,
        multiple_of=64,
        description="columns per row task at most, a whole number of 64-slot CCF chunks: bounds a correlator's "
        "arrays for one task (~0.1 MB per column at +-200 s and 20 Hz). 128 cut its peak RSS at N = 520 from "
        "406-442 to 305 MiB, but the streaming stacker took 70-88 core-s against 65-69 unsplit (2.5x the "
        "tasks), so the default splits only rows of more than 1,024 stations",
    )
    block_columns: int = Field(
        128,
        ge=64,
        multiple_of=64,
        description="columns a correlator computes and writes at a time within a row task, a whole number of 64-slot "
        "CCF chunks: bounds its arrays per task whatever the row's width, without more tasks for the stacker "
        "(correlator peak RSS at N = 520: 421 MiB with whole rows, 331 at 128, at the same 56.1 core-s)",
    )

    # --- Science -----------------------------------------------------------------------------------------------
    processing: ProcessingParams = Field(default_factory=ProcessingParams, description="DSP parameters")
    dvv: DvvParams = Field(
        default_factory=DvvParams, description="dv/v monitoring: coda window, methods and the reference (issue 14)"
    )
    dvv_csv_method: Literal["stretching", "mwcs"] = Field(
        "stretching", description="the method behind OUT/dvv_network.csv (both methods are in the store)"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Kwargs beat env vars, env vars beat the YAML file named by ``XCORRFLOW_CONFIG``."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        yaml_path = os.environ.get(CONFIG_ENV)
        if yaml_path:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_path))
        return tuple(sources)

    # --- Derived values ----------------------------------------------------------------------------------------
    @property
    def bootstrap_servers(self) -> str:
        """Kafka bootstrap servers clients connect to."""
        return self.kafka_bootstrap or f"{self.kafka_host}:{self.kafka_port}"

    @property
    def s3_address(self) -> str:
        """S3 endpoint as host:port, the form the minio client takes."""
        return self.s3_endpoint or f"{self.s3_host}:{self.s3_port}"

    @property
    def s3_url(self) -> str:
        """S3 endpoint as a URL."""
        return f"{'https' if self.s3_secure else 'http'}://{self.s3_address}"

    @property
    def s3_unsigned(self) -> bool:
        """Whether S3 clients send UNSIGNED-PAYLOAD: ``s3_unsigned_payload``, or when unset, over HTTPS or to a
        loopback endpoint (where TLS or the kernel, not a SHA-256 of the body, keeps it intact)."""
        if self.s3_unsigned_payload is not None:
            return self.s3_unsigned_payload
        return self.s3_secure or _is_loopback(self.s3_address.rpartition(":")[0] or self.s3_address)

    @property
    def prometheus_url(self) -> str:
        """Base URL of Prometheus."""
        return f"http://{self.prometheus_host}:{self.prometheus_port}"

    @property
    def key_prefix(self) -> str:
        """The namespace as an object-key prefix: '' or the namespace with one trailing '/'."""
        return namespace_prefix(self.namespace)

    @property
    def scoped_topics(self) -> TopicNames:
        """The topic names under :attr:`topic_prefix`."""
        return self.topics.with_prefix(self.topic_prefix)

    def scoped(self, scope: str) -> Settings:
        """These settings confined to one run's scope: topics under ``<scope>.`` and objects under ``<scope>/``."""
        return self.model_copy(update={"namespace": scope, "topic_prefix": scope})

    @property
    def targets_dir(self) -> Path:
        """Prometheus file-based discovery directory; every worker registers itself there."""
        return self.home / "prometheus" / "targets"

    def public_dump(self) -> dict[str, Any]:
        """Settings as JSON-able data with every secret masked, for reports and ``config show``."""
        return self.model_dump(mode="json")


def namespace_prefix(namespace: str) -> str:
    """'' or ``namespace`` with exactly one trailing '/' (and none leading)."""
    ns = namespace.strip("/")
    return f"{ns}/" if ns else ""


def use_config_file(config_file: str | os.PathLike[str]) -> None:
    """Make ``config_file`` the YAML file of every later :class:`Settings` of this process and of the workers
    it starts (they inherit ``XCORRFLOW_CONFIG``): what ``--config`` does."""
    os.environ[CONFIG_ENV] = str(config_file)


def load_settings(config_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Load settings from the environment, an optional YAML file and explicit overrides.

    Args:
        config_file: a YAML file; takes the place of ``XCORRFLOW_CONFIG`` when given.
        **overrides: field values that win over every other source.

    Returns:
        The frozen settings.

    Raises:
        pydantic.ValidationError: a value is malformed or a key is unknown.
    """
    if config_file is None:
        return Settings(**overrides)
    previous = os.environ.get(CONFIG_ENV)
    os.environ[CONFIG_ENV] = str(config_file)
    try:
        return Settings(**overrides)
    finally:
        if previous is None:
            os.environ.pop(CONFIG_ENV, None)
        else:
            os.environ[CONFIG_ENV] = previous


def _is_loopback(host: str) -> bool:
    """``localhost``, or a loopback IP address (``127.0.0.0/8``, ``::1``)."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
