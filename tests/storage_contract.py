"""The behaviour every :class:`storage.base.ObjectStore` must show, written once and run against every backend.

Use: subclass :class:`StoreContract` in a ``Test*`` class and provide a ``store`` fixture yielding an empty
store (or an empty scoped view) that the test may fill. ``tests/unit/storage/test_storage_backends.py`` runs it for the
memory and local-directory stores, ``tests/integration/storage/test_storage_s3.py`` for the real S3 server.
"""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from storage import (
    InvalidKey,
    InvalidMetadata,
    KeyPathConflict,
    ObjectConflict,
    ObjectNotFound,
    ObjectStore,
)

# Keys that must be refused by every operation of every backend, before any I/O.
BAD_KEYS = [
    "",
    "/abs/olute",
    "a//b",
    "a/",
    "..",
    "../escape",
    "a/../../escape",
    "./a",
    "a/./b",
    ".hidden",
    "a/.hidden",
    "a\\b",
    "..\\escape",
    "a b",
    "a\x00b",
    "a\nb",
    "a\tb",
    "caf\u00e9",
    "a+b",
    "a?b",
    "a#b",
    "a%2F..",
    "C:/windows",
    "a" * 1025,
    "x/" + "y" * 201,
]


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class StoreContract:
    """Contract tests; ``store`` is an empty store owned by the test."""

    # --- put / get / stat / exists -----------------------------------------------------------------------------

    def test_put_then_get_round_trips_bytes(self, store: ObjectStore) -> None:
        payload = bytes(range(256)) * 4
        info = store.put("prep/20100901T000000Z/YA.UV05..HHZ.npz", payload)
        assert info.key == "prep/20100901T000000Z/YA.UV05..HHZ.npz"
        assert info.size == len(payload)
        assert info.etag == _md5(payload)
        assert store.get(info.key) == payload

    def test_empty_object(self, store: ObjectStore) -> None:
        info = store.put("empty", b"")
        assert (info.size, info.etag) == (0, _md5(b""))
        assert store.get("empty") == b""
        assert store.stat("empty").size == 0

    def test_stat_describes_the_object_with_metadata(self, store: ObjectStore) -> None:
        before = datetime.now(UTC) - timedelta(seconds=5)
        store.put("runs/r1/report.json", b"{}", content_type="application/json", metadata={"steps": "demean,taper"})
        info = store.stat("runs/r1/report.json")
        assert (info.key, info.size, info.etag) == ("runs/r1/report.json", 2, _md5(b"{}"))
        assert info.content_type == "application/json"
        assert dict(info.metadata or {}) == {"steps": "demean,taper"}
        assert info.last_modified.tzinfo is not None
        assert before <= info.last_modified <= datetime.now(UTC) + timedelta(seconds=5)

    def test_metadata_round_trips_exactly(self, store: ObjectStore) -> None:
        metadata = {"empty": "", "inner-spaces": "a  b", "punctuation": 'x"y,z;=:/', "n0": "0"}
        store.put("m", b"x", metadata=metadata)
        assert dict(store.stat("m").metadata or {}) == metadata

    def test_default_content_type(self, store: ObjectStore) -> None:
        store.put("blob", b"x")
        assert store.stat("blob").content_type == "application/octet-stream"

    def test_missing_object(self, store: ObjectStore) -> None:
        with pytest.raises(ObjectNotFound) as caught:
            store.get("nope/missing")
        assert caught.value.key.endswith("nope/missing")
        with pytest.raises(ObjectNotFound):
            store.stat("nope/missing")
        assert store.exists("nope/missing") is False

    def test_exists(self, store: ObjectStore) -> None:
        store.put("ccf/20100901T000000Z/A.B..HHZ__C.D..HHZ.npz", b"1")
        assert store.exists("ccf/20100901T000000Z/A.B..HHZ__C.D..HHZ.npz")
        assert not store.exists("ccf/20100901T000000Z")  # a directory is not an object

    def test_put_overwrites(self, store: ObjectStore) -> None:
        store.put("k", b"old", metadata={"v": "1"})
        info = store.put("k", b"new", metadata={"v": "2"})
        assert info.etag == _md5(b"new")
        assert store.get("k") == b"new"
        assert dict(store.stat("k").metadata or {}) == {"v": "2"}

    def test_put_accepts_bytearray_and_keeps_a_copy(self, store: ObjectStore) -> None:
        buffer = bytearray(b"abc")
        store.put("k", buffer)  # type: ignore[arg-type]
        buffer[0] = ord("z")
        assert store.get("k") == b"abc"

    # --- list ------------------------------------------------------------------------------------------------

    def test_list_is_sorted_by_key(self, store: ObjectStore) -> None:
        # '-' and '.' sort before '/', '0' after it: a naive directory walk gets this wrong.
        keys = ["p/a0", "p/a/2", "p/a.b", "p/a-b", "p/a/1", "p/ab/1", "p/B", "p/a/z/deep"]
        for key in keys:
            store.put(key, key.encode())
        assert [info.key for info in store.list("p")] == sorted(keys)
        assert [info.key for info in store.list()] == sorted(keys)

    def test_list_prefix_is_a_directory(self, store: ObjectStore) -> None:
        store.put("prep/a/1", b"1")
        store.put("prep/a/sub/2", b"2")
        store.put("prep/ab/3", b"3")
        store.put("prep/a-c", b"4")
        expected = ["prep/a/1", "prep/a/sub/2"]
        assert [info.key for info in store.list("prep/a")] == expected
        assert [info.key for info in store.list("prep/a/")] == expected

    def test_list_non_recursive_skips_subdirectories(self, store: ObjectStore) -> None:
        store.put("w/1", b"1")
        store.put("w/sub/2", b"2")
        store.put("w/3", b"3")
        assert [info.key for info in store.list("w", recursive=False)] == ["w/1", "w/3"]

    def test_list_dir_names_objects_and_subdirectories_once(self, store: ObjectStore) -> None:
        for key in ["z/a/c/0/0", "z/a/c/0/1", "z/a/c/1/0", "z/a/zarr.json", "z/a-b", "z/a0", "z/zarr.json"]:
            store.put(key, b"x")
        assert list(store.list_dir("z")) == ["a-b", "a/", "a0", "zarr.json"]
        assert list(store.list_dir("z/a/")) == ["c/", "zarr.json"]
        assert list(store.list_dir("z/a/c")) == ["0/", "1/"]
        assert list(store.list_dir()) == ["z/"]
        assert list(store.list_dir("z/nothing")) == []
        with pytest.raises(InvalidKey):
            store.list_dir("../up")

    def test_get_range_reads_part_of_an_object(self, store: ObjectStore) -> None:
        data = bytes(range(256)) * 40
        store.put("r/obj", data)
        assert store.get_range("r/obj", 0, 10) == data[:10]
        assert store.get_range("r/obj", 1000, 2000) == data[1000:3000]
        assert store.get_range("r/obj", 10_000) == data[10_000:]
        assert store.get_range("r/obj", 10_000, 1_000) == data[10_000:]  # cut at the end
        assert store.get_range("r/obj", 10_240) == b""  # starts at the end
        assert store.get_range("r/obj", 50_000, 10) == b""
        assert store.get_range("r/obj", 5, 0) == b""
        with pytest.raises(ObjectNotFound):
            store.get_range("r/missing", 0, 1)
        with pytest.raises(ObjectNotFound):
            store.get_range("r/missing", 0, 0)
        with pytest.raises(ValueError):
            store.get_range("r/obj", -1, 1)
        with pytest.raises(InvalidKey):
            store.get_range("../up", 0, 1)

    def test_list_reports_size_and_etag(self, store: ObjectStore) -> None:
        store.put("d/x", b"hello")
        (info,) = store.list("d")
        assert (info.key, info.size, info.etag) == ("d/x", 5, _md5(b"hello"))
        assert info.last_modified.tzinfo is not None

    def test_list_missing_prefix_is_empty(self, store: ObjectStore) -> None:
        assert list(store.list("nothing/here")) == []

    def test_list_rejects_bad_prefix_at_call_time(self, store: ObjectStore) -> None:
        with pytest.raises(InvalidKey):
            store.list("../up")
        with pytest.raises(InvalidKey):
            store.list("/abs")

    # --- delete ----------------------------------------------------------------------------------------------

    def test_delete(self, store: ObjectStore) -> None:
        store.put("d/1", b"1")
        store.put("d/2", b"2")
        store.delete("d/1")
        assert not store.exists("d/1")
        assert [info.key for info in store.list("d")] == ["d/2"]

    def test_delete_missing_is_a_no_op(self, store: ObjectStore) -> None:
        store.delete("never/was")
        store.put("x/y", b"1")
        store.delete("x/y")
        store.delete("x/y")

    def test_directory_disappears_with_its_last_object(self, store: ObjectStore) -> None:
        store.put("gone/only", b"1")
        store.delete("gone/only")
        store.put("gone", b"now a file")  # no stale directory in the way
        assert store.get("gone") == b"now a file"

    # --- idempotent and conditional writes ---------------------------------------------------------------------

    def test_put_if_absent_creates(self, store: ObjectStore) -> None:
        outcome = store.put_if_absent("ccf/w/p.npz", b"result", metadata={"pair": "a-b"})
        assert outcome.created is True
        assert (outcome.info.key, outcome.info.etag) == ("ccf/w/p.npz", _md5(b"result"))
        assert store.get("ccf/w/p.npz") == b"result"
        assert dict(store.stat("ccf/w/p.npz").metadata or {}) == {"pair": "a-b"}

    def test_put_if_absent_same_content_is_idempotent(self, store: ObjectStore) -> None:
        store.put_if_absent("k", b"same")
        again = store.put_if_absent("k", b"same", metadata={"ignored": "yes"})
        assert again.created is False
        assert (again.info.size, again.info.etag) == (4, _md5(b"same"))

    def test_put_if_absent_different_content_conflicts(self, store: ObjectStore) -> None:
        store.put_if_absent("k", b"first")
        with pytest.raises(ObjectConflict) as caught:
            store.put_if_absent("k", b"second")
        assert caught.value.key.endswith("k")
        assert caught.value.existing_etag == _md5(b"first")
        assert caught.value.new_etag == _md5(b"second")
        assert store.get("k") == b"first"  # untouched

    def test_put_if_absent_after_plain_put(self, store: ObjectStore) -> None:
        store.put("k", b"v")
        assert store.put_if_absent("k", b"v").created is False
        with pytest.raises(ObjectConflict):
            store.put_if_absent("k", b"w")

    def test_concurrent_creators_exactly_one_wins(self, store: ObjectStore) -> None:
        results: list[str] = []
        lock = threading.Lock()
        start = threading.Barrier(8)

        def writer(n: int) -> None:
            start.wait()
            try:
                outcome = store.put_if_absent("race/key", f"writer-{n}".encode())
                status = "created" if outcome.created else "same"
            except ObjectConflict:
                status = "conflict"
            with lock:
                results.append(status)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(results) == ["conflict"] * 7 + ["created"]
        assert store.get("race/key").startswith(b"writer-")

    def test_concurrent_identical_writers_all_succeed(self, store: ObjectStore) -> None:
        outcomes: list[bool] = []
        start = threading.Barrier(6)

        def writer() -> None:
            start.wait()
            outcomes.append(store.put_if_absent("same/key", b"identical").created)

        threads = [threading.Thread(target=writer) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcomes) == [False] * 5 + [True]

    # --- key rules and path collisions ---------------------------------------------------------------------

    @pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
    def test_bad_keys_are_refused_by_every_operation(self, store: ObjectStore, key: str) -> None:
        for attempt in (
            lambda: store.put(key, b"x"),
            lambda: store.put_if_absent(key, b"x"),
            lambda: store.get(key),
            lambda: store.stat(key),
            lambda: store.exists(key),
            lambda: store.delete(key),
        ):
            with pytest.raises(InvalidKey):
                attempt()
        assert list(store.list()) == []

    def test_object_and_directory_cannot_share_a_name(self, store: ObjectStore) -> None:
        """File-system semantics, as on versitygw's posix backend; AWS S3 itself would allow both names."""
        store.put("a/b", b"1")
        with pytest.raises(KeyPathConflict):
            store.put("a", b"2")
        with pytest.raises(KeyPathConflict):
            store.put_if_absent("a", b"2")
        store.put("f", b"1")
        with pytest.raises(KeyPathConflict):
            store.put("f/g", b"2")
        assert [info.key for info in store.list()] == ["a/b", "f"]

    def test_longest_allowed_segment_with_metadata(self, store: ObjectStore) -> None:
        key = "long/" + "x" * 200
        store.put(key, b"1", metadata={"k": "v"})
        assert dict(store.stat(key).metadata or {}) == {"k": "v"}
        assert [info.key for info in store.list("long")] == [key]

    def test_bad_metadata_is_refused(self, store: ObjectStore) -> None:
        for metadata in ({"Upper": "x"}, {"k": "caf\u00e9"}, {"k": " padded "}, {"k_x": "v"}, {"k": "v" * 3000}):
            with pytest.raises(InvalidMetadata):
                store.put("m", b"x", metadata=metadata)
        with pytest.raises(InvalidMetadata):
            store.put("m", b"x", content_type="not a type")
        assert not store.exists("m")

    # --- files and views -------------------------------------------------------------------------------------

    def test_put_file_and_get_file(self, store: ObjectStore, tmp_path: Path) -> None:
        tmp_path = tmp_path / "files"  # the local store may live in tmp_path too
        tmp_path.mkdir()
        source = tmp_path / "in.bin"
        payload = bytes(range(256)) * 5000  # 1.28 MB: several read chunks
        source.write_bytes(payload)
        info = store.put_file("files/in.bin", source, content_type="application/x-test")
        assert (info.size, info.etag) == (len(payload), _md5(payload))
        target = tmp_path / "out.bin"
        fetched = store.get_file("files/in.bin", target)
        assert target.read_bytes() == payload
        assert (fetched.size, fetched.etag) == (len(payload), _md5(payload))
        assert fetched.content_type == "application/x-test"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in.bin", "out.bin"]  # no temporary file left

    def test_get_file_of_missing_object_leaves_no_file(self, store: ObjectStore, tmp_path: Path) -> None:
        tmp_path = tmp_path / "files"
        tmp_path.mkdir()
        with pytest.raises(ObjectNotFound):
            store.get_file("nope", tmp_path / "out")
        assert list(tmp_path.iterdir()) == []

    def test_scoped_view_isolates_and_strips_its_prefix(self, store: ObjectStore) -> None:
        view = store.scoped("runs/r1")
        view.put("report.json", b"{}")
        store.put("runs/r10/report.json", b"other run")
        assert store.get("runs/r1/report.json") == b"{}"
        assert [info.key for info in view.list()] == ["report.json"]
        assert view.stat("report.json").key == "report.json"
        assert view.put_if_absent("report.json", b"{}").info.key == "report.json"
        nested = view.scoped("sub")
        nested.put("x", b"1")
        assert store.exists("runs/r1/sub/x")
        with pytest.raises(InvalidKey):
            view.get("../r10/report.json")
