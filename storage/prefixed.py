"""A view of a store under a fixed directory prefix, so that every run or test owns its own corner."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping

from storage.base import ObjectInfo, ObjectStore, PutOutcome
from storage.errors import InvalidKey
from storage.keys import validate_key, validate_prefix


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
