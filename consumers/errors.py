"""Errors raised by the consumers package; all derive from :class:`contracts.errors.XcorrflowError`."""

from __future__ import annotations

from contracts.errors import XcorrflowError


class ConsumersError(XcorrflowError):
    """Base class of consumers errors."""
