"""Errors of the local-stack manager."""

from __future__ import annotations

from contracts.errors import XcorrflowError


class StackError(XcorrflowError):
    """A local-stack service could not be installed, started or stopped."""
