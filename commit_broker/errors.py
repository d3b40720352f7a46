"""Errors raised by the commit_broker package; all derive from :class:`contracts.errors.XcorrflowError`."""

from __future__ import annotations

from contracts.errors import XcorrflowError


class CommitBrokerError(XcorrflowError):
    """Base class of commit_broker errors."""


class RulesError(CommitBrokerError):
    """The rules file is unreadable or invalid."""


class StateError(CommitBrokerError):
    """The broker's persisted state cannot be restored."""
