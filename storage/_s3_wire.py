"""Raw S3 requests the minio client has no public API for, and the classification of its errors.

Why this module exists: minio 7.2.x ``put_object()`` turns every extra header into ``x-amz-meta-*``, so it cannot
send ``If-None-Match: *`` (a conditional create), and its multipart helpers cannot make CompleteMultipartUpload
conditional either. We therefore send those requests through ``Minio._execute``, the client's own signed-request
path (SigV4 signing, region, error parsing into ``S3Error``). It is a private method: everything that touches
it is in this one module, and ``tests/unit/storage/test_storage_s3_retry.py`` exercises it against a fake server, so a
minio upgrade that changes it fails loudly in one place.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import MappingProxyType
from typing import Any
from xml.etree import ElementTree

import certifi
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError

from storage.errors import InvalidKey
from storage.keys import validate_key
from storage.objects import ObjectInfo, normalize_etag

log = logging.getLogger(__name__)

if not callable(getattr(Minio, "_execute", None)) or not callable(getattr(Minio, "_build_headers", None)):
    raise ImportError(  # pragma: no cover - guards a minio upgrade
        "storage.s3 needs minio's Minio._execute and _build_headers (minio 7.2.x); pin minio>=7.2,<8 or port _s3_wire"
    )

# HTTP statuses and S3 error codes that mean "try again later". 429 and RequestTimeout (a 400 that AWS uses
# when the client was too slow to send the body) are transient too, as in the AWS SDKs' standard retry mode.
# ConditionalRequestConflict (409) is AWS's answer to two concurrent conditional writes: a retry resolves it.
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "InternalError",
        "ServiceUnavailable",
        "RequestTimeout",
        "Throttling",
        "ThrottlingException",
        "ConditionalRequestConflict",
    }
)
_TRANSIENT_NETWORK = (
    urllib3.exceptions.NewConnectionError,  # refused, unreachable, DNS
    urllib3.exceptions.TimeoutError,  # connect and read timeouts
    urllib3.exceptions.ProtocolError,  # connection reset, remote disconnected, truncated body
    urllib3.exceptions.MaxRetryError,  # only if a caller supplied a pool that retries itself
    ConnectionError,
    TimeoutError,
)


def is_transient(exc: BaseException) -> bool:
    """True for failures worth retrying: network errors, timeouts, 5xx/429 and S3 throttling codes.

    Never for 4xx answers such as AccessDenied, NoSuchKey or PreconditionFailed, nor for TLS errors (a bad
    certificate does not heal by waiting).
    """
    if isinstance(exc, S3Error):
        return exc.code in TRANSIENT_CODES or exc.response.status in TRANSIENT_STATUS
    if isinstance(exc, ServerError):
        return exc.status_code in TRANSIENT_STATUS
    if isinstance(exc, InvalidResponseError):  # a non-XML body, e.g. a proxy's HTML 502 page
        return getattr(exc, "_code", None) in TRANSIENT_STATUS
    if isinstance(exc, urllib3.exceptions.SSLError):
        return False
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and isinstance(exc.reason, urllib3.exceptions.SSLError):
        return False
    return isinstance(exc, _TRANSIENT_NETWORK)


def error_code(exc: BaseException) -> str:
    """The S3 error code of an exception, or a stand-in such as ``HTTP502`` or the exception's class name."""
    if isinstance(exc, S3Error):
        return exc.code or f"HTTP{exc.response.status}"
    if isinstance(exc, ServerError):
        return f"HTTP{exc.status_code}"
    return type(exc).__name__


def put_object(
    client: Minio, bucket: str, key: str, body: bytes, headers: dict[str, str], *, if_none_match: bool
) -> urllib3.BaseHTTPResponse:
    """PutObject, optionally conditional on the key being free (``If-None-Match: *``).

    Returns:
        The response (its ``ETag`` and ``Date`` headers describe the new object).

    Raises:
        S3Error: e.g. ``PreconditionFailed`` (412) when conditional and the key exists.
    """
    request_headers: dict[str, Any] = dict(headers)
    if if_none_match:
        request_headers["If-None-Match"] = "*"
    return client._execute("PUT", bucket, key, body=body, headers=request_headers, no_body_trace=True)


def create_multipart(client: Minio, bucket: str, key: str, headers: dict[str, str]) -> str:
    """CreateMultipartUpload; the content type and metadata are given here. Returns the upload id."""
    response = client._execute("POST", bucket, key, headers=dict(headers), query_params={"uploads": ""})
    upload_id = ElementTree.fromstring(response.data).findtext("{*}UploadId")
    if not upload_id:
        raise ServerError("CreateMultipartUpload answered without an UploadId", response.status)
    return upload_id


def upload_part(client: Minio, bucket: str, key: str, upload_id: str, number: int, body: bytes) -> str:
    """UploadPart; returns the part's ETag (without quotes)."""
    query: dict[str, Any] = {"partNumber": str(number), "uploadId": upload_id}
    response = client._execute("PUT", bucket, key, body=body, query_params=query, no_body_trace=True)
    return normalize_etag(response.headers.get("etag", ""))


