"""In-memory object store: a thread-safe dict. Shipped as a real class so other packages test against it."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from storage.base import ObjectStore
from storage.errors import KeyPathConflict, ObjectConflict, ObjectNotFound
from storage.keys import validate_key, validate_prefix
from storage.objects import ObjectInfo, PutOutcome, check_content_type, check_metadata, md5_hex


@dataclass(frozen=True, slots=True)
class _Entry:
    data: bytes
    info: ObjectInfo


class MemoryStore(ObjectStore):
    """Objects in a dict guarded by one lock.

    It follows the same rules as the production backends, including the file-system one that ``a`` and ``a/b``
    cannot both exist (:class:`KeyPathConflict`), so code tested against it behaves the same on S3.
    """

    def __init__(self) -> None:
        """Create an empty store."""
        self._objects: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryStore({len(self._objects)} objects)"

    def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Store ``data`` under ``key``; see :meth:`ObjectStore.put`."""
        entry = self._entry(key, data, content_type, metadata)
        with self._lock:
            self._check_path(key)
            self._objects[key] = entry
        return entry.info

    def put_if_absent(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> PutOutcome:
        """Store ``data`` unless the key is taken; see :meth:`ObjectStore.put_if_absent`."""
        entry = self._entry(key, data, content_type, metadata)
        with self._lock:
            existing = self._objects.get(key)
            if existing is None:
                self._check_path(key)
                self._objects[key] = entry
                return PutOutcome(created=True, info=entry.info)
        if existing.data != entry.data:
            raise ObjectConflict(key, existing.info.etag, entry.info.etag)
        return PutOutcome(created=False, info=existing.info)

    def get(self, key: str) -> bytes:
        """Return the content under ``key``; see :meth:`ObjectStore.get`."""
        return self._lookup(key).data

    def stat(self, key: str) -> ObjectInfo:
        """Describe the object under ``key``; see :meth:`ObjectStore.stat`."""
        return self._lookup(key).info

    def list(self, prefix: str = "", *, recursive: bool = True) -> Iterator[ObjectInfo]:
        """Yield objects under ``prefix`` sorted by key; see :meth:`ObjectStore.list`."""
        directory = validate_prefix(prefix)  # eagerly, so a bad prefix fails at the call, not at iteration
        with self._lock:  # a snapshot, so callers may write while they iterate
            infos = [entry.info for key, entry in self._objects.items() if key.startswith(directory)]
        listed = (
            ObjectInfo(info.key, info.size, info.etag, info.last_modified)
            for info in sorted(infos, key=lambda item: item.key)
            if recursive or "/" not in info.key[len(directory) :]
        )
        return listed

    def delete(self, key: str) -> None:
        """Remove the object under ``key`` if there is one; see :meth:`ObjectStore.delete`."""
        validate_key(key)
        with self._lock:
            self._objects.pop(key, None)

    # --- internals ------------------------------------------------------------------------------------------

    @staticmethod
    def _entry(key: str, data: bytes, content_type: str | None, metadata: Mapping[str, str] | None) -> _Entry:
        validate_key(key)
        blob = bytes(data)  # a private copy: the caller may reuse a bytearray
        info = ObjectInfo(
            key=key,
            size=len(blob),
            etag=md5_hex(blob),
            last_modified=datetime.now(UTC),
            content_type=check_content_type(content_type),
            metadata=check_metadata(metadata),
        )
        return _Entry(blob, info)

    def _lookup(self, key: str) -> _Entry:
        validate_key(key)
        with self._lock:
            entry = self._objects.get(key)
        if entry is None:
            raise ObjectNotFound(key)
        return entry

    def _check_path(self, key: str) -> None:
        """Refuse ``a/b`` when ``a`` is an object and ``a`` when ``a/...`` exists. Caller holds the lock."""
        parts = key.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent in self._objects:
                raise KeyPathConflict(key, f"parent {parent!r} is an object")
        below = key + "/"
        if any(other.startswith(below) for other in self._objects):
            raise KeyPathConflict(key, "objects exist below this key")
