"""Debian's podman as the container engine of the testcontainers suite: its settings and its Docker-API socket.

No Docker engine runs on these machines. Podman does, rootful, with runc and without default ulimits; those two
settings live in ``infra/containers/containers.conf`` and reach every podman process through ``CONTAINERS_CONF``,
so the machine's own ``/etc/containers`` is never edited. testcontainers-python talks to ``podman system
service`` through ``DOCKER_HOST`` (Ryuk off: podman has no use for the reaper, the fixtures remove what they
start).
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from xcorrflow.localstack.errors import StackError
from xcorrflow.localstack.service import INFRA

CONTAINERS_CONF = INFRA / "containers" / "containers.conf"
PACKAGES = ("podman", "runc", "debootstrap")


def podman_env() -> dict[str, str]:
    """The environment of every podman process this project starts."""
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def podman(*args: str, check: bool = True, timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
    """Run ``podman <args>`` with the project's settings.

    Raises:
        StackError: podman is missing, or (with ``check``) it failed; the message has its stderr.
    """
    binary = shutil.which("podman")
    if binary is None:
        raise StackError("podman is not installed: `make test-containers` installs it (infra/ensure-packages.sh)")
    done = subprocess.run(
        [binary, *args], capture_output=True, text=True, env=podman_env(), timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise StackError(f"podman {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done


def image_exists(name: str) -> bool:
    """True when the local image store holds ``name``."""
    return podman("image", "exists", name, check=False).returncode == 0


def socket_answers(path: Path, timeout: float = 2.0) -> bool:
    """True when a Docker-compatible API answers ``GET /_ping`` on the unix socket ``path``."""
    conn = _UnixHTTPConnection(str(path), timeout)
    try:
        conn.request("GET", "/_ping")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


class PodmanService:
    """``podman system service`` on a unix socket, started and stopped by this object only."""

    def __init__(self, sock: Path, log: Path) -> None:
        self.sock = sock
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def docker_host(self) -> str:
        """The ``DOCKER_HOST`` value that reaches this service."""
        return f"unix://{self.sock}"

    def start(self, timeout: float = 30.0) -> PodmanService:
        """Start the service and wait until its socket answers.

        Raises:
            StackError: podman is missing, exited, or its socket stayed silent.
        """
        binary = shutil.which("podman")
        if binary is None:
            raise StackError("podman is not installed: `make test-containers` installs it")
        self.sock.parent.mkdir(parents=True, exist_ok=True)
        self.sock.unlink(missing_ok=True)
        with open(self.log, "ab") as out:
            argv = [binary, "system", "service", "--time=0", self.docker_host]
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=podman_env())
        deadline = time.monotonic() + timeout
        while not socket_answers(self.sock):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise StackError(f"podman system service did not answer on {self.sock}; see {self.log}")
            time.sleep(0.2)
        return self

    def stop(self) -> None:
        """Stop the service this object started (SIGTERM, then SIGKILL after 10 s)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (the Docker API's usual transport)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        """Connect to the socket file instead of a TCP address."""
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)
