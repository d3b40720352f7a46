"""Bounded retries with exponential backoff and jitter, for errors a caller has classified as transient.

Only transient failures are retried (the backend decides which: see :func:`storage.s3.is_transient`). Anything
else propagates at once, unchanged, so a 403 costs one request, not five.

Retries are bounded by a number of attempts, or, for services that must ride through a server restart, by a
time budget (``deadline_s``, from ``faults.s3_outage_s``): a restarted or frozen S3 server is waited for, and a
briefly absent server never turns good data into a dead letter. An observer (the process's outage tracker)
hears of every transient failure and success, so an outage is logged once, not once per request and thread.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from storage.errors import StorageUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")


class RetryObserver(Protocol):
    """Told of transient failures and of successes (e.g. :class:`contracts.outage.Outage`)."""

    def failed(self, cause: BaseException | str) -> None:
        """A transient failure happened."""

    def succeeded(self) -> None:
        """A call succeeded."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a transient failure.

    The wait before retry ``n`` (1-based) is drawn uniformly from ``[cap/2, cap]`` with
    ``cap = min(max_delay, base_delay * 2**(n-1))`` ("equal jitter"): waits grow exponentially, and clients that
    failed together do not retry in lock-step. With the defaults, five attempts wait at most 0.25 + 0.5 + 1 + 2 s.

    Attributes:
        max_attempts: total attempts, including the first (1 disables retrying); ignored with ``deadline_s``.
        base_delay: seconds; the cap of the first wait.
        max_delay: seconds; no single wait exceeds this.
        deadline_s: when set, retry for this many seconds after the first failure, however many attempts.
        sleep: how to wait (tests pass a recorder instead of ``time.sleep``).
        rng: source of jitter (tests pass a seeded ``random.Random``).
        observer: told of each transient failure and each success; with one, attempts log at DEBUG only.
        clock: monotonic seconds (tests pass a fake clock).
    """

    max_attempts: int = 5
    base_delay: float = 0.25
    max_delay: float = 8.0
    deadline_s: float | None = None
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)
    observer: RetryObserver | None = field(default=None, compare=False, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must not be negative")
        if self.deadline_s is not None and self.deadline_s < 0:
            raise ValueError("deadline_s must not be negative")

    def delay(self, retry_number: int) -> float:
        """Seconds to wait before retry ``retry_number`` (1 for the first retry)."""
        cap = min(self.max_delay, self.base_delay * 2 ** (retry_number - 1))
        return self.rng.uniform(cap / 2, cap)

    def call(
        self,
        operation: str,
        key: str,
        func: Callable[[], T],
        *,
        is_transient: Callable[[BaseException], bool],
    ) -> T:
        """Run ``func``, retrying transient failures.

        Args:
            operation: a short name for logs and errors, e.g. ``"put"``.
            key: the object key or prefix concerned.
            func: the attempt; it must be safe to repeat (every S3 call we retry is idempotent).
            is_transient: says whether an exception is worth another attempt.

        Returns:
            What ``func`` returned.

        Raises:
            StorageUnavailable: every attempt failed transiently; ``cause`` is the last error.
            Exception: the first non-transient error, unchanged.
        """
        started: float | None = None
        attempt = 0
        while True:
            attempt += 1
            try:
                result = func()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                started = self.clock() if started is None else started
                if self.observer is not None:
                    self.observer.failed(exc)
                if self._exhausted(attempt, self.clock() - started):
                    raise StorageUnavailable(operation, key, attempt, exc) from exc
                wait = self.delay(attempt)
                log.log(
                    logging.DEBUG if self.observer is not None else logging.WARNING,
                    "storage %s of %r failed transiently (attempt %d), retrying in %.2fs: %s",
                    operation,
                    key,
                    attempt,
                    wait,
                    exc,
                )
                self.sleep(wait)
                continue
            if self.observer is not None:
                self.observer.succeeded()
            return result

    def _exhausted(self, attempt: int, elapsed: float) -> bool:
        if self.deadline_s is not None:
            return elapsed >= self.deadline_s
        return attempt >= self.max_attempts
