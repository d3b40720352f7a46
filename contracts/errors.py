"""Root of every exception xcorrflow raises on purpose.

Each package has its own ``errors.py`` whose classes derive from :class:`XcorrflowError`, so a caller can catch
everything the project raises deliberately without catching programming errors.
"""

from __future__ import annotations


class XcorrflowError(Exception):
    """Base class of all deliberate xcorrflow errors."""


class ConfigError(XcorrflowError):
    """The settings or a rules file are invalid."""


class ServiceUnavailable(XcorrflowError):
    """A required service (Kafka, S3, Prometheus) did not answer."""

    def __init__(self, service: str, endpoint: str, reason: str) -> None:
        super().__init__(f"{service} at {endpoint} is unavailable: {reason}")
        self.service = service
        self.endpoint = endpoint
        self.reason = reason


class TransientError(XcorrflowError):
    """A failure that waiting may heal (a store or broker briefly away): retry the work, never dead-letter it.

    Consume loops catch this root class to rewind and retry; each package's own transient errors derive from
    it (e.g. :class:`storage.errors.StorageUnavailable`).
    """


class JsonRefused(XcorrflowError, ValueError):
    """A message was refused before or while parsing it as JSON (too big, too deep, not UTF-8, malformed...).

    Also a :class:`ValueError`, like every "this input is bad" error, so callers that already dead-letter
    ``ValueError`` keep doing so.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
