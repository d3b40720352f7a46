"""The storage contract against the service-free backends, plus what only the local directory store can get wrong."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage import (
    InvalidKey,
    LocalDirStore,
    MemoryStore,
    ObjectStore,
    PrefixedStore,
    StorageConfigError,
    keys,
    open_store,
)
from tests.storage_contract import StoreContract


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def store(self) -> ObjectStore:
        return MemoryStore()


class TestLocalDirStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> ObjectStore:
        return LocalDirStore(tmp_path / "root")


class TestPrefixedMemoryStore(StoreContract):
    """A scoped view must honour the whole contract too (tests and runs use nothing else)."""

    @pytest.fixture
    def store(self) -> ObjectStore:
        return MemoryStore().scoped("tests/abc")


# --- the local store and the file system ------------------------------------------------------------------------


@pytest.fixture
def jail(tmp_path: Path) -> Iterator[tuple[LocalDirStore, Path]]:
    """A local store rooted at tmp/root, next to a tmp/outside directory that must stay untouched."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"do not read")
    yield LocalDirStore(tmp_path / "root", durable=False), outside
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert (outside / "secret").read_bytes() == b"do not read"


def test_planted_directory_symlink_is_never_followed(jail: tuple[LocalDirStore, Path]) -> None:
    store, outside = jail
    os.symlink(outside, os.path.join(store.root, "evil"))
    with pytest.raises(InvalidKey):
        store.put("evil/x", b"1")
    with pytest.raises(InvalidKey):
        store.put_if_absent("evil/x", b"1")
    with pytest.raises(InvalidKey):
        store.get("evil/secret")
    with pytest.raises(InvalidKey):
        store.stat("evil/secret")
    with pytest.raises(InvalidKey):
        store.list("evil")
        list(store.list("evil"))
    assert list(store.list()) == []  # the symlink is not an object


def test_planted_file_symlink_is_never_read(jail: tuple[LocalDirStore, Path]) -> None:
    store, outside = jail
    os.makedirs(os.path.join(store.root, "prep"))
    os.symlink(outside / "secret", os.path.join(store.root, "prep", "link"))
    for attempt in (
        lambda: store.get("prep/link"),
        lambda: store.stat("prep/link"),
        lambda: store.put_if_absent("prep/link", b"x"),
        lambda: store.delete("prep/link"),
        lambda: store.get_file("prep/link", Path(store.root).parent / "copy"),
    ):
        with pytest.raises(InvalidKey):
            attempt()
    assert list(store.list("prep")) == []


def test_put_over_a_planted_file_symlink_replaces_the_link_not_its_target(jail: tuple[LocalDirStore, Path]) -> None:
    store, outside = jail
    os.symlink(outside / "secret", os.path.join(store.root, "link"))
    store.put("link", b"mine")  # rename(2) replaces the link itself
    assert not os.path.islink(os.path.join(store.root, "link"))
    assert store.get("link") == b"mine"


@pytest.mark.parametrize("key", ["../outside/secret", "a/../../outside/secret", "/etc/passwd", "..\\outside"])
def test_traversal_attempts_are_rejected(jail: tuple[LocalDirStore, Path], key: str) -> None:
    store, _ = jail
    with pytest.raises(InvalidKey):
        store.put(key, b"x")
    with pytest.raises(InvalidKey):
        store.get(key)
    with pytest.raises(InvalidKey):
        store.scoped("runs/r1").put(key, b"x")


_SEGMENT_CHARS = st.sampled_from([*"aZ09._-/\\:%~ \x00\n", "..", "\u00e9", "\u2215", "\uff0e"])
_KEYISH = st.lists(_SEGMENT_CHARS, min_size=0, max_size=12).map("".join)
# Mostly-plausible multi-segment keys, so that many examples pass validation and reach the disk.
_GOOD_SEGMENT = st.from_regex(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,5}", fullmatch=True)
_BAD_SEGMENT = st.sampled_from(["..", ".", "", ".x", "a\\b", "a b", "\u00e9", "a\x00"])
_PATHLIKE = st.lists(st.one_of(_GOOD_SEGMENT, _GOOD_SEGMENT, _GOOD_SEGMENT, _BAD_SEGMENT), min_size=1, max_size=5).map(
    "/".join
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=_KEYISH | _PATHLIKE)
def test_no_valid_key_resolves_outside_the_root(tmp_path: Path, key: str) -> None:
    store = LocalDirStore(tmp_path / "root", durable=False)
    try:
        keys.validate_key(key)
    except InvalidKey:
        with pytest.raises(InvalidKey):
            store.put(key, b"x")
        return
    resolved = os.path.realpath(store.path_for(key))
    assert resolved.startswith(store.root + os.sep)
    assert os.path.commonpath([store.root, resolved]) == store.root
    assert ".." not in key.split("/")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(_KEYISH, min_size=1, max_size=3), prefix=st.sampled_from(["", "runs/r1", "prep/w/"]))
