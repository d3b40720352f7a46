"""The object-store interface every backend implements, and its prefixed view (:class:`PrefixedStore`).

The value types it returns and the helpers the backends share are :mod:`storage.objects`.

Callers (producers, the commit broker, correlators, the stacker, run export) hold an :class:`ObjectStore` and
never know whether it is S3, a local directory or memory. Semantics every backend honours:

- ``put`` is atomic: a reader sees the old object or the new one, never a partial one. "Committed" means
  "fully written" (DESIGN.md §1).
- ``put_if_absent`` makes writes idempotent: the first writer creates the object; a later writer with the same
  bytes is told it was already there; a later writer with different bytes gets :class:`ObjectConflict`.
- ``list`` yields objects sorted by key, and its prefix is a directory (``prep/a`` never lists ``prep/ab``).
- ``delete`` of a missing key is a no-op, so cleanup can be retried.
- ``a`` and ``a/b`` cannot both be objects (:class:`KeyPathConflict`), as on any file-system backed store.

Where the backends differ, and why it does not matter to callers:

- ETag: the lowercase hex MD5 of the content everywhere, except objects that S3Store uploads in parts (bodies
  above its 16 MiB threshold), whose ETag is S3's ``<md5 of the part md5s>-<parts>``. Compare content with
  ``put_if_absent`` (which handles both forms), not by comparing ETags across backends.
- ``last_modified``: S3 has one-second resolution, and ``put`` on S3 reports the server's response time
  (PutObject returns no Last-Modified), which may differ from a later ``stat`` by up to a second.
- Conditional creates are atomic on S3 servers that honour ``If-None-Match`` (versitygw, MinIO, AWS) and on
  the local and memory stores; otherwise S3Store falls back to stat-then-put (see :mod:`storage.s3`).
- The local store keeps metadata in a side-car written just after the data: a reader racing a write, or a crash
  in between, sees the object without metadata (see :mod:`storage.local`).
"""

from __future__ import annotations

import dataclasses
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from types import TracebackType

from storage.errors import InvalidKey, ObjectNotFound
from storage.keys import validate_key, validate_prefix
from storage.objects import ObjectInfo, PutOutcome, check_range, children, write_file_atomically