def complete_multipart(
    client: Minio, bucket: str, key: str, upload_id: str, etags: list[str], *, if_none_match: bool
) -> str:
    """CompleteMultipartUpload, optionally conditional (``If-None-Match: *``). Returns the object's ETag.

    Raises:
        S3Error: ``PreconditionFailed`` when conditional and the key exists; also when S3 reports an error
            inside a 200 answer, which CompleteMultipartUpload is allowed to do.
    """
    root = ElementTree.Element("CompleteMultipartUpload")
    for number, etag in enumerate(etags, start=1):
        part = ElementTree.SubElement(root, "Part")
        ElementTree.SubElement(part, "PartNumber").text = str(number)
        ElementTree.SubElement(part, "ETag").text = f'"{etag}"'
    body = ElementTree.tostring(root)
    headers: dict[str, Any] = {"Content-Type": "application/xml"}
    if if_none_match:
        headers["If-None-Match"] = "*"
    response = client._execute("POST", bucket, key, body=body, headers=headers, query_params={"uploadId": upload_id})
    answer = ElementTree.fromstring(response.data)
    if answer.tag.endswith("Error"):
        raise S3Error(
            response,
            answer.findtext("Code"),
            answer.findtext("Message"),
            f"/{bucket}/{key}",
            answer.findtext("RequestId"),
            answer.findtext("HostId"),
            bucket_name=bucket,
            object_name=key,
        )
    return normalize_etag(answer.findtext("{*}ETag") or "")


def abort_multipart(client: Minio, bucket: str, key: str, upload_id: str) -> None:
    """AbortMultipartUpload, so failed uploads do not leave parts behind."""
    client._execute("DELETE", bucket, key, query_params={"uploadId": upload_id})


def close_client(client: Minio) -> None:
    """Drop the client's pooled connections (minio keeps its pool in ``_http``)."""
    pool = getattr(client, "_http", None)
    if isinstance(pool, urllib3.PoolManager):
        pool.clear()


def multipart_etag(part_digests: list[bytes]) -> str:
    """The ETag S3 gives a multipart object: MD5 of the concatenated binary part MD5s, then ``-<parts>``."""
    joined = hashlib.md5(b"".join(part_digests), usedforsecurity=False).hexdigest()
    return f"{joined}-{len(part_digests)}"


class UnsignedPayloadMinio(Minio):
    """A minio client that signs requests with ``x-amz-content-sha256: UNSIGNED-PAYLOAD`` over HTTP too.

    minio signs the SHA-256 of every body it sends over plain HTTP (over HTTPS it sends UNSIGNED-PAYLOAD and a
    Content-MD5), and the server hashes the body again to check it: measured in ``bench/s3_access.py``, that is
    the largest client CPU cost of a PUT and a large share of the server's. Headers, query and credentials stay
    signed; only the body goes unhashed, so its integrity rests on TCP (loopback, or TLS where it matters).
    """

    def _build_headers(
        self,
        host: str,
        headers: dict[str, Any] | None = None,
        body: bytes | None = None,
        creds: Any = None,
    ) -> tuple[dict[str, Any], datetime]:
        built, date = super()._build_headers(host, headers, None, creds)  # the hash of no body: free
        if body:
            built["Content-Length"] = str(len(body))
        if creds:
            built["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD"
        return built, date


def build_client(
    endpoint: str,
    access_key: str,
    secret_key: str,
    *,
    region: str = "us-east-1",
    secure: bool = False,
    connect_timeout: float = 5.0,
    read_timeout: float = 60.0,
    max_connections: int = 10,
    unsigned_payload: bool = False,
) -> Minio:
    """A minio client whose HTTP pool does *not* retry, since :class:`S3Store` owns the retry policy.

    Args:
        endpoint: ``host:port``.
        access_key, secret_key: credentials.
        region: passed through so the client skips the GetBucketLocation round trip.
        secure: HTTPS.
        connect_timeout, read_timeout: seconds, per request.
        max_connections: pool size per host (the number of threads that can talk to S3 at once).
        unsigned_payload: sign ``UNSIGNED-PAYLOAD`` instead of each body's SHA-256 (:class:`UnsignedPayloadMinio`).
    """
    pool = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
        maxsize=max_connections,
        retries=False,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
    )
    client_class = UnsignedPayloadMinio if unsigned_payload else Minio
    return client_class(
        endpoint=endpoint,
        access_key=access_key,
        secret_key=secret_key,
        region=region,
        secure=secure,
        http_client=pool,
    )


# --- answers to ObjectInfo -----------------------------------------------------------------------------------


def response_time(response: urllib3.BaseHTTPResponse) -> datetime:
    """The server's ``Date`` as the write time (PutObject does not return Last-Modified)."""
    with contextlib.suppress(TypeError, ValueError):
        return parsedate_to_datetime(response.headers.get("date", "")).astimezone(UTC)
    return datetime.now(UTC)


def info_from_headers(key: str, headers: Mapping[str, str] | None) -> ObjectInfo:
    """Object info from HEAD/GET response headers (``x-amz-meta-*`` become metadata)."""
    lowered = {name.lower(): value for name, value in (headers or {}).items()}
    prefix = "x-amz-meta-"
    meta = {name[len(prefix) :]: value for name, value in lowered.items() if name.startswith(prefix)}
    modified = parsedate_to_datetime(lowered["last-modified"]).astimezone(UTC)
    return ObjectInfo(
        key=key,
        size=int(lowered.get("content-length", "0")),
        etag=normalize_etag(lowered.get("etag", "")),
        last_modified=modified,
        content_type=lowered.get("content-type"),
        metadata=MappingProxyType(meta),  # as stored, even if another tool wrote what we would refuse
    )


def listed_info(found: object) -> ObjectInfo | None:
    """Listing entry to ObjectInfo; keys no valid key could name (written by other tools) are skipped."""
    name = str(getattr(found, "object_name", ""))
    try:
        validate_key(name)
    except InvalidKey:
        log.warning("skipping object %r: not a valid xcorrflow key", name)
        return None
    modified = getattr(found, "last_modified", None) or datetime.now(UTC)
    return ObjectInfo(
        key=name,
        size=int(getattr(found, "size", 0) or 0),
        etag=normalize_etag(str(getattr(found, "etag", "") or "")),
        last_modified=modified.astimezone(UTC),
    )