def test_joined_keys_stay_under_their_prefix_and_on_disk_under_the_root(
    tmp_path: Path, parts: list[str], prefix: str
) -> None:
    store = LocalDirStore(tmp_path / "root", durable=False)
    try:
        key = keys.join(prefix, *parts)
    except InvalidKey:
        return
    assert key.startswith(keys.validate_prefix(prefix))
    store.put(key, b"x")
    written = [os.path.join(d, f) for d, _, files in os.walk(tmp_path) for f in files if not f.startswith(".")]
    assert written == [os.path.join(store.root, *key.split("/"))]
    store.delete(key)


def test_hidden_bookkeeping_files_are_never_listed(tmp_path: Path) -> None:
    store = LocalDirStore(tmp_path, durable=False)
    store.put("w/a", b"1", metadata={"k": "v"})
    on_disk = sorted(os.listdir(tmp_path / "w"))
    assert on_disk == [".meta-a.json", "a"]
    (tmp_path / "w" / ".tmp-crashed-writer").write_bytes(b"partial")
    (tmp_path / "w" / "not a key").write_bytes(b"dropped in by hand")
    assert [info.key for info in store.list()] == ["w/a"]


def test_files_copied_in_by_hand_are_objects_with_md5_etags(tmp_path: Path) -> None:
    store = LocalDirStore(tmp_path, durable=False)
    (tmp_path / "raw" / "20100901T000000Z").mkdir(parents=True)
    (tmp_path / "raw" / "20100901T000000Z" / "YA.UV05..HHZ.mseed").write_bytes(b"miniseed")
    info = store.stat("raw/20100901T000000Z/YA.UV05..HHZ.mseed")
    assert info.etag == hashlib.md5(b"miniseed").hexdigest()
    assert (info.content_type, dict(info.metadata or {})) == ("application/octet-stream", {})
    assert store.put_if_absent("raw/20100901T000000Z/YA.UV05..HHZ.mseed", b"miniseed").created is False


def test_a_stale_side_car_is_ignored_not_trusted(tmp_path: Path) -> None:
    store = LocalDirStore(tmp_path, durable=False)
    store.put("k", b"old", metadata={"v": "old"})
    (tmp_path / "k").write_bytes(b"rewritten by another tool")  # the side-car no longer matches
    info = store.stat("k")
    assert info.etag == hashlib.md5(b"rewritten by another tool").hexdigest()
    assert dict(info.metadata or {}) == {}


def test_local_root_must_be_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StorageConfigError):
        LocalDirStore(tmp_path / "file")


# --- factory --------------------------------------------------------------------------------------------------


def test_open_store_urls(tmp_path: Path) -> None:
    assert isinstance(open_store("memory://"), MemoryStore)
    local = open_store(f"file://{tmp_path}/store")
    assert isinstance(local, LocalDirStore)
    assert local.root == str(tmp_path / "store")
    for bad in ("ftp://x", "memory://name", "file://host/path", "s3://", "nonsense", "file:///x?durable=0"):
        with pytest.raises(StorageConfigError):
            open_store(bad)


def test_scoped_views_flatten_and_refuse_an_empty_prefix() -> None:
    view = MemoryStore().scoped("a").scoped("b/")
    assert isinstance(view, PrefixedStore)
    assert view.prefix == "a/b/"
    assert not isinstance(view.inner, PrefixedStore)
    with pytest.raises(InvalidKey):
        MemoryStore().scoped("")
