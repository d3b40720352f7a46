"""The S3 server of the local stack: versitygw (Apache-2.0), built once with ``go install``, posix backend.

The MinIO *server* is AGPL and is never built or run here; it appears only in infra/docker-compose.yml. The
project talks to either server through the ``minio`` Python client.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from xcorrflow.localstack.errors import StackError
from xcorrflow.localstack.service import INFRA, Service, run_visible

VERSITYGW_MODULE = "github.com/versity/versitygw/cmd/versitygw"
VERSITYGW_VERSION = "v1.8.0"
EVENT_FILTER = INFRA / "s3" / "event-filter.json"


class VersityGatewayService(Service):
    """versitygw serving ``<home>/s3/data`` with metadata in a sidecar directory (no xattr support needed)."""

    name = "s3"
    start_timeout = 30.0

    @property
    def binary(self) -> Path:
        """The cached versitygw binary of the pinned release."""
        return self.settings.cache_dir / f"versitygw-{VERSITYGW_VERSION}" / "versitygw"

    def install(self) -> None:
        """Build the pinned versitygw release once with ``go install`` (pure Go, no cgo)."""
        if self.binary.exists():
            return
        if shutil.which("go") is None:
            raise StackError("s3: Go is needed once to build versitygw (`go install`), and 'go' is not on PATH")
        self.say(f"s3: building versitygw {VERSITYGW_VERSION} with go install (first run only, a few minutes)")
        gobin = self.binary.parent.with_name(self.binary.parent.name + ".partial")
        shutil.rmtree(gobin, ignore_errors=True)
        env = {**os.environ, "GOBIN": str(gobin), "GOFLAGS": "-buildvcs=false", "CGO_ENABLED": "0"}
        run_visible(
            ["go", "install", "-v", f"{VERSITYGW_MODULE}@{VERSITYGW_VERSION}"],
            say=self.say,
            what="s3: go",
            env=env,
        )
        shutil.rmtree(self.binary.parent, ignore_errors=True)
        gobin.rename(self.binary.parent)

    def prepare(self) -> None:
        """Create the data and sidecar-metadata directories."""
        for sub in ("data", "meta"):
            (self.paths.data("s3") / sub).mkdir(parents=True, exist_ok=True)

    def env(self) -> dict[str, str]:
        """Credentials travel in the environment, never on the command line (where `ps` would show them)."""
        return {
            **os.environ,
            "ROOT_ACCESS_KEY": self.settings.s3_access_key.get_secret_value(),
            "ROOT_SECRET_KEY": self.settings.s3_secret_key.get_secret_value(),
        }

    def argv(self) -> list[str]:
        """versitygw global options, then the posix backend."""
        s = self.settings
        argv = [
            str(self.binary),
            "--port",
            f"{s.s3_host}:{s.s3_port}",
            "--health",
            "/health",
            "--quiet",
            "--region",
            s.s3_region,
        ]
        if s.s3_notifications:
            # Bucket notifications (Records[] JSON) to Kafka, so producers that only write objects take part.
            argv += [
                "--event-kafka-url",
                s.bootstrap_servers,
                "--event-kafka-topic",
                s.topics.s3_events,
                "--event-filter",
                str(EVENT_FILTER),
            ]
        data = self.paths.data("s3")
        return [*argv, "posix", "--sidecar", str(data / "meta"), str(data / "data")]

    def endpoints(self) -> list[tuple[str, int]]:
        """The S3 API port."""
        return [(self.settings.s3_host, self.settings.s3_port)]

    def healthy(self) -> bool:
        """Ready when the health endpoint answers 200."""
        try:
            with urllib.request.urlopen(f"{self.settings.s3_url}/health", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def after_start(self) -> None:
        """Create the project bucket if it does not exist yet."""
        from xcorrflow.localstack.health import ensure_bucket

        if ensure_bucket(self.settings):
            self.say(f"s3: created bucket {self.settings.s3_bucket}")

    def version(self) -> str:
        """The pinned release."""
        return f"versitygw {VERSITYGW_VERSION}"
