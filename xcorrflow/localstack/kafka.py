"""Apache Kafka 4.x, one combined broker + controller in KRaft mode, run from jars fetched by infra/kafka/pom.xml."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import string
import subprocess
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from xcorrflow.localstack import process
from xcorrflow.localstack.errors import StackError
from xcorrflow.localstack.service import INFRA, Service, run_visible

if TYPE_CHECKING:
    from contracts.settings import Settings

POM = INFRA / "kafka" / "pom.xml"
TEMPLATE = INFRA / "kafka" / "server.properties.tmpl"
LOG4J = INFRA / "kafka" / "log4j2.properties"


def pom_kafka_version(pom: Path = POM) -> str:
    """The Kafka version the pom pins."""
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text())
    if not match:
        raise StackError(f"{pom} names no <kafka.version>")
    return match.group(1)


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, base64url without padding (what ``StorageTool random-uuid`` prints).

    Generating it here saves one JVM start (several seconds) on the first ``make up``. Like Kafka's own
    ``Uuid.randomUuid`` it never starts with ``-``: one id in 64 would, and ``kafka-storage format -t -…``
    then reads the id as an option and fails (a CI run failed so).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class KafkaService(Service):
    """The local Kafka broker."""

    name = "kafka"
    start_timeout = 90.0

    @property
    def libs(self) -> Path:
        """Directory of the broker's jars; keyed by the pom's content, so editing the pom refetches."""
        digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:10]
        return self.settings.cache_dir / f"kafka-{pom_kafka_version()}-{digest}" / "libs"

    @property
    def data_dir(self) -> Path:
        """KRaft metadata and topic logs."""
        return self.paths.data("kafka") / "data"

    def install(self) -> None:
        """Fetch the broker jars from Maven Central once (``mvn dependency:copy-dependencies``)."""
        marker = self.libs / ".complete"
        if marker.exists():
            return
        self.say(f"kafka: fetching Apache Kafka {pom_kafka_version()} jars from Maven Central (first run only)")
        partial = self.libs.with_name("libs.partial")
        shutil.rmtree(partial, ignore_errors=True)
        run_visible(
            [
                "mvn",
                "-B",
                "-ntp",
                "-f",
                str(POM),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={partial}",
                "-DincludeScope=runtime",
            ],
            say=self.say,
            what="kafka: maven",
        )
        shutil.rmtree(self.libs, ignore_errors=True)
        partial.rename(self.libs)
        marker.touch()

    def prepare(self) -> None:
        """Render server.properties and format the storage directory the first time only."""
        home = self.paths.data("kafka")
        home.mkdir(parents=True, exist_ok=True)
        props = home / "server.properties"
        props.write_text(
            string.Template(TEMPLATE.read_text()).substitute(
                host=self.settings.kafka_host,
                port=self.settings.kafka_port,
                controller_port=self.settings.kafka_controller_port,
                data_dir=self.data_dir,
            )
        )
        if (self.data_dir / "meta.properties").exists():
            return
        self.say("kafka: formatting KRaft storage (first start only)")
        result = subprocess.run(
            [
                *self._java(),
                "kafka.tools.StorageTool",
                "format",
                "-t",
                new_cluster_id(),
                "-c",
                str(props),
                "--ignore-formatted",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(f"kafka storage format failed:\n{result.stdout}\n{result.stderr}")

    def _java(self, *jvm_opts: str) -> list[str]:
        java_home = os.environ.get("JAVA_HOME")
        java = str(Path(java_home) / "bin" / "java") if java_home else "java"
        if shutil.which(java) is None:
            raise StackError("kafka: no 'java' on PATH (Java 17+ is required)")
        return [java, *jvm_opts, "-cp", f"{self.libs}/*"]

    def argv(self) -> list[str]:
        """``java … kafka.Kafka server.properties`` with a modest heap and the C1 compiler only, for a 2-core
        machine."""
        logs = self.paths.data("kafka") / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        return [
            *self._java(
                f"-Xmx{self.settings.kafka_heap}",
                "-Xms256m",
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                # C1 only: C2 spent most of the broker's CPU compiling. Six 400-transaction loops on a fresh
                # broker cost 3.9-5.2 ms of broker CPU per transaction, against 10.7 falling to 4.9-6.1 with C2;
                # at N = 260 streaming the broker took 5.8-6.4 core-s instead of 9.7-14.4.
                "-XX:TieredStopAtLevel=1",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={LOG4J}",
                f"-Dkafka.logs.dir={logs}",
            ),
            "kafka.Kafka",
            str(self.paths.data("kafka") / "server.properties"),
        ]

    def endpoints(self) -> list[tuple[str, int]]:
        """Client and controller listeners."""
        host = self.settings.kafka_host
        return [(host, self.settings.kafka_port), (host, self.settings.kafka_controller_port)]

    def healthy(self) -> bool:
        """Ready means the broker answers a metadata request with itself in the broker list."""
        return kafka_metadata_ok(self.settings.bootstrap_servers)

    def version(self) -> str:
        """Version from the pom."""
        return pom_kafka_version()


def kafka_metadata_ok(kafka: Settings | str, timeout: float = 3.0) -> bool:
    """True when a broker of ``kafka`` (settings, or a plaintext bootstrap string) answers a metadata request."""
    from contracts.kafka import connection_config

    config = connection_config(kafka)
    host, _, port = config["bootstrap.servers"].split(",")[0].rpartition(":")
    if not process.port_open(host, int(port)):
        return False  # avoids librdkafka's connection-refused log lines while the broker starts
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({**config, "log_level": 0})
    try:
        metadata = admin.list_topics(timeout=timeout)
    except Exception:  # KafkaException while the broker starts; health checks report, they do not raise
        return False
    return bool(metadata.brokers)
