"""The benchmark's own stack: Kafka, the S3 server and Prometheus under a home and on ports of their own.

``make bench-scale`` must never disturb a developer's running stack (``make up``, 19xxx ports) or the chaos
harness (28xxx/29xxx), so it starts the same native stack under ``bench/.data/stack`` on 27xxx ports, and
stops it at the end if it started it. Every setting is a flag; ``--use-running-stack`` takes the
``XCORRFLOW_*`` settings of the environment instead and starts nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.cpu_budget import service_pids
from xcorrflow.localstack.service import StackPaths

HOME = Path(__file__).resolve().parent.parent / ".data" / "stack"
# Variables that point clients at some other stack: the private one is addressed by its ports only.
FOREIGN = ("XCORRFLOW_KAFKA_BOOTSTRAP", "XCORRFLOW_S3_ENDPOINT", "XCORRFLOW_TARGETS_DIR")


@dataclass(frozen=True)
class StackConfig:
    """Where the private stack lives and listens."""

    home: Path = HOME
    kafka_port: int = 27092
    controller_port: int = 27093
    s3_port: int = 27000
    prometheus_port: int = 27090

    def env(self, base: dict[str, str]) -> dict[str, str]:
        """``base`` with every variable that selects a stack replaced by this one's."""
        env = {k: v for k, v in base.items() if k not in FOREIGN}
        env.update(
            {
                "XCORRFLOW_HOME": str(self.home),
                "XCORRFLOW_KAFKA_PORT": str(self.kafka_port),
                "XCORRFLOW_KAFKA_CONTROLLER_PORT": str(self.controller_port),
                "XCORRFLOW_S3_PORT": str(self.s3_port),
                "XCORRFLOW_PROMETHEUS_PORT": str(self.prometheus_port),
                "XCORRFLOW_S3_NOTIFICATIONS": "false",  # the runs need none, and the topic would be one more load
            }
        )
        return env


class Stack:
    """A stack the benchmark uses: started (and later stopped) by it, or one already running."""

    def __init__(self, config: StackConfig | None, env: dict[str, str]) -> None:
        self.config, self.env = config, env
        self.started = False

    @property
    def home(self) -> Path:
        """The stack's home (services' data, pid files)."""
        if self.config is not None:
            return self.config.home
        from contracts.settings import Settings

        return Settings().home.resolve()

    def _xcorrflow(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "xcorrflow", *args], env=self.env, text=True, capture_output=True, check=check
        )

    def healthy(self) -> bool:
        """True when Kafka and the S3 server answer."""
        return self._xcorrflow("status", "--json", check=False).returncode == 0

    def up(self) -> None:
        """Start the private stack unless it already runs (a no-op for a running stack).

        Raises:
            RuntimeError: it did not start (the message holds the end of its output).
        """
        if self.config is None or self.healthy():
            return
        done = self._xcorrflow("stack", "up", check=False)
        if done.returncode != 0:
            raise RuntimeError(f"xcorrflow stack up failed:\n{(done.stdout + done.stderr)[-3000:]}")
        self.started = True

    def down(self) -> None:
        """Stop the stack if this benchmark started it."""
        if self.started:
            self._xcorrflow("stack", "down", check=False)
            self.started = False

    def delete_leftovers(self) -> list[str]:
        """Delete the runs an interrupted benchmark left on its private stack (never on a stack not its own)."""
        if self.config is None:
            return []
        from contracts.settings import Settings
        from storage import open_store
        from xcorrflow.orchestration.runs import delete_run, list_runs

        settings = Settings()
        runs = list_runs(settings)
        store = open_store(settings)
        for run_id in runs:
            delete_run(settings, store, run_id)
        return runs

    def service_pids(self) -> dict[int, str]:
        """Pid of each running native service (none for a compose stack)."""
        return service_pids(StackPaths(self.home))

    def kafka_data(self) -> Path:
        """Kafka's log directory (the topics' partitions)."""
        return self.home / "kafka" / "data"


def apply(env: dict[str, str]) -> None:
    """Make ``env`` this process's environment too, so that its own clients (S3 listing, run deletion) match."""
    for key in [k for k in os.environ if k.startswith("XCORRFLOW_") and k not in env]:
        del os.environ[key]
    os.environ.update(env)