class ObjectStore(ABC):
    """A flat namespace of immutable-once-written byte objects addressed by validated keys."""

    @abstractmethod
    def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Write (or overwrite) an object atomically.

        Args:
            key: a valid key (see :mod:`storage.keys`).
            data: the content.
            content_type: MIME type; ``application/octet-stream`` when omitted.
            metadata: user metadata, lowercase ``[a-z0-9-]`` keys and printable-ASCII values, 2 KiB in all.

        Returns:
            The stored object's info (``last_modified`` may differ from a later ``stat`` by up to a second).

        Raises:
            InvalidKey, InvalidMetadata: bad arguments; nothing was written.
            KeyPathConflict: ``key`` is a directory of other objects, or one of its parents is an object.
            StorageUnavailable: transient failures outlasted the retries.
        """

    @abstractmethod
    def put_if_absent(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> PutOutcome:
        """Create an object only if the key is free; the idempotent write.

        Content equality is byte equality; content type and metadata are not compared.

        Args:
            key, data, content_type, metadata: as for :meth:`put`.

        Returns:
            ``PutOutcome(created=True, ...)`` if written now, ``created=False`` if the same bytes were there.

        Raises:
            ObjectConflict: the key holds different bytes (which stay untouched).
            InvalidKey, InvalidMetadata, KeyPathConflict, StorageUnavailable: as for :meth:`put`.
        """

    @abstractmethod
    def get(self, key: str) -> bytes:
        """Read a whole object.

        Raises:
            ObjectNotFound: nothing under ``key``.
            InvalidKey, StorageUnavailable: as for :meth:`put`.
        """

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Describe an object, including its content type and metadata.

        Raises:
            ObjectNotFound: nothing under ``key``.
            InvalidKey, StorageUnavailable: as for :meth:`put`.
        """

    @abstractmethod
    def list(self, prefix: str = "", *, recursive: bool = True) -> Iterator[ObjectInfo]:
        """Yield the objects under a directory prefix, sorted by key.

        Args:
            prefix: ``""`` for everything, else a directory (``"prep/w1"`` == ``"prep/w1/"``).
            recursive: False yields only the objects directly under ``prefix``, not those in sub-directories.

        Yields:
            :class:`ObjectInfo` with ``content_type`` and ``metadata`` left ``None``.

        Raises:
            InvalidKey: bad prefix. StorageUnavailable: transient failures outlasted the retries.
        """

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object; removing a missing object is not an error.

        Raises:
            InvalidKey, StorageUnavailable: as for :meth:`put`.
        """

    def exists(self, key: str) -> bool:
        """True if an object is stored under ``key`` (how correlators skip pairs already done).

        Raises:
            InvalidKey, StorageUnavailable: as for :meth:`put`.
        """
        try:
            self.stat(key)
        except ObjectNotFound:
            return False
        return True

    def get_range(self, key: str, offset: int, length: int | None = None) -> bytes:
        """Read part of an object: ``length`` bytes from ``offset`` (to the end when None).

        A range that runs past the end is cut at the end; one that starts at or past the end reads ``b""``,
        as slicing would. Backends override this to fetch only the range (S3 sends a ``Range`` header).

        Raises:
            ValueError: a negative offset or length.
            ObjectNotFound: nothing under ``key``.
            InvalidKey, StorageUnavailable: as for :meth:`put`.
        """
        check_range(offset, length)
        data = self.get(key)
        return data[offset:] if length is None else data[offset : offset + length]

    def list_dir(self, prefix: str = "") -> Iterator[str]:
        """Yield the names directly under a directory prefix, sorted: objects, and sub-directories with a ``/``.

        For a store holding ``a/x``, ``a/b/y`` and ``a/b/z``, ``list_dir("a")`` yields ``b/`` and ``x``. The
        default derives it from a recursive listing; backends override it with one directory-level request.

        Raises:
            InvalidKey: bad prefix. StorageUnavailable: transient failures outlasted the retries.
        """
        directory = validate_prefix(prefix)
        return children(directory, (info.key for info in self.list(directory)))

    def put_file(
        self,
        key: str,
        path: str | os.PathLike[str],
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Write a file's content as an object. Backends override this to stream big files.

        Raises:
            OSError: the file cannot be read. Otherwise as for :meth:`put`.
        """
        with open(path, "rb") as handle:
            data = handle.read()
        return self.put(key, data, content_type=content_type, metadata=metadata)

    def get_file(self, key: str, path: str | os.PathLike[str]) -> ObjectInfo:
        """Copy an object into a local file, atomically (a temporary file beside ``path``, then a rename).

        Returns:
            The object's info.

        Raises:
            ObjectNotFound: nothing under ``key``. OSError: ``path`` cannot be written.
        """
        info = self.stat(key)
        data = self.get(key)
        write_file_atomically(path, [data])
        return info

    def scoped(self, prefix: str) -> PrefixedStore:
        """A view of this store in which every key lives under ``prefix`` (one per run or test).

        Raises:
            InvalidKey: bad prefix.
        """
        return PrefixedStore(self, prefix)

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release connections or handles. The default has nothing to release."""

    def __enter__(self) -> ObjectStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class PrefixedStore(ObjectStore):
    """Delegates to ``inner`` with ``prefix`` prepended to every key and stripped from every returned key.

    Keys are validated *before* joining, so a key can never climb out of the prefix. Errors raised by the
    inner store (e.g. :class:`ObjectNotFound`) name the full key, which is what one needs when debugging.
    """

    def __init__(self, inner: ObjectStore, prefix: str) -> None:
        """Wrap ``inner``; ``prefix`` is a directory (``"tests/abc"`` == ``"tests/abc/"``).

        Raises:
            InvalidKey: bad prefix (the empty prefix is refused: use the inner store itself).
        """
        directory = validate_prefix(prefix)
        if not directory:
            raise InvalidKey(prefix, "a scoped view needs a non-empty prefix")
        # Flatten nested views so that each call crosses one layer only.
        if isinstance(inner, PrefixedStore):
            directory = inner.prefix + directory
            inner = inner.inner
        self.inner: ObjectStore = inner
        self.prefix: str = directory

    def __repr__(self) -> str:
        return f"PrefixedStore({self.inner!r}, {self.prefix!r})"

    def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """See :meth:`ObjectStore.put`."""
        info = self.inner.put(self._full(key), data, content_type=content_type, metadata=metadata)
        return self._relative(info)

    def put_if_absent(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> PutOutcome:
        """See :meth:`ObjectStore.put_if_absent`."""
        outcome = self.inner.put_if_absent(self._full(key), data, content_type=content_type, metadata=metadata)
        return PutOutcome(created=outcome.created, info=self._relative(outcome.info))

    def get(self, key: str) -> bytes:
        """See :meth:`ObjectStore.get`."""
        return self.inner.get(self._full(key))

    def stat(self, key: str) -> ObjectInfo:
        """See :meth:`ObjectStore.stat`."""
        return self._relative(self.inner.stat(self._full(key)))

    def exists(self, key: str) -> bool:
        """See :meth:`ObjectStore.exists`."""
        return self.inner.exists(self._full(key))

    def list(self, prefix: str = "", *, recursive: bool = True) -> Iterator[ObjectInfo]:
        """See :meth:`ObjectStore.list`."""
        listed = self.inner.list(self.prefix + validate_prefix(prefix), recursive=recursive)
        return (self._relative(info) for info in listed)

    def get_range(self, key: str, offset: int, length: int | None = None) -> bytes:
        """See :meth:`ObjectStore.get_range`."""
        return self.inner.get_range(self._full(key), offset, length)

    def list_dir(self, prefix: str = "") -> Iterator[str]:
        """See :meth:`ObjectStore.list_dir`."""
        return self.inner.list_dir(self.prefix + validate_prefix(prefix))

    def delete(self, key: str) -> None:
        """See :meth:`ObjectStore.delete`."""
        self.inner.delete(self._full(key))

    def put_file(
        self,
        key: str,
        path: str | os.PathLike[str],
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """See :meth:`ObjectStore.put_file`; streams when the inner store does."""
        info = self.inner.put_file(self._full(key), path, content_type=content_type, metadata=metadata)
        return self._relative(info)

    def get_file(self, key: str, path: str | os.PathLike[str]) -> ObjectInfo:
        """See :meth:`ObjectStore.get_file`; streams when the inner store does."""
        return self._relative(self.inner.get_file(self._full(key), path))

    def close(self) -> None:
        """Do nothing: a view does not own the inner store, which other views may still use."""

    def _full(self, key: str) -> str:
        return validate_key(self.prefix + validate_key(key))

    def _relative(self, info: ObjectInfo) -> ObjectInfo:
        return dataclasses.replace(info, key=info.key[len(self.prefix) :])
