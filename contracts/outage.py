"""Availability of the services a process depends on (Kafka, S3), as that process sees them.

Each process keeps one :class:`Outage` per dependency. Code that talks to a dependency reports failures
(:meth:`Outage.failed`) and successes (:meth:`Outage.succeeded`); the tracker turns hundreds of identical
client errors into one log line when the dependency goes away and one when it comes back, exports its state
as a gauge, and says when an outage has lasted longer than the settings allow (:meth:`Outage.check`), so a
service or a run fails with a message that names the dependency and the limit instead of hanging.

Waiting is the caller's: :meth:`Outage.backoff` gives the pause before the next attempt, growing while the
dependency stays away (0.25 s, 0.5 s, ... up to 5 s), so a restarted broker is found within seconds without a
busy loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from prometheus_client import Gauge

from contracts.errors import XcorrflowError

log = logging.getLogger(__name__)

DEPENDENCY_UP = Gauge("xcorrflow_dependency_up", "1 while the dependency answers, 0 during an outage", ["dependency"])
_MAX_BACKOFF_S = 5.0
_SOFT_WINDOW_S = 3.0


class DependencyUnavailable(XcorrflowError):
    """A dependency stayed away longer than the settings allow.

    Attributes:
        dependency: ``kafka`` or ``s3``.
        where: its address.
        down_for: seconds since it went away.
        limit: the allowed outage, seconds.
        cause: the last failure seen.
    """

    def __init__(self, dependency: str, where: str, down_for: float, limit: float, cause: str, setting: str) -> None:
        super().__init__(
            f"{dependency} at {where or '?'} has been unreachable for {down_for:.0f} s, longer than the "
            f"{limit:.0f} s allowed by {setting}; last error: {cause}"
        )
        self.dependency, self.where, self.down_for, self.limit, self.cause = dependency, where, down_for, limit, cause


class Outage:
    """One dependency's availability in this process. Thread-safe."""

    def __init__(self, name: str, setting: str, limit_s: float = 120.0, clock: Callable[[], float] = time.monotonic):
        """A tracker for dependency ``name`` whose limit is set by the settings field ``setting``."""
        self.name = name
        self.setting = setting
        self.limit_s = limit_s
        self.where = ""
        self._clock = clock
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._last_cause = ""
        self._failures = 0
        self.generation = 0  # outages seen so far (counts transitions from up to down)
        self._last_success = -_SOFT_WINDOW_S
        DEPENDENCY_UP.labels(dependency=name).set(1)

    def configure(self, where: str, limit_s: float) -> None:
        """Set the address shown in messages and the allowed outage."""
        self.where, self.limit_s = where, limit_s

    @property
    def down(self) -> bool:
        """True during an outage."""
        return self._down_since is not None

    @property
    def down_for(self) -> float:
        """Seconds since the dependency went away (0 while it is up)."""
        since = self._down_since
        return 0.0 if since is None else self._clock() - since

    def failed(self, cause: BaseException | str, *, soft: bool = False) -> None:
        """Record a failure that waiting may heal; logs only when the dependency goes from up to down.

        Args:
            cause: the error.
            soft: a client's own report of lost connections (librdkafka's "all brokers down"), which a new or
                reconnecting client also makes while the cluster answers others: ignored within
                ``_SOFT_WINDOW_S`` of a success.
        """
        text = str(cause).splitlines()[0][:300] if str(cause) else type(cause).__name__
        if soft and self._down_since is None and self._clock() - self._last_success < _SOFT_WINDOW_S:
            return
        with self._lock:
            self._last_cause = text
            self._failures += 1
            if self._down_since is not None:
                return
            self._down_since = self._clock()
            self.generation += 1
        DEPENDENCY_UP.labels(dependency=self.name).set(0)
        log.warning(
            "%s at %s is unreachable (%s); retrying for up to %.0f s (%s)",
            self.name,
            self.where or "?",
            text,
            self.limit_s,
            self.setting,
        )

    def succeeded(self) -> None:
        """Record a success; logs only when the dependency comes back."""
        with self._lock:
            since, self._down_since, self._failures = self._down_since, None, 0
            self._last_success = self._clock()
        if since is not None:
            DEPENDENCY_UP.labels(dependency=self.name).set(1)
            log.warning("%s at %s is reachable again after %.1f s", self.name, self.where or "?", self._clock() - since)

    def check(self) -> None:
        """Raise when the current outage has lasted longer than the limit.

        Raises:
            DependencyUnavailable: naming the dependency, its address, the limit and the last error.
        """
        down_for = self.down_for
        if self._down_since is not None and down_for > self.limit_s:
            raise DependencyUnavailable(self.name, self.where, down_for, self.limit_s, self._last_cause, self.setting)

    def backoff(self) -> float:
        """Seconds to wait before the next attempt: doubles with each failure of this outage, capped at 5 s."""
        return min(_MAX_BACKOFF_S, 0.25 * 2 ** max(0, min(self._failures, 8) - 1))

    def pause(self) -> None:
        """Check the limit, then sleep for :meth:`backoff`.

        Raises:
            DependencyUnavailable: the outage lasted longer than the limit.
        """
        self.check()
        time.sleep(self.backoff())


KAFKA = Outage("kafka", "faults.kafka_outage_s")
S3 = Outage("s3", "faults.s3_outage_s")


def configure_outages(where_kafka: str, kafka_limit_s: float, where_s3: str, s3_limit_s: float) -> None:
    """Set the addresses and limits of this process's trackers (once, at start, from the settings)."""
    KAFKA.configure(where_kafka, kafka_limit_s)
    S3.configure(where_s3, s3_limit_s)
