"""Running one pipeline service as a process: metrics endpoint, discovery registration, clean shutdown."""

from __future__ import annotations

import logging
import signal
from typing import Protocol

from contracts.metrics import serve_metrics
from contracts.settings import Settings
from xcorrflow.tuning import tune_allocator

log = logging.getLogger(__name__)


class Service(Protocol):
    """What every worker loop offers."""

    def run(self) -> None:
        """Loop until stopped."""

    def stop(self) -> None:
        """Finish the current unit of work and return from run()."""


def run_service(name: str, service: Service, settings: Settings, labels: dict[str, str] | None = None) -> int:
    """Serve /metrics, register for discovery, run ``service`` until SIGTERM/SIGINT, then deregister.

    Returns:
        The process exit code (0 after a requested stop).
    """
    tune_allocator()  # workers allocate the same large arrays for every file: keep freed pages for reuse
    endpoint = serve_metrics(name, targets_dir=settings.targets_dir, port=settings.metrics_port, labels=labels)
    log.info("%s serving metrics on %s", name, endpoint.url)

    def on_signal(signum: int, _frame: object) -> None:
        log.info("%s: signal %d, stopping after the current step", name, signum)
        service.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        service.run()
    finally:
        endpoint.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
