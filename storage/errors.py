"""Errors raised by the storage package; all derive from :class:`contracts.errors.XcorrflowError`."""

from __future__ import annotations

from contracts.errors import XcorrflowError


class StorageError(XcorrflowError):
    """Base class of storage errors."""
