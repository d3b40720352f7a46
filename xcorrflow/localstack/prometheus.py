"""Prometheus from Debian's ``prometheus`` package, scraping workers found through file-based discovery."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from contracts.metrics import write_target
from xcorrflow.localstack import promconfig
from xcorrflow.localstack.errors import StackError
from xcorrflow.localstack.service import Say, Service, run_visible


def apt_install(package: str, say: Say) -> None:
    """Install a Debian package, as root or through sudo; refresh the index once if the first try fails."""
    prefix: list[str] = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if prefix and shutil.which("sudo") is None:
        raise StackError(f"'{package}' is missing and installing it needs root: apt-get install {package}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*prefix, "apt-get", "install", "-y", "-q", "--no-install-recommends", package]
    try:
        run_visible(install, say=say, what=f"apt: {package}", env=env)
    except StackError:
        run_visible([*prefix, "apt-get", "update", "-q"], say=say, what="apt: update", env=env)
        run_visible(install, say=say, what=f"apt: {package}", env=env)


class PrometheusService(Service):
    """Prometheus with its TSDB under ``<home>/prometheus`` and targets in ``<home>/prometheus/targets``."""

    name = "prometheus"
    start_timeout = 60.0

    @property
    def binary(self) -> str:
        """Path of the prometheus binary."""
        return shutil.which("prometheus") or "/usr/bin/prometheus"

    def install(self) -> None:
        """Install Debian's package once. Its own daemon is not used: this stack runs the binary itself."""
        if Path(self.binary).exists():
            return
        self.say("prometheus: installing Debian's prometheus package (first run only)")
        apt_install("prometheus", self.say)

    def prepare(self) -> None:
        """Write the config and rules next to the discovery directory (file_sd and rule paths are relative to
        the config file), with the settings' scrape interval and alert threshold."""
        home = self.paths.data("prometheus")
        (home / "data").mkdir(parents=True, exist_ok=True)
        promconfig.write_files(self.settings, home)
        address = f"{self.settings.prometheus_host}:{self.settings.prometheus_port}"
        write_target(self.settings.targets_dir, "prometheus", address)

    def argv(self) -> list[str]:
        """Foreground prometheus bound to the configured address."""
        home = self.paths.data("prometheus")
        s = self.settings
        return [
            self.binary,
            f"--config.file={home / 'prometheus.yml'}",
            f"--web.listen-address={s.prometheus_host}:{s.prometheus_port}",
            f"--storage.tsdb.path={home / 'data'}",
            "--storage.tsdb.retention.time=7d",
            "--web.enable-lifecycle",
            *promconfig.console_flags(),
        ]

    def endpoints(self) -> list[tuple[str, int]]:
        """The web/API port."""
        return [(self.settings.prometheus_host, self.settings.prometheus_port)]

    def healthy(self) -> bool:
        """Ready when ``/-/ready`` answers 200."""
        return prometheus_ready(self.settings.prometheus_url)

    def version(self) -> str:
        """``prometheus --version``'s first line, shortened."""
        try:
            out = subprocess.run([self.binary, "--version"], capture_output=True, text=True, check=False).stdout
        except OSError:
            return "not installed"
        match = re.search(r"version (\S+)", out)
        return f"prometheus {match.group(1) if match else '?'}"


def prometheus_ready(url: str) -> bool:
    """True when Prometheus at ``url`` answers ``/-/ready`` with 200."""
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False
