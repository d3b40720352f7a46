"""Errors raised by the dsp package; all derive from :class:`contracts.errors.XcorrflowError`."""

from __future__ import annotations

from contracts.errors import XcorrflowError


class DspError(XcorrflowError):
    """Base class of dsp errors."""
