"""Errors raised by the xcorrflow command layer; all derive from :class:`contracts.errors.XcorrflowError`."""

from __future__ import annotations

from contracts.errors import XcorrflowError


class CommandError(XcorrflowError):
    """Base class of command-layer errors."""


class ModeUnavailable(CommandError):
    """The requested run mode is not available in this build (e.g. it needs the Kafka pipeline)."""

    def __init__(self, mode: str, reason: str) -> None:
        super().__init__(f"run mode {mode!r} is not available: {reason}")
        self.mode = mode
        self.reason = reason
