"""The value types object stores return, and the checks and helpers every backend shares.

Apart from :mod:`storage.base` (the interface) so that the interface, its prefixed view and the backends all
import these from below and never each other.
"""

from __future__ import annotations

import builtins
import hashlib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import BinaryIO

from storage.errors import InvalidMetadata

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


# --- helpers shared by the backends -------------------------------------------------------------------------


def check_range(offset: int, length: int | None) -> None:
    """Refuse a negative offset or length (the arguments of :meth:`ObjectStore.get_range`).

    Raises:
        ValueError: either is negative.
    """
    if offset < 0 or (length is not None and length < 0):
        raise ValueError(f"byte range offset={offset} length={length} must not be negative")


def children(directory: str, keys: Iterator[str]) -> Iterator[str]:
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
