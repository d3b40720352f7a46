"""Write paths of :class:`storage.s3.S3Store`: multipart upload, and the probe for conditional-write support."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import uuid
from collections.abc import Callable
from typing import BinaryIO, TypeVar

from minio import Minio

from storage import _s3_wire as wire
from storage.errors import StorageBackendError, StorageError

log = logging.getLogger(__name__)

T = TypeVar("T")
Reader = Callable[[int, int], bytes]  # (offset, length) -> bytes
Call = Callable[[str, str, Callable[[], T]], T]  # (operation, key, request): the store's retrying runner
# Hidden (no valid key starts with '.', so no object collides) and at the bucket's top level. Under a shared
# ".xcorrflow/probe/" every probe's DELETE made versitygw remove the then empty directory, and another worker's
# PUT racing it between its mkdir and its link failed as ExistingObjectIsDirectory (KeyPathConflict): 4 of 1,200
# concurrent put+delete pairs under one prefix, none at the top level; in `make chaos` it dead-lettered a task.
PROBE_PREFIX = ".xcorrflow-probe-"
_NOT_SUPPORTED_CODES = frozenset({"NotImplemented", "HTTP501", "MethodNotAllowed"})


def bytes_reader(body: bytes) -> Reader:
    """Read parts of an in-memory body without copying it whole."""
    view = memoryview(body)
    return lambda offset, length: bytes(view[offset : offset + length])


def file_reader(handle: BinaryIO) -> Reader:
    """Read parts of an open file, so only one part is in memory at a time."""

    def read(offset: int, length: int) -> bytes:
        handle.seek(offset)
        return handle.read(length)

    return read


def upload_multipart(
    call: Call[str],
    operation: str,
    client: Minio,
    bucket: str,
    key: str,
    size: int,
    read: Reader,
    headers: dict[str, str],
    *,
    part_size: int,
    if_absent: bool,
    stat_etag: Callable[[], str],
) -> str:
    """Upload ``size`` bytes from ``read`` as a multipart object.

    Commit order: CreateMultipartUpload (with content type and metadata), UploadPart for every part in order,
    then CompleteMultipartUpload, with ``If-None-Match: *`` when ``if_absent``. Nothing is visible under
    ``key`` before the completion; if anything fails the upload is aborted so no parts linger.

    Args:
        call: runs one request with the store's retries and error translation.
        operation: the store operation, for errors and logs.
        client, bucket, key: where to upload.
        size: total bytes; read: gives the bytes of each part.
        headers: Content-Type and ``x-amz-meta-*`` headers for the object.
        part_size: bytes per part (the last may be smaller).
        if_absent: make the completion conditional.
        stat_etag: the ETag currently stored under ``key`` (used only after a lost completion answer).

    Returns:
        The object's ETag (``<md5 of part md5s>-<parts>``).

    Raises:
        StorageBackendError: e.g. ``PreconditionFailed`` when ``if_absent`` and the key exists.
        StorageUnavailable: a request kept failing transiently.
    """
    upload_id = call(operation, key, lambda: wire.create_multipart(client, bucket, key, headers))
    try:
        etags: list[str] = []
        digests: list[bytes] = []
        for number, offset in enumerate(range(0, size, part_size), start=1):
            body = read(offset, min(part_size, size - offset))  # read once, outside the retried request
            digests.append(hashlib.md5(body, usedforsecurity=False).digest())
            etags.append(call(operation, key, _part_sender(client, bucket, key, upload_id, number, body)))
        expected = wire.multipart_etag(digests)
        try:
            etag = call(
                operation,
                key,
                lambda: wire.complete_multipart(client, bucket, key, upload_id, etags, if_none_match=if_absent),
            )
        except StorageBackendError as exc:
            # A completion whose answer was lost and then retried finds no upload: judge by the object.
            if exc.code != "NoSuchUpload" or stat_etag() != expected:
                raise
            etag = expected
    except BaseException:
        with contextlib.suppress(Exception):
            wire.abort_multipart(client, bucket, key, upload_id)
        raise
    return etag


def _part_sender(client: Minio, bucket: str, key: str, upload_id: str, number: int, body: bytes) -> Callable[[], str]:
    return lambda: wire.upload_part(client, bucket, key, upload_id, number, body)


def multipart_etag_of(body: bytes, part_size: int) -> str:
    """The ETag ``body`` would get if uploaded in ``part_size`` parts."""
    view = memoryview(body)
    digests = [
        hashlib.md5(view[i : i + part_size], usedforsecurity=False).digest() for i in range(0, len(body), part_size)
    ]
    return wire.multipart_etag(digests)


def probe_conditional_writes(client: Minio, bucket: str, call: Call[object], endpoint: str) -> bool:
    """Whether the server honours ``If-None-Match: *``: write a hidden probe object twice, expect 412.

    A server that ignores the header lets the second write through; one that rejects it answers 501 or
    similar. Either way ``put_if_absent`` must then fall back to stat-then-put. The probe is deleted after.

    Raises:
        StorageBackendError: an unexpected refusal (e.g. AccessDenied). StorageUnavailable: server down.
    """
    key = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
    put = functools.partial(wire.put_object, client, bucket, key, b"probe", {}, if_none_match=True)
    try:
        call("probe", key, put)
        call("probe", key, put)
        supported = False  # the second write went through: the header was ignored
    except StorageBackendError as exc:
        if exc.code not in _NOT_SUPPORTED_CODES | {"PreconditionFailed"}:
            raise
        supported = exc.code == "PreconditionFailed"
    finally:
        with contextlib.suppress(StorageError):
            call("delete", key, functools.partial(client.remove_object, bucket, key))
    if supported:
        log.info("S3 %s honours If-None-Match: put_if_absent is atomic", endpoint)
    else:
        log.warning("S3 %s ignores If-None-Match: put_if_absent falls back to stat-then-put", endpoint)
    return supported
