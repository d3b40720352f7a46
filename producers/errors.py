"""Errors raised by the producers package; all derive from :class:`contracts.errors.XcorrflowError`."""

from __future__ import annotations

from contracts.errors import XcorrflowError


class ProducersError(XcorrflowError):
    """Base class of producers errors."""
