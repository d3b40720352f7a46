"""What :class:`storage.zarrstore.ZarrObjectStore` must do over any object store, written once.

Subclass :class:`ZarrStoreContract` and provide an ``inner`` fixture yielding an empty :class:`ObjectStore` (or a
scoped view). ``tests/unit/storage/test_zarrstore.py`` runs it on the memory and local-directory stores,
``tests/integration/storage/test_zarrstore_s3.py`` on the real S3 server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import pytest
import zarr
from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.core.buffer import cpu, default_buffer_prototype

from storage import ObjectStore
from storage.zarrstore import ZarrObjectStore

LAGS = 8001
PROTO = default_buffer_prototype()


def run(coro: Any) -> Any:
    """Run one coroutine of the adapter to completion."""
    return asyncio.run(coro)


async def collect(items: AsyncIterator[str]) -> list[str]:
    """Every item of an async iterator."""
    return [item async for item in items]


def buf(data: bytes) -> cpu.Buffer:
    """A zarr CPU buffer over ``data``."""
    return cpu.Buffer.from_bytes(data)


class ZarrStoreContract:
    """The adapter's behaviour, whatever object store it wraps."""

    @pytest.fixture
    def zstore(self, inner: ObjectStore) -> Iterator[ZarrObjectStore]:
        store = ZarrObjectStore(inner.scoped("results.zarr"))
        yield store
        store.close()

    # --- zarr arrays --------------------------------------------------------------------------------------------

    def test_ccf_array_round_trips_chunk_by_chunk(self, inner: ObjectStore, zstore: ZarrObjectStore) -> None:
        rows, chunks = 16, 4
        data = np.random.default_rng(1).standard_normal((rows * chunks, LAGS)).astype(np.float32)
        root = zarr.open_group(zstore, mode="w", attributes={"window": "20240101T000000Z"})
        array = root.create_array(
            "ccf", shape=data.shape, chunks=(rows, LAGS), dtype="float32", compressors=None, fill_value=0.0
        )
        for i in range(chunks):  # as correlators would: each writes its own block of rows
            array[i * rows : (i + 1) * rows] = data[i * rows : (i + 1) * rows]
        chunk = inner.get("results.zarr/ccf/c/1/0")
        assert len(chunk) == rows * LAGS * 4  # the bytes codec alone: raw little-endian float32
        assert np.array_equal(np.frombuffer(chunk, "<f4").reshape(rows, LAGS), data[rows : 2 * rows])
        again = zarr.open_group(ZarrObjectStore(inner.scoped("results.zarr"), read_only=True), mode="r")
        assert again.attrs["window"] == "20240101T000000Z"
        assert list(again.array_keys()) == ["ccf"]
        assert np.array_equal(again["ccf"][:], data)
        assert np.array_equal(again["ccf"][20:40, 100:200], data[20:40, 100:200])

    @pytest.mark.filterwarnings("ignore:Consolidated metadata is currently not part")
    def test_consolidated_metadata_opens(self, inner: ObjectStore, zstore: ZarrObjectStore) -> None:
        root = zarr.open_group(zstore, mode="w")
        root.create_array("stack", shape=(3, LAGS), chunks=(3, LAGS), dtype="float32", compressors=None)
        root.create_group("meta").create_array("lag_s", shape=(LAGS,), dtype="float64", compressors=None)
        zarr.consolidate_metadata(zstore)
        opened = zarr.open_consolidated(ZarrObjectStore(inner.scoped("results.zarr")), mode="r")
        assert sorted(name for name, _ in opened.members(max_depth=None)) == ["meta", "meta/lag_s", "stack"]

    # --- reads ----------------------------------------------------------------------------------------------

    def test_byte_ranges(self, zstore: ZarrObjectStore) -> None:
        data = bytes(range(256)) * 8
        run(zstore.set("c/0", buf(data)))
        cases = [
            (RangeByteRequest(10, 20), data[10:20]),
            (RangeByteRequest(2000, 5000), data[2000:]),
            (OffsetByteRequest(1000), data[1000:]),
            (SuffixByteRequest(7), data[-7:]),
            (SuffixByteRequest(5000), data),
            (None, data),
        ]
        for byte_range, expected in cases:
            got = run(zstore.get("c/0", PROTO, byte_range))
            assert got is not None and got.to_bytes() == expected, byte_range
        parts = run(zstore.get_partial_values(PROTO, [("c/0", RangeByteRequest(0, 4)), ("c/9", None)]))
        assert parts[0].to_bytes() == data[:4] and parts[1] is None

    def test_missing_and_impossible_keys_read_as_absent(self, zstore: ZarrObjectStore) -> None:
        assert run(zstore.get("c/0", PROTO)) is None
        assert run(zstore.get(".zarray", PROTO)) is None  # zarr v2 probes: no object can have that key
        assert run(zstore.exists("c/0")) is False
        assert run(zstore.exists(".zgroup")) is False
        with pytest.raises(FileNotFoundError):
            run(zstore.getsize("c/0"))
        run(zstore.delete("c/0"))  # missing: not an error

    def test_sync_methods(self, zstore: ZarrObjectStore) -> None:
        zstore.set_sync("a/b", buf(b"abc"))
        got = zstore.get_sync("a/b", byte_range=RangeByteRequest(1, 3))
        assert got is not None and got.to_bytes() == b"bc"
        zstore.delete_sync("a/b")
        assert zstore.get_sync("a/b") is None

    # --- writes ---------------------------------------------------------------------------------------------

    def test_set_if_not_exists_leaves_an_existing_object_alone(self, zstore: ZarrObjectStore) -> None:
        run(zstore.set("k", buf(b"first")))
        run(zstore.set_if_not_exists("k", buf(b"second")))
        run(zstore.set_if_not_exists("k2", buf(b"new")))
        assert run(zstore.get("k", PROTO)).to_bytes() == b"first"
        assert run(zstore.get("k2", PROTO)).to_bytes() == b"new"
        assert run(zstore.getsize("k")) == 5

    def test_read_only_refuses_writes(self, zstore: ZarrObjectStore) -> None:
        run(zstore.set("k", buf(b"x")))
        reader = zstore.with_read_only(True)
        assert reader.read_only and reader == ZarrObjectStore(zstore.store, read_only=True)
        for attempt in (reader.set("k", buf(b"y")), reader.delete("k"), reader.set_if_not_exists("j", buf(b"y"))):
            with pytest.raises(ValueError):
                run(attempt)
        assert run(reader.get("k", PROTO)).to_bytes() == b"x"

    # --- listing --------------------------------------------------------------------------------------------

    def test_listing(self, zstore: ZarrObjectStore) -> None:
        keys = ["zarr.json", "a/zarr.json", "a/c/0/0", "a/c/1/0", "ab/zarr.json", "b/c/0"]
        for key in keys:
            run(zstore.set(key, buf(b"1")))
        assert run(collect(zstore.list())) == sorted(keys)
        assert run(collect(zstore.list_prefix(""))) == sorted(keys)
        assert run(collect(zstore.list_prefix("a/"))) == ["a/c/0/0", "a/c/1/0", "a/zarr.json"]
        assert run(collect(zstore.list_prefix("a"))) == ["a/c/0/0", "a/c/1/0", "a/zarr.json", "ab/zarr.json"]
        assert run(collect(zstore.list_prefix("a/c/0"))) == ["a/c/0/0"]
        assert run(collect(zstore.list_dir(""))) == ["a", "ab", "b", "zarr.json"]
        assert run(collect(zstore.list_dir("a"))) == ["c", "zarr.json"]
        assert run(collect(zstore.list_dir("a/c/"))) == ["0", "1"]
        assert run(collect(zstore.list_dir("nothing"))) == []
        assert run(zstore.getsize_prefix("a")) == 3

    def test_delete_dir_and_clear(self, zstore: ZarrObjectStore) -> None:
        for key in ["a/c/0", "a/c/1", "ab/x", "b/y"]:
            run(zstore.set(key, buf(b"1")))
        run(zstore.delete_dir("a"))
        assert run(collect(zstore.list())) == ["ab/x", "b/y"]
        assert not run(zstore.is_empty(""))
        run(zstore.clear())
        assert run(zstore.is_empty(""))
