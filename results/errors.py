"""Errors of the results package; all derive from :class:`contracts.errors.XcorrflowError`."""

from __future__ import annotations

from contracts.errors import XcorrflowError


class ResultsError(XcorrflowError):
    """A result hierarchy cannot be opened, or holds something else than expected."""


class LayoutMismatch(ResultsError):
    """An existing hierarchy was made with other processing parameters (rate, lags, stack kind)."""
