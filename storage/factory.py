"""Open a store from a URL or from the settings: ``s3://bucket/prefix``, ``file:///path``, ``memory://``."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from storage.base import ObjectStore
from storage.errors import StorageConfigError
from storage.local import LocalDirStore
from storage.memory import MemoryStore

if TYPE_CHECKING:
    from contracts.settings import Settings


def open_store(target: Settings | str | None = None, *, settings: Settings | None = None) -> ObjectStore:
    """Open the store a run or service should use.

    Args:
        target: one of
            - ``None`` or a :class:`~contracts.settings.Settings`: the S3 bucket of the settings (the default);
            - ``"s3://<bucket>[/<prefix>]"``: that bucket on the settings' S3 endpoint, scoped to ``prefix``;
            - ``"file:///<dir>"``: a :class:`LocalDirStore` rooted at ``dir`` (created if missing);
            - ``"memory://"``: a new, empty :class:`MemoryStore`.
        settings: endpoint and credentials for ``s3://`` URLs; ``Settings()`` (the environment) when omitted.

    Returns:
        The store. S3 stores have their bucket created if missing.

    Raises:
        StorageConfigError: unknown scheme or malformed URL.
        InvalidKey: the ``s3://`` prefix is not a valid directory prefix.
        StorageUnavailable: the S3 server cannot be reached to check the bucket.
    """
    if target is None or not isinstance(target, str):
        return _s3(target or settings, bucket=None, prefix="")
    parts = urlsplit(target)
    if parts.query or parts.fragment:
        raise StorageConfigError(f"store URL {target!r}: query strings and fragments are not supported")
    if parts.scheme == "memory":
        if parts.netloc or parts.path not in ("", "/"):
            raise StorageConfigError(f"store URL {target!r}: memory:// takes no location")
        return MemoryStore()
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path:
            raise StorageConfigError(f"store URL {target!r}: expected file:///absolute/path")
        return LocalDirStore(unquote(parts.path))
    if parts.scheme == "s3":
        if not parts.netloc:
            raise StorageConfigError(f"store URL {target!r}: expected s3://bucket[/prefix]")
        return _s3(settings, bucket=parts.netloc, prefix=unquote(parts.path).strip("/"))
    raise StorageConfigError(f"store URL {target!r}: scheme must be s3, file or memory")


def _s3(settings: Settings | None, *, bucket: str | None, prefix: str) -> ObjectStore:
    from contracts.settings import Settings
    from storage.s3 import S3Store

    store = S3Store.from_settings(settings or Settings(), bucket=bucket)
    return store.scoped(prefix) if prefix else store
