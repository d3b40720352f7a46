"""The object-store interface every backend implements, and the value types it returns.

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

import builtins
import hashlib
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, BinaryIO

from storage.errors import InvalidMetadata, ObjectNotFound
from storage.keys import validate_prefix

if TYPE_CHECKING:
    from storage.prefixed import PrefixedStore

DEFAULT_CONTENT_TYPE = "application/octet-stream"
# AWS caps user metadata at 2 KiB (keys + values); staying under it keeps every backend interchangeable.
MAX_METADATA_BYTES = 2048
_META_KEY = re.compile(r"[a-z0-9][a-z0-9-]{0,127}")
_META_VALUE = re.compile(r"(?:[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?)?")  # printable ASCII, no edge spaces
_CONTENT_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+_-]*/[A-Za-z0-9][A-Za-z0-9.+_-]*(?:; ?[\x21-\x7e]+)?")
_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a store knows about one object.

    Attributes:
        key: the object key, relative to the store it came from.
        size: content length in bytes.
        etag: lowercase hex MD5 of the content; ``<hex>-<n>`` for an S3 multipart upload of n parts.
        last_modified: timezone-aware UTC time of the last write (S3 has 1 s resolution).
        content_type: the stored content type; ``None`` when the call did not fetch it (``list``).
        metadata: user metadata (lowercase keys); ``None`` when the call did not fetch it (``list``).
    """

    key: str
    size: int
    etag: str
    last_modified: datetime
    content_type: str | None = None
    metadata: Mapping[str, str] | None = field(default=None, hash=False)


@dataclass(frozen=True, slots=True)
class PutOutcome:
    """Result of :meth:`ObjectStore.put_if_absent`.

    Attributes:
        created: True if this call wrote the object; False if identical content was already there. After a
            retried request, False can also mean that our own earlier attempt wrote it.
        info: the object as stored now.
    """

    created: bool
    info: ObjectInfo


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
        return _children(directory, (info.key for info in self.list(directory)))

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
        from storage.prefixed import PrefixedStore

        return PrefixedStore(self, prefix)

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release connections or handles. The default has nothing to release."""

    def __enter__(self) -> ObjectStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# --- helpers shared by the backends -------------------------------------------------------------------------


def check_range(offset: int, length: int | None) -> None:
    """Refuse a negative offset or length (the arguments of :meth:`ObjectStore.get_range`).

    Raises:
        ValueError: either is negative.
    """
    if offset < 0 or (length is not None and length < 0):
        raise ValueError(f"byte range offset={offset} length={length} must not be negative")


def _children(directory: str, keys: Iterator[str]) -> Iterator[str]:
    """Names directly under ``directory`` of a sorted key stream; sub-directories once each, with a ``/``."""
    last = None
    for key in keys:
        rest = key[len(directory) :]
        name = rest.split("/", 1)[0] + "/" if "/" in rest else rest
        if name != last:
            last = name
            yield name


def md5_hex(data: bytes) -> str:
    """Lowercase hex MD5 of ``data``: the ETag of a single-part object."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def md5_of_stream(stream: BinaryIO) -> tuple[str, int]:
    """Hex MD5 and length of a stream read to its end in 1 MiB chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    while chunk := stream.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def normalize_etag(etag: str) -> str:
    """Strip the quotes S3 puts around ETags and lowercase them."""
    return etag.strip().strip('"').lower()


def check_content_type(content_type: str | None) -> str:
    """Validate a content type and apply the default.

    Raises:
        InvalidMetadata: not a plain ``type/subtype[; param]`` ASCII string.
    """
    if content_type is None:
        return DEFAULT_CONTENT_TYPE
    if not _CONTENT_TYPE.fullmatch(content_type):
        raise InvalidMetadata(f"content type {content_type!r} is not an ASCII type/subtype")
    return content_type


def check_metadata(metadata: Mapping[str, str] | None) -> Mapping[str, str]:
    """Validate user metadata so that it round-trips identically through every backend.

    S3 sends metadata as HTTP headers: keys come back lowercased, values must be ASCII, and the total is
    capped. We reject, rather than silently alter, anything that would not survive that trip.

    Returns:
        A read-only copy.

    Raises:
        InvalidMetadata: a key or value is not portable, or the total exceeds 2 KiB.
    """
    if not metadata:
        return MappingProxyType({})
    total = 0
    for name, value in metadata.items():
        if not isinstance(name, str) or not _META_KEY.fullmatch(name):
            raise InvalidMetadata(f"metadata key {name!r} must match [a-z0-9][a-z0-9-]* (S3 lowercases keys)")
        if not isinstance(value, str) or not _META_VALUE.fullmatch(value):
            raise InvalidMetadata(f"metadata value of {name!r} must be printable ASCII without leading/trailing spaces")
        total += len(name) + len(value)
    if total > MAX_METADATA_BYTES:
        raise InvalidMetadata(f"metadata totals {total} bytes; the portable limit is {MAX_METADATA_BYTES}")
    return MappingProxyType(dict(metadata))


def write_file_atomically(path: str | os.PathLike[str], chunks: Iterator[bytes] | builtins.list[bytes]) -> None:
    """Write chunks to ``path`` via a temporary sibling and ``os.replace``: readers never see half a file.

    Raises:
        OSError: the directory is not writable; the temporary file is removed.
    """
    target = os.fspath(path)
    tmp = f"{target}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        with open(tmp, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
