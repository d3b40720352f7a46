"""Common lifecycle of one local-stack service: install once, prepare, start, wait until healthy, stop."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from contracts.settings import Settings
from xcorrflow.localstack import process
from xcorrflow.localstack.errors import StackError

Say = Callable[[str], None]

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA = REPO_ROOT / "infra"


@dataclass(frozen=True)
class StackPaths:
    """Where the stack keeps its state. Data persists across down/up; ``clean-data`` wipes it."""

    home: Path

    @classmethod
    def from_settings(cls, settings: Settings) -> StackPaths:
        """The stack home of the settings (a relative path is relative to the current directory)."""
        return cls(home=settings.home.resolve())

    def data(self, service: str) -> Path:
        """Persistent data directory of a service."""
        return self.home / service

    def pid_file(self, service: str) -> Path:
        """Pid file of a service."""
        return self.home / "run" / f"{service}.pid"

    def log_file(self, service: str) -> Path:
        """Log file of a service (stdout and stderr)."""
        return self.home / "logs" / f"{service}.log"


class Service(ABC):
    """One native service of the local stack."""

    name: str = ""
    start_timeout: float = 60.0

    def __init__(self, settings: Settings, paths: StackPaths, say: Say) -> None:
        self.settings = settings
        self.paths = paths
        self.say = say

    # --- to implement ----------------------------------------------------------------------------------------
    @abstractmethod
    def install(self) -> None:
        """Fetch or build the service's binaries into the cache, once."""

    @abstractmethod
    def argv(self) -> list[str]:
        """Command line that runs the service in the foreground."""

    @abstractmethod
    def healthy(self) -> bool:
        """True when the service answers its readiness check."""

    @abstractmethod
    def endpoints(self) -> list[tuple[str, int]]:
        """(host, port) pairs the service listens on."""

    @abstractmethod
    def version(self) -> str:
        """Version string of the installed service."""

    def prepare(self) -> None:  # noqa: B027 - optional hook
        """Write configuration and initialise storage before the first start."""

    def env(self) -> dict[str, str]:
        """Environment of the service process."""
        return dict(os.environ)

    def after_start(self) -> None:  # noqa: B027 - optional hook
        """Run once the service is healthy (create buckets, write targets)."""

    # --- lifecycle -------------------------------------------------------------------------------------------
    @property
    def pid_file(self) -> Path:
        """This service's pid file."""
        return self.paths.pid_file(self.name)

    @property
    def log_file(self) -> Path:
        """This service's log file."""
        return self.paths.log_file(self.name)

    def running(self) -> bool:
        """True when the process recorded in the pid file is alive."""
        record = process.read_pid_file(self.pid_file)
        return record is not None and process.is_alive(record)

    def start(self) -> str:
        """Start the service unless it already runs; wait until it is healthy.

        Returns:
            "running" when it was already up, "started" otherwise.

        Raises:
            StackError: a port is taken by a foreign process, or the service did not become healthy in time.
        """
        if self.running():
            if not process.wait_until(self.healthy, timeout=self.start_timeout):
                raise StackError(f"{self.name} runs but is not healthy; see {self.log_file}")
            self.after_start()
            return "running"
        for host, port in self.endpoints():
            process.require_free_port(self.name, host, port)
        self.install()
        self.prepare()
        t0 = time.monotonic()
        record = process.spawn(self.argv(), pid_file=self.pid_file, log_file=self.log_file, env=self.env())
        ready = process.wait_until(lambda: self.healthy() or not process.is_alive(record), timeout=self.start_timeout)
        if not (ready and process.is_alive(record) and self.healthy()):
            process.stop(self.pid_file)
            raise StackError(
                f"{self.name} did not become healthy within {self.start_timeout:.0f} s; last log lines of "
                f"{self.log_file}:\n{process.tail(self.log_file)}"
            )
        self.say(f"{self.name}: healthy after {time.monotonic() - t0:.1f} s (pid {record.pid})")
        self.after_start()
        return "started"

    def stop(self) -> bool:
        """Stop the service if this stack started it. Returns True when a process was stopped."""
        return process.stop(self.pid_file)


def run_visible(argv: Sequence[str], *, say: Say, what: str, env: dict[str, str] | None = None) -> None:
    """Run an install step with its output streamed, prefixed, so a first run shows progress.

    Raises:
        StackError: the command is missing or fails; the message carries its last output lines.
    """
    if shutil.which(argv[0]) is None:
        raise StackError(f"{what}: '{argv[0]}' is not installed on this machine")
    say(f"{what}: {' '.join(argv)}")
    t0 = time.monotonic()
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1)
    last: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        last = [*last[-30:], line]
        say(f"  | {line}")
    if proc.wait() != 0:
        raise StackError(f"{what} failed (exit {proc.returncode}):\n" + "\n".join(last))
    say(f"{what}: done in {time.monotonic() - t0:.0f} s")
