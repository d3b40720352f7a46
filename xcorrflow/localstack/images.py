"""``make images``: the testcontainers suite's Kafka and S3 images, built here because no registry is reachable.

1. A Debian base image: ``debootstrap --variant=minbase`` from the machine's own apt source into a folder, then
   ``podman import`` (only when the image is missing: this is the slow step).
2. ``infra/containers/kafka/Containerfile``: Java 17 from Debian plus the jars of ``infra/kafka/pom.xml``, which
   the native stack already fetched into ``~/.cache/xcorrflow`` (fetched now if not).
3. ``infra/containers/s3/Containerfile``: the versitygw binary the native stack builds (built now if not).

Each Containerfile is built from a staged context under ``<cache>/images/<name>``; podman's layer cache makes
a rebuild with unchanged inputs take seconds.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from contracts.settings import Settings
from xcorrflow.localstack.errors import StackError
from xcorrflow.localstack.kafka import LOG4J, TEMPLATE, KafkaService, pom_kafka_version
from xcorrflow.localstack.podman import image_exists, podman_env
from xcorrflow.localstack.s3 import VERSITYGW_VERSION, VersityGatewayService
from xcorrflow.localstack.service import INFRA, Say, StackPaths, run_visible

CONTAINERS = INFRA / "containers"
SOURCES_DIR = Path("/etc/apt/sources.list.d")
SOURCES_LIST = Path("/etc/apt/sources.list")


@dataclass(frozen=True)
class AptSource:
    """Where debootstrap fetches Debian from."""

    uri: str
    suite: str


def kafka_image() -> str:
    """Tag of the Kafka image: the pom's Kafka version."""
    return f"localhost/xcorrflow/kafka:{pom_kafka_version()}"


def s3_image() -> str:
    """Tag of the S3 image: the pinned versitygw release."""
    return f"localhost/xcorrflow/versitygw:{VERSITYGW_VERSION}"


def base_image(suite: str) -> str:
    """Tag of the Debian base image of a suite."""
    return f"localhost/xcorrflow/debian:{suite}"


def machine_apt_source(sources_dir: Path = SOURCES_DIR, sources_list: Path = SOURCES_LIST) -> AptSource:
    """The machine's Debian ``main`` source for its own release (deb822 files first, then sources.list).

    Raises:
        StackError: no enabled Debian main source of this release is configured.
    """
    codename = _codename()
    for path in sorted(sources_dir.glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = _deb822(stanza)
            suites, uris = fields.get("suites", "").split(), fields.get("uris", "").split()
            usable = "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no"
            if usable and codename in suites and "main" in fields.get("components", "").split() and uris:
                return AptSource(uris[0], codename)
    if sources_list.exists():
        for line in sources_list.read_text().splitlines():
            match = re.match(r"deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.*)", line.strip())
            if match and match.group(2) == codename and "main" in match.group(3).split():
                return AptSource(match.group(1), codename)
    raise StackError(f"no Debian '{codename} main' source in {sources_dir} or {sources_list}")


def _codename() -> str:
    """This machine's Debian release name (``VERSION_CODENAME`` of /etc/os-release)."""
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip('"')
    raise StackError("/etc/os-release names no VERSION_CODENAME")


def _deb822(stanza: str) -> dict[str, str]:
    """One deb822 stanza as lower-case keys (comments skipped, no continuation lines needed here)."""
    fields = {}
    for line in stanza.splitlines():
        if line.startswith("#") or ":" not in line:
            continue
        key, _, value = line.partition(":")
        fields[key.strip().lower()] = value.strip()
    return fields


class ImageBuilder:
    """Builds the base, Kafka and S3 images; :meth:`build_all` returns the seconds each step took."""

    def __init__(self, settings: Settings, say: Say) -> None:
        self.settings = settings
        self.say = say
        self.stage = settings.cache_dir / "images"

    def build_all(self, rebuild_base: bool = False) -> dict[str, float]:
        """Build every image (the base only when missing or asked to).

        Raises:
            StackError: a tool is missing or a build step failed.
        """
        timings: dict[str, float] = {}
        source = machine_apt_source()
        for name, step in (
            ("base", lambda: self.build_base(source, rebuild_base)),
            ("kafka", lambda: self.build_kafka(source.suite)),
            ("s3", lambda: self.build_s3(source.suite)),
        ):
            t0 = time.monotonic()
            step()
            timings[name] = round(time.monotonic() - t0, 1)
        self.say("images: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
        return timings

    def build_base(self, source: AptSource, rebuild: bool = False) -> str:
        """``debootstrap`` a minimal Debian and ``podman import`` it; skipped when the image exists."""
        tag = base_image(source.suite)
        if image_exists(tag) and not rebuild:
            self.say(f"images: {tag} exists")
            return tag
        rootfs = self.stage / "rootfs"
        shutil.rmtree(rootfs, ignore_errors=True)
        rootfs.parent.mkdir(parents=True, exist_ok=True)
        argv = ["debootstrap", "--variant=minbase", source.suite, str(rootfs), source.uri]
        run_visible(argv, say=self.say, what="images: debootstrap")
        shutil.rmtree(rootfs / "var" / "cache" / "apt" / "archives", ignore_errors=True)  # the .debs
        self._import(rootfs, tag)
        shutil.rmtree(rootfs, ignore_errors=True)
        return tag

    def _import(self, rootfs: Path, tag: str) -> None:
        """``tar -C rootfs -c . | podman import - tag``.

        Raises:
            StackError: either side failed.
        """
        self.say(f"images: podman import {tag}")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            ["podman", "import", "-", tag], stdin=tar.stdout, capture_output=True, text=True, env=podman_env()
        )
        if tar.stdout is not None:
            tar.stdout.close()
        if tar.wait() != 0 or imported.returncode != 0:
            raise StackError(f"podman import {tag} failed: {imported.stderr.strip()[-2000:]}")

    def build_kafka(self, suite: str) -> str:
        """The Kafka image, from the native stack's jars (fetched first when missing)."""
        kafka = KafkaService(self.settings, StackPaths.from_settings(self.settings), self.say)
        kafka.install()
        context = self._stage("kafka", {"server.properties.tmpl": TEMPLATE, "log4j2.properties": LOG4J})
        _link_tree(kafka.libs, context / "libs")
        return self._build(kafka_image(), context, suite)

    def build_s3(self, suite: str) -> str:
        """The S3 image, from the native stack's versitygw binary (built first when missing)."""
        s3 = VersityGatewayService(self.settings, StackPaths.from_settings(self.settings), self.say)
        s3.install()
        context = self._stage("s3", {"versitygw": s3.binary})
        return self._build(s3_image(), context, suite)

    def _stage(self, name: str, extra: dict[str, Path]) -> Path:
        """A fresh build context: ``infra/containers/<name>/*`` plus ``extra`` files."""
        context = self.stage / name
        shutil.rmtree(context, ignore_errors=True)
        shutil.copytree(CONTAINERS / name, context)
        for target, source in extra.items():
            shutil.copy2(source, context / target)
        return context

    def _build(self, tag: str, context: Path, suite: str) -> str:
        argv = ["podman", "build", "--build-arg", f"BASE={base_image(suite)}", "-t", tag, str(context)]
        run_visible(argv, say=self.say, what=f"images: {tag}", env=podman_env())
        return tag


def _link_tree(source: Path, target: Path) -> None:
    """Copy a directory by hard links when both sides share a file system (43 MB of jars), else by copies."""

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link_or_copy)
