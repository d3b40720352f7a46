"""Zarr over the settings' S3 bucket, through obstore, with xcorrflow's outage semantics.

obstore (Rust ``object_store``) moves chunk bytes without Python-side hashing or copies, and retries transient
failures itself for up to ``faults.s3_outage_s``; what still fails after that is raised as
:class:`storage.errors.StorageUnavailable`, a :class:`~contracts.errors.TransientError`, so the services treat a
results write like any other store write (rewind, retry, never dead-letter), and the process's S3 outage
tracker logs the outage once.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from obstore.exceptions import GenericError
from zarr.abc.store import ByteRequest
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import ObjectStore as ZarrObjectStore

from contracts.outage import S3
from storage.errors import StorageUnavailable

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig

    from contracts.settings import Settings


def _unavailable(operation: str, key: str, exc: Exception) -> StorageUnavailable:
    S3.failed(exc)
    return StorageUnavailable(operation, key, 0, exc)


class OutageAwareStore(ZarrObjectStore):
    """zarr's obstore-backed store, whose transient failures are :class:`StorageUnavailable`."""

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None) -> Buffer | None:
        """See :meth:`zarr.abc.store.Store.get`."""
        try:
            found = await super().get(key, prototype, byte_range)
        except GenericError as exc:  # transport errors, timeouts and 5xx that outlasted obstore's retries
            raise _unavailable("get", key, exc) from exc
        S3.succeeded()
        return found

    async def set(self, key: str, value: Buffer) -> None:
        """See :meth:`zarr.abc.store.Store.set`."""
        try:
            await super().set(key, value)
        except GenericError as exc:
            raise _unavailable("put", key, exc) from exc
        S3.succeeded()

    async def exists(self, key: str) -> bool:
        """See :meth:`zarr.abc.store.Store.exists`."""
        try:
            found = await super().exists(key)
        except GenericError as exc:
            raise _unavailable("stat", key, exc) from exc
        S3.succeeded()
        return found


def s3_store(settings: Settings | None, bucket: str, prefix: str, *, read_only: bool = False) -> OutageAwareStore:
    """A zarr store over ``s3://<bucket>/<prefix>`` on the settings' endpoint."""
    from obstore.store import S3Store

    from contracts.settings import Settings

    s = settings or Settings()
    faults = s.faults
    S3.configure(s.s3_url, faults.s3_outage_s)
    options: ClientConfig = {
        "allow_http": not s.s3_secure,
        "timeout": f"{faults.s3_read_timeout_s:g}s",
        "connect_timeout": f"{faults.s3_connect_timeout_s:g}s",
    }
    retry: RetryConfig = {
        "max_retries": 1_000,  # bounded by the time budget below
        "retry_timeout": timedelta(seconds=faults.s3_outage_s),
        "backoff": {"init_backoff": timedelta(milliseconds=250), "max_backoff": timedelta(seconds=5), "base": 2},
    }
    store = S3Store(
        bucket,
        prefix=prefix or None,
        endpoint=s.s3_url,
        region=s.s3_region,
        access_key_id=s.s3_access_key.get_secret_value(),
        secret_access_key=s.s3_secret_key.get_secret_value(),
        client_options=options,
        retry_config=retry,
        unsigned_payload=s.s3_unsigned,  # 1.4 core-s less per GB of chunks written (bench/s3_access.py)
    )
    return OutageAwareStore(store, read_only=read_only)
