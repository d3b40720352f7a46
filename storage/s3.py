"""S3 object store through the minio client (versitygw locally; MinIO or AWS elsewhere).

- Retries: only transient failures (:func:`is_transient`), with exponential backoff and jitter, a bounded number
  of attempts (:class:`~storage.retry.RetryPolicy`), then :class:`StorageUnavailable`. The urllib3 pool is
  built with ``retries=False`` so that there is exactly one retry layer, ours.
- Conditional create: ``put_if_absent`` sends ``If-None-Match: *``, so the server itself refuses a second
  writer (412). Whether the server honours the header is probed once per store (a tiny object written twice
  under a hidden top-level ``.xcorrflow-probe-`` key); if it does not, ``put_if_absent`` falls back to stat-then-put.
- Multipart: bodies above ``multipart_threshold`` go up in ``part_size`` parts (ETag ``<md5-of-md5s>-<n>``),
  each part retried on its own; a failed upload is aborted so no parts linger.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar
from xml.etree.ElementTree import ParseError

import urllib3
from minio import Minio
from minio.error import MinioException

from storage import _s3_wire as wire
from storage._s3_wire import build_client, is_transient
from storage._s3_writes import (
    Reader,
    bytes_reader,
    file_reader,
    multipart_etag_of,
    probe_conditional_writes,
    upload_multipart,
)
from storage.base import ObjectStore
from storage.errors import (
    InvalidKey,
    KeyPathConflict,
    ObjectConflict,
    ObjectNotFound,
    StorageBackendError,
    StorageConfigError,
    StorageError,
    StorageUnavailable,
)
from storage.keys import validate_key, validate_prefix, validate_segment
from storage.objects import (
    ObjectInfo,
    PutOutcome,
    check_content_type,
    check_metadata,
    check_range,
    md5_hex,
    normalize_etag,
    write_file_atomically,
)
from storage.retry import RetryPolicy

if TYPE_CHECKING:
    from contracts.settings import Settings

__all__ = ["S3Store", "build_client", "is_transient"]

log = logging.getLogger(__name__)
T = TypeVar("T")
MIB = 1024 * 1024
DEFAULT_PART_SIZE = 8 * MIB
DEFAULT_MULTIPART_THRESHOLD = 16 * MIB
MIN_PART_SIZE = 5 * MIB  # S3's floor for every part but the last
MAX_PARTS = 10_000
_KEY_PATH_CODES = frozenset({"ExistingObjectIsDirectory", "ObjectParentIsFile"})  # versitygw posix
_WIRE_ERRORS = (MinioException, urllib3.exceptions.HTTPError, ConnectionError, TimeoutError, ParseError)


class S3Store(ObjectStore):
    """Objects in one S3 bucket. Thread-safe: share one instance between threads."""

    def __init__(
        self,
        client: Minio,
        bucket: str,
        *,
        retry: RetryPolicy | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        conditional_writes: bool | None = None,
        endpoint: str = "",
    ) -> None:
        """Wrap a client (best made by :func:`build_client`). No request is sent here.

        Args:
            client: the minio client.
            bucket: the bucket holding every key.
            retry: the retry policy; :class:`RetryPolicy` defaults when omitted.
            part_size: bytes per multipart part (at least 5 MiB).
            multipart_threshold: bodies larger than this use multipart upload.
            conditional_writes: True/False if known; None probes the server on first ``put_if_absent``.
            endpoint: shown in ``repr`` and logs only.

        Raises:
            StorageConfigError: part size below the S3 minimum or threshold below the part size.
        """
        if part_size < MIN_PART_SIZE:
            raise StorageConfigError(f"part_size must be at least {MIN_PART_SIZE} bytes")
        if multipart_threshold < part_size:
            raise StorageConfigError("multipart_threshold must be at least part_size")
        self._client = client
        self.bucket = bucket
        self.retry = retry or RetryPolicy()
        self.part_size = part_size
        self.multipart_threshold = multipart_threshold
        self.endpoint = endpoint
        self._conditional = conditional_writes
        self._probe_lock = threading.Lock()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        bucket: str | None = None,
        create_bucket: bool = True,
        max_connections: int = 10,
    ) -> S3Store:
        """Connect to the endpoint, credentials, region and bucket of the settings.

        Transient failures are retried for ``faults.s3_outage_s`` (a restarted or frozen server is waited
        for) with the per-request timeouts of ``faults``; the process's S3 outage tracker hears of each.

        Args:
            settings: the project settings (``s3_*`` and ``faults`` fields).
            bucket: overrides ``settings.s3_bucket``.
            create_bucket: create the bucket if it is missing (one round trip).
            max_connections: HTTP pool size (one per thread that talks to S3 at once).

        Raises:
            StorageConfigError: the bucket name is invalid.
            StorageUnavailable: ``create_bucket`` and the server cannot be reached.
        """
        client = build_client(
            settings.s3_address,
            settings.s3_access_key.get_secret_value(),
            settings.s3_secret_key.get_secret_value(),
            region=settings.s3_region,
            secure=settings.s3_secure,
            connect_timeout=settings.faults.s3_connect_timeout_s,
            read_timeout=settings.faults.s3_read_timeout_s,
            max_connections=max_connections,
            unsigned_payload=settings.s3_unsigned,
        )
        store = cls(client, bucket or settings.s3_bucket, endpoint=settings.s3_url, retry=outage_retry(settings))
        if create_bucket:
            store.ensure_bucket()
        return store

    def __repr__(self) -> str:
        return f"S3Store({self.endpoint!r}, bucket={self.bucket!r})"

    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists; safe when several processes race to do it.

        Raises:
            StorageConfigError: invalid bucket name. StorageBackendError, StorageUnavailable: server errors.
        """

        def ensure() -> None:
            if self._client.bucket_exists(self.bucket):
                return
            try:
                self._client.make_bucket(self.bucket)
            except MinioException as exc:
                if wire.error_code(exc) != "BucketAlreadyOwnedByYou":
                    raise

        try:
            self._call("ensure_bucket", "", ensure)
        except ValueError as exc:  # minio's bucket-name check
            raise StorageConfigError(f"invalid bucket name {self.bucket!r}: {exc}") from exc

    @property
    def client(self) -> Minio:
        """The underlying minio client, for S3-only operations (e.g. bucket notification configuration)."""
        return self._client

    @property
    def conditional_writes(self) -> bool:
        """Whether the server honours ``If-None-Match: *`` (probed once, on first use)."""
        with self._probe_lock:
            if self._conditional is None:
                self._conditional = probe_conditional_writes(self._client, self.bucket, self._call, self.endpoint)
            return self._conditional

    # --- writes ---------------------------------------------------------------------------------------------

    def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Write an object (multipart above the threshold); see :meth:`ObjectStore.put`."""
        validate_key(key)
        ctype, meta = check_content_type(content_type), check_metadata(metadata)
        body = bytes(data)
        etag, modified = self._upload("put", key, len(body), bytes_reader(body), ctype, meta, if_absent=False)
        return ObjectInfo(key, len(body), etag, modified, ctype, meta)

    def put_file(
        self,
        key: str,
        path: str | os.PathLike[str],
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Upload a file part by part, holding one part in memory at a time; see :meth:`ObjectStore.put_file`."""
        validate_key(key)
        ctype, meta = check_content_type(content_type), check_metadata(metadata)
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            etag, modified = self._upload("put", key, size, file_reader(handle), ctype, meta, if_absent=False)
        return ObjectInfo(key, size, etag, modified, ctype, meta)

    def put_if_absent(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> PutOutcome:
        """Create an object only if the key is free; see :meth:`ObjectStore.put_if_absent`.

        With a server that honours ``If-None-Match`` the check and the write are one atomic request (or one
        atomic CompleteMultipartUpload). Otherwise this falls back to stat-then-put, which is *not* atomic: two
        writers racing between the stat and the put both "create", and the later one wins. That is tolerable
        only because keys are deterministic and every writer of a key writes the same bytes.
        """
        validate_key(key)
        ctype, meta = check_content_type(content_type), check_metadata(metadata)
        body = bytes(data)
        conditional = self.conditional_writes
        # Look before uploading when the body is big (a redelivered task should not re-send megabytes) and
        # when the server cannot refuse for us (the fallback above).
        if len(body) > self.multipart_threshold or not conditional:
            with contextlib.suppress(ObjectNotFound):
                return self._same_or_conflict(key, body, self.stat(key))
        try:
            etag, modified = self._upload(
                "put_if_absent", key, len(body), bytes_reader(body), ctype, meta, if_absent=conditional
            )
        except StorageBackendError as exc:
            if exc.code != "PreconditionFailed":
                raise
            try:
                return self._same_or_conflict(key, body, self._stat_winner(key))
            except ObjectNotFound:
                # The server refuses the key but holds no object under it: metadata orphaned by a crash between
                # its metadata write and its link (versitygw's sidecar backend stores the ETag first), which would
                # refuse every conditional write forever. Keys are deterministic and every writer of a key writes
                # the same bytes, so an unconditional write repairs it and loses nothing.
                log.warning("S3 refuses %r as existing but holds no object under it: overwriting", key)
                etag, modified = self._upload(
                    "put_if_absent", key, len(body), bytes_reader(body), ctype, meta, if_absent=False
                )
        return PutOutcome(True, ObjectInfo(key, len(body), etag, modified, ctype, meta))

    def _stat_winner(self, key: str, attempts: int = 20, pause_s: float = 0.05) -> ObjectInfo:
        """Describe the object another writer holds the key with, once it is visible.

        A server may refuse our conditional write (412) while the winner's upload is still in flight; the winner's
        object appears when its upload completes, so a missing object is looked for again, a few times.

        Raises:
            ObjectNotFound: the winner's object never appeared (its upload failed).
        """
        for attempt in range(attempts):
            try:
                return self.stat(key)
            except ObjectNotFound:
                if attempt == attempts - 1:
                    raise
                time.sleep(pause_s * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def delete(self, key: str) -> None:
        """Remove an object; see :meth:`ObjectStore.delete`."""
        validate_key(key)
        self._call("delete", key, functools.partial(self._client.remove_object, self.bucket, key))

    # --- reads ----------------------------------------------------------------------------------------------

    def get(self, key: str) -> bytes:
        """Read a whole object; see :meth:`ObjectStore.get`."""
        validate_key(key)

        def fetch() -> bytes:
            response = self._client.get_object(self.bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return self._call("get", key, fetch)

    def get_range(self, key: str, offset: int, length: int | None = None) -> bytes:
        """Read part of an object with one ranged GET; see :meth:`ObjectStore.get_range`."""
        validate_key(key)
        check_range(offset, length)
        if length == 0:
            self.stat(key)  # b"" for an object that exists, ObjectNotFound otherwise
            return b""

        def fetch() -> bytes:
            response = self._client.get_object(self.bucket, key, offset=offset, length=length or 0)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        try:
            return self._call("get", key, fetch)
        except StorageBackendError as exc:
            if exc.code != "InvalidRange":  # S3's 416: the range starts at or past the end
                raise
            return b""

    def get_file(self, key: str, path: str | os.PathLike[str]) -> ObjectInfo:
        """Stream an object into a file (atomically, re-fetched on a transient failure); see the base class."""
        validate_key(key)

        def fetch() -> ObjectInfo:
            response = self._client.get_object(self.bucket, key)
            try:
                write_file_atomically(path, response.stream(MIB))
                return wire.info_from_headers(key, response.headers)
            finally:
                response.close()
                response.release_conn()

        return self._call("get_file", key, fetch)

    def stat(self, key: str) -> ObjectInfo:
        """Describe an object (one HEAD request); see :meth:`ObjectStore.stat`."""
        validate_key(key)
        found = self._call("stat", key, functools.partial(self._client.stat_object, self.bucket, key))
        return wire.info_from_headers(key, found.metadata)

    def list(self, prefix: str = "", *, recursive: bool = True) -> Iterator[ObjectInfo]:
        """Yield objects under ``prefix`` in key order; see :meth:`ObjectStore.list`.

        A transient failure mid-listing resumes after the last key yielded (``start_after``), so a long listing
        for reconciliation survives a server blip without repeating or skipping keys.
        """
        return self._list(validate_prefix(prefix), recursive)  # validated eagerly, listed lazily

    def _list(self, directory: str, recursive: bool) -> Iterator[ObjectInfo]:
        last: str | None = None
        failures = 0
        while True:
            try:
                for found in self._client.list_objects(
                    self.bucket, prefix=directory or None, recursive=recursive, start_after=last
                ):
                    failures = 0  # progress: the retry budget is per stall, not per listing
                    if found.is_dir or found.object_name is None:
                        continue
                    last = found.object_name
                    info = wire.listed_info(found)
                    if info is not None:
                        yield info
                return
            except _WIRE_ERRORS as exc:
                failures += 1
                if not is_transient(exc) or failures >= self.retry.max_attempts:
                    raise self._translate(exc, "list", directory, failures) from exc
                self.retry.sleep(self.retry.delay(failures))

    def list_dir(self, prefix: str = "") -> Iterator[str]:
        """Names directly under ``prefix``, from one delimited listing; see :meth:`ObjectStore.list_dir`."""
        directory = validate_prefix(prefix)

        def listing() -> list[str]:
            found = self._client.list_objects(self.bucket, prefix=directory or None, recursive=False)
            names = (str(item.object_name)[len(directory) :] for item in found if item.object_name)
            return sorted(name for name in names if _is_segment(name.rstrip("/")))

        return iter(self._call("list", directory, listing))

    def close(self) -> None:
        """Drop pooled connections."""
        wire.close_client(self._client)

    # --- internals --------------------------------------------------------------------------------------------

    def _call(self, operation: str, key: str, func: Callable[[], T]) -> T:
        """Run one request under the retry policy and translate what escapes into storage errors."""
        try:
            return self.retry.call(operation, key, func, is_transient=is_transient)
        except StorageError:
            raise
        except _WIRE_ERRORS as exc:
            raise self._translate(exc, operation, key, 1) from exc

    def _translate(self, exc: BaseException, operation: str, key: str, attempts: int) -> StorageError:
        if is_transient(exc):
            return StorageUnavailable(operation, key, attempts, exc)
        code = wire.error_code(exc)
        if code == "NoSuchKey":
            return ObjectNotFound(key)
        if code in _KEY_PATH_CODES:
            return KeyPathConflict(key, str(getattr(exc, "message", "") or code))
        return StorageBackendError(operation, key, code, str(getattr(exc, "message", "") or exc))

    def _upload(
        self,
        operation: str,
        key: str,
        size: int,
        read: Reader,
        ctype: str,
        meta: Mapping[str, str],
        *,
        if_absent: bool,
    ) -> tuple[str, datetime]:
        """Send a body in one PUT or, above the threshold, as a multipart upload. Returns ETag and time."""
        headers = {"Content-Type": ctype} | {f"x-amz-meta-{name}": value for name, value in meta.items()}
        if size > self.multipart_threshold:
            etag = upload_multipart(
                self._call,
                operation,
                self._client,
                self.bucket,
                key,
                size,
                read,
                headers,
                part_size=self._part_size_for(size),
                if_absent=if_absent,
                stat_etag=lambda: self.stat(key).etag,
            )
            return etag, datetime.now(UTC)
        body = read(0, size)
        put = functools.partial(wire.put_object, self._client, self.bucket, key, body, headers, if_none_match=if_absent)
        response = self._call(operation, key, put)
        return normalize_etag(response.headers.get("etag", "")), wire.response_time(response)

    def _same_or_conflict(self, key: str, body: bytes, existing: ObjectInfo) -> PutOutcome:
        """Decide whether an existing object holds exactly ``body``: idempotent success, or a conflict."""
        digest = md5_hex(body)
        if existing.size == len(body):
            if existing.etag == digest or existing.etag == multipart_etag_of(
                body, max(self.part_size, math.ceil(len(body) / MAX_PARTS))
            ):
                return PutOutcome(False, existing)
            if "-" in existing.etag and self._md5_of_object(key) == digest:
                return PutOutcome(False, existing)  # a multipart upload with another part size
        raise ObjectConflict(key, existing.etag, digest)

    def _part_size_for(self, size: int) -> int:
        """Our part size, grown if needed to stay within S3's 10,000 parts."""
        return max(self.part_size, math.ceil(size / MAX_PARTS))

    def _md5_of_object(self, key: str) -> str:
        def fetch() -> str:
            response = self._client.get_object(self.bucket, key)
            digest = hashlib.md5(usedforsecurity=False)
            try:
                for chunk in response.stream(MIB):
                    digest.update(chunk)
            finally:
                response.close()
                response.release_conn()
            return digest.hexdigest()

        return self._call("get", key, fetch)


def _is_segment(name: str) -> bool:
    """Whether a listed name could be part of a key (hidden bookkeeping such as ``.xcorrflow-probe-…`` is not)."""
    try:
        validate_segment(name)
    except InvalidKey:
        return False
    return True


def outage_retry(settings: Settings) -> RetryPolicy:
    """The retry policy of a long-running service: retry transient failures for ``faults.s3_outage_s``."""
    from contracts.outage import S3

    S3.configure(settings.s3_url, settings.faults.s3_outage_s)
    return RetryPolicy(deadline_s=settings.faults.s3_outage_s, observer=S3)
