"""A zarr v3 store over any :class:`~storage.base.ObjectStore`: S3, a local directory or memory, one code path.

Why our own adapter and not zarr's ``ObjectStore`` (obstore) or ``FsspecStore`` (s3fs): measured in
``bench/s3_access.py`` (figures in ``bench/README.md``). Writing and reading whole uncompressed chunks of 0.5-8 MB,
this adapter over :class:`~storage.s3.S3Store` with unsigned payloads costs the least client + server CPU per GB
of the three, and it keeps what the rest of xcorrflow relies on: our key rules, retry policy, outage tracking,
conditional creates and error types, and the same behaviour on every backend (so tests run against memory).

Zarr calls the async methods from its own event loop; each one runs the blocking store call on a thread of a
small pool owned by the adapter (``max_workers``), so that many chunks are in flight at once. Keys are zarr's,
relative to the wrapped store (scope it with :meth:`ObjectStore.scoped` to put an array under a prefix).

Semantics, mapped onto the object store:

- ``get`` of a missing key, or of a key no object could have (zarr v2 probes ``.zarray``; our keys have no hidden
  segments), returns None. Byte ranges are fetched as ranges (one ranged GET on S3); a suffix range costs a
  ``stat`` first.
- ``set`` is an atomic ``put`` (a reader sees the old chunk or the new one); ``set_if_not_exists`` is
  ``put_if_absent`` and leaves an existing object alone whatever it holds.
- Errors other than "not found" propagate unchanged: :class:`~storage.errors.StorageUnavailable` after the
  store's retries, :class:`~storage.errors.KeyPathConflict` for ``a`` beside ``a/b``.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

try:
    from zarr.abc.store import ByteRequest, OffsetByteRequest, RangeByteRequest, Store, SuffixByteRequest
    from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("storage.zarrstore needs zarr 3.1 (pip install 'zarr>=3.1,<3.2')") from exc

from storage.base import ObjectStore
from storage.errors import InvalidKey, ObjectConflict, ObjectNotFound
from storage.keys import validate_key

__all__ = ["ZarrObjectStore"]

T = TypeVar("T")
DEFAULT_WORKERS = 8  # S3Store's HTTP pool holds 10 connections


class ZarrObjectStore(Store):
    """A :class:`zarr.abc.store.Store` whose keys are objects of an :class:`ObjectStore`.

    Example::

        store = ZarrObjectStore(open_store().scoped("runs/r1/results.zarr"))
        ccf = zarr.create_array(store, name="ccf", shape=(n_pairs, n_lags), chunks=(rows, n_lags),
                                dtype="float32", compressors=None)
    """

    supports_writes = True
    supports_deletes = True
    supports_listing = True

    def __init__(
        self,
        store: ObjectStore,
        *,
        read_only: bool = False,
        max_workers: int = DEFAULT_WORKERS,
        _executor: ThreadPoolExecutor | None = None,
    ) -> None:
        """Wrap ``store``. No request is sent here.

        Args:
            store: the object store holding the hierarchy (its root is the zarr root).
            read_only: refuse writes and deletes.
            max_workers: threads running store calls, i.e. requests in flight at once.
        """
        super().__init__(read_only=read_only)
        self.store = store
        self.max_workers = max_workers
        self._owns_executor = _executor is None
        self._executor = _executor or ThreadPoolExecutor(max_workers, thread_name_prefix="zarrstore")

    def with_read_only(self, read_only: bool = False) -> ZarrObjectStore:
        """The same objects with another read-only setting (it shares this adapter's threads)."""
        return type(self)(self.store, read_only=read_only, max_workers=self.max_workers, _executor=self._executor)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ZarrObjectStore) and other.store is self.store and other.read_only == self.read_only

    def __hash__(self) -> int:
        return hash((id(self.store), self.read_only))

    def __repr__(self) -> str:
        return f"ZarrObjectStore({self.store!r}, read_only={self.read_only})"

    def close(self) -> None:
        """Mark the store closed and stop its threads (if this adapter made them); the object store stays open."""
        super().close()
        if self._owns_executor:
            self._executor.shutdown(wait=False)

    # --- reads ----------------------------------------------------------------------------------------------

    async def get(
        self, key: str, prototype: BufferPrototype | None = None, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        """The object under ``key`` (or the requested range of it), or None when there is none."""
        prototype = prototype or default_buffer_prototype()
        try:
            data = await self._run(self._read, key, byte_range)
        except (ObjectNotFound, InvalidKey):
            return None
        return prototype.buffer.from_bytes(data)

    def get_sync(
        self, key: str, *, prototype: BufferPrototype | None = None, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        """:meth:`get` without the event loop, for callers already on a thread."""
        prototype = prototype or default_buffer_prototype()
        try:
            return prototype.buffer.from_bytes(self._read(key, byte_range))
        except (ObjectNotFound, InvalidKey):
            return None

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        """Several (possibly partial) objects at once, in order; None for each missing one."""
        return list(await asyncio.gather(*(self.get(key, prototype, byte_range) for key, byte_range in key_ranges)))

    async def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key`` (one HEAD on S3)."""
        try:
            return await self._run(self.store.exists, key)
        except InvalidKey:
            return False

    async def getsize(self, key: str) -> int:
        """Size in bytes of the object under ``key``.

        Raises:
            FileNotFoundError: there is none.
        """
        try:
            info = await self._run(self.store.stat, key)
        except (ObjectNotFound, InvalidKey) as exc:
            raise FileNotFoundError(key) from exc
        return info.size

    async def getsize_prefix(self, prefix: str) -> int:
        """Total size of the objects under the directory ``prefix`` (an array or group), from one listing."""
        directory = prefix.strip("/")
        try:
            return await self._run(lambda: sum(info.size for info in self.store.list(directory)))
        except InvalidKey:
            return 0

    def _read(self, key: str, byte_range: ByteRequest | None) -> bytes:
        validate_key(key)
        if byte_range is None:
            return self.store.get(key)
        if isinstance(byte_range, RangeByteRequest):
            return self.store.get_range(key, byte_range.start, max(0, byte_range.end - byte_range.start))
        if isinstance(byte_range, OffsetByteRequest):
            return self.store.get_range(key, byte_range.offset)
        if isinstance(byte_range, SuffixByteRequest):
            size = self.store.stat(key).size
            return self.store.get_range(key, max(0, size - byte_range.suffix))
        raise ValueError(f"unexpected byte range {byte_range!r}")

    # --- writes ---------------------------------------------------------------------------------------------

    async def set(self, key: str, value: Buffer) -> None:
        """Write ``value`` under ``key`` atomically (replacing what is there)."""
        self._check_writable()
        await self._run(self.store.put, key, _payload(value))

    def set_sync(self, key: str, value: Buffer) -> None:
        """:meth:`set` without the event loop."""
        self._check_writable()
        self.store.put(key, _payload(value))

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        """Write ``value`` under ``key`` unless an object is there already (then leave it alone)."""
        self._check_writable()
        with contextlib.suppress(ObjectConflict):
            await self._run(self.store.put_if_absent, key, _payload(value))

    async def delete(self, key: str) -> None:
        """Remove the object under ``key``; a missing one is not an error."""
        self._check_writable()
        with contextlib.suppress(InvalidKey):  # no object can have that key
            await self._run(self.store.delete, key)

    def delete_sync(self, key: str) -> None:
        """:meth:`delete` without the event loop."""
        self._check_writable()
        with contextlib.suppress(InvalidKey):
            self.store.delete(key)

    async def delete_dir(self, prefix: str) -> None:
        """Remove every object under ``prefix``, several at a time."""
        self._check_writable()
        keys = [key async for key in self.list_prefix(prefix.rstrip("/") + "/" if prefix else "")]
        await asyncio.gather(*(self.delete(key) for key in keys))

    # --- listing --------------------------------------------------------------------------------------------

    async def list(self) -> AsyncIterator[str]:
        """Every key, sorted."""
        for key in await self._run(self._keys, ""):
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        """Every key that starts with ``prefix`` (a directory or any string), sorted."""
        for key in await self._run(self._keys, prefix):
            yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        """Names of the objects and sub-directories directly under ``prefix`` (no trailing ``/``)."""
        directory = prefix.strip("/")
        try:
            names = await self._run(lambda: [name.rstrip("/") for name in self.store.list_dir(directory)])
        except InvalidKey:
            return
        for name in names:
            yield name

    def _keys(self, prefix: str) -> builtins.list[str]:
        """Keys starting with ``prefix``; a prefix that is not a directory is listed from its parent."""
        directory = prefix if prefix == "" or prefix.endswith("/") else prefix.rpartition("/")[0]
        try:
            listed = self.store.list(directory)
            return [info.key for info in listed if info.key.startswith(prefix)]
        except InvalidKey:
            return []

    # --- internals ------------------------------------------------------------------------------------------

    async def _run(self, func: Callable[..., T], *args: Any) -> T:
        """Run a blocking store call on the adapter's threads."""
        await self._ensure_open()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(func, *args))


def _payload(value: Buffer) -> bytes:
    """The bytes of a zarr buffer (one copy; the stores keep what they are given)."""
    return value.to_bytes()
