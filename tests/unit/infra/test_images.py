"""The image build's inputs: the machine's apt source, image tags that match the settings' defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.settings import ContainerImages
from xcorrflow.localstack import images
from xcorrflow.localstack.errors import StackError

DEB822 = """Types: deb
URIs: https://deb.nodesource.com/node_20.x
Suites: nodistro
Components: main

"""
DEBIAN = """Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
"""


@pytest.fixture(autouse=True)
def bookworm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "_codename", lambda: "bookworm")


def test_debian_main_of_this_release_is_found_among_other_sources(tmp_path: Path) -> None:
    (tmp_path / "a-nodesource.sources").write_text(DEB822)
    (tmp_path / "debian.sources").write_text(DEBIAN)
    source = images.machine_apt_source(tmp_path, tmp_path / "sources.list")
    assert source == images.AptSource("http://deb.debian.org/debian", "bookworm")


def test_one_line_sources_list_is_the_fallback(tmp_path: Path) -> None:
    listing = tmp_path / "sources.list"
    listing.write_text("# comment\ndeb [arch=amd64] http://mirror.example/debian bookworm main contrib\n")
    assert images.machine_apt_source(tmp_path, listing).uri == "http://mirror.example/debian"


def test_no_debian_source_is_an_error_that_says_where_it_looked(tmp_path: Path) -> None:
    (tmp_path / "x.sources").write_text(DEB822)
    with pytest.raises(StackError, match="bookworm main"):
        images.machine_apt_source(tmp_path, tmp_path / "missing.list")


def test_default_test_images_are_the_ones_make_images_builds() -> None:
    defaults = ContainerImages()  # the defaults, whatever the environment says
    assert (defaults.kafka, defaults.s3, defaults.s3_kind) == (images.kafka_image(), images.s3_image(), "versitygw")
