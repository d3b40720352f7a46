"""Object-store layer: one small interface, with S3 (minio client), local-directory and in-memory backends.

Typical use::

    from storage import open_store
    from storage.layout import Layout

    store = open_store()                      # the S3 bucket of the settings
    key = Layout(settings.key_prefix).product(window, seed_id)
    if not store.exists(key):
        store.put_if_absent(key, payload)     # idempotent: same bytes twice is fine

See :mod:`storage.base` for the semantics every backend shares and :mod:`storage.keys` for the key rules,
:mod:`storage.layout` for which keys exist.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from storage import keys
from storage.base import ObjectStore, PrefixedStore
from storage.errors import (
    InvalidKey,
    InvalidMetadata,
    KeyPathConflict,
    ObjectConflict,
    ObjectNotFound,
    StorageBackendError,
    StorageConfigError,
    StorageError,
    StorageUnavailable,
)
from storage.factory import open_store
from storage.local import LocalDirStore
from storage.memory import MemoryStore
from storage.objects import ObjectInfo, PutOutcome
from storage.retry import RetryPolicy

__all__ = [
    "InvalidKey",
    "InvalidMetadata",
    "KeyPathConflict",
    "LocalDirStore",
    "MemoryStore",
    "ObjectConflict",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "PrefixedStore",
    "PutOutcome",
    "RetryPolicy",
    "S3Store",
    "StorageBackendError",
    "StorageConfigError",
    "StorageError",
    "StorageUnavailable",
    "keys",
    "open_store",
]

if TYPE_CHECKING:
    from storage.s3 import S3Store


def __getattr__(name: str) -> object:
    """``S3Store`` is imported on first use: it pulls in minio and urllib3, which local and in-memory stores (and
    the DSP workers that only import a key helper) never need."""
    if name == "S3Store":
        from storage.s3 import S3Store

        return S3Store
    raise AttributeError(f"module 'storage' has no attribute {name!r}")
