"""Errors raised by the storage package; all derive from :class:`contracts.errors.XcorrflowError`.

Every backend (S3, local directory, memory) raises the same classes for the same situations, so callers never
need to know which store they hold. Errors carry the data a caller needs to act (the key, the operation, the
number of attempts) and keep their cause (``raise ... from exc``).
"""

from __future__ import annotations

from contracts.errors import TransientError, XcorrflowError


class StorageError(XcorrflowError):
    """Base class of storage errors."""


class InvalidKey(StorageError, ValueError):
    """An object key or prefix is malformed, or would escape its prefix.

    Also a :class:`ValueError`, because it is raised for a bad argument before any I/O happens.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"invalid object key {key!r}: {reason}")
        self.key = key
        self.reason = reason


class InvalidMetadata(StorageError, ValueError):
    """User metadata or a content type cannot be stored portably (S3 headers are ASCII and size-limited)."""


class ObjectNotFound(StorageError):
    """No object exists under the key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no object under key {key!r}")
        self.key = key


class ObjectConflict(StorageError):
    """A conditional write found the key already holding *different* content.

    Same content is not a conflict: writes are idempotent. ``existing_etag`` and ``new_etag`` let the caller
    log what differs without fetching either object.
    """

    def __init__(self, key: str, existing_etag: str, new_etag: str) -> None:
        super().__init__(
            f"object {key!r} already exists with different content (etag {existing_etag}, ours {new_etag})"
        )
        self.key = key
        self.existing_etag = existing_etag
        self.new_etag = new_etag


class KeyPathConflict(StorageError):
    """The key collides with another object's path: ``a`` and ``a/b`` cannot both exist.

    File-system backed stores (the local directory and versitygw's posix backend) map ``/`` to directories, so
    an object cannot also be a directory. The memory store enforces the same rule so tests catch it early.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"object key {key!r} collides with an existing path: {reason}")
        self.key = key
        self.reason = reason


class StorageUnavailable(StorageError, TransientError):
    """A transient failure (connection, timeout, 5xx, throttling) persisted through every retry.

    Attributes:
        operation: what was attempted, e.g. ``"put"`` or ``"list"``.
        key: the object key or prefix concerned ("" for bucket-level operations).
        attempts: how many attempts were made before giving up.
        cause: the last underlying exception (also ``__cause__``).
    """

    def __init__(self, operation: str, key: str, attempts: int, cause: BaseException) -> None:
        super().__init__(f"storage {operation} of {key!r} failed after {attempts} attempt(s): {cause}")
        self.operation = operation
        self.key = key
        self.attempts = attempts
        self.cause = cause


class StorageBackendError(StorageError):
    """The backend refused a request for a reason that retrying cannot fix (e.g. AccessDenied, NoSuchBucket).

    Attributes:
        operation: what was attempted.
        key: the object key or prefix concerned.
        code: the backend's error code (S3 ``Code``, or an errno name for the local store).
    """

    def __init__(self, operation: str, key: str, code: str, message: str) -> None:
        super().__init__(f"storage {operation} of {key!r} failed: {code}: {message}")
        self.operation = operation
        self.key = key
        self.code = code


class StorageConfigError(StorageError, ValueError):
    """A store URL or store option is invalid."""
