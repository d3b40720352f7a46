"""Running one pipeline service as a process: metrics endpoint, discovery registration, clean shutdown.

A worker stops after its current step on SIGTERM or SIGINT; if that step cannot end (a call waiting on a
service that is away), it exits anyway after ``STOP_GRACE_S``. Started by ``xcorrflow run``, it also stops
when the run process dies (:func:`watch_parent`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import threading
from typing import Protocol

from contracts.kafka import configure_kafka_outage
from contracts.metrics import serve_metrics
from contracts.settings import Settings
from xcorrflow.orchestration.tuning import tune_allocator

log = logging.getLogger(__name__)
PARENT_ENV = "XCORRFLOW_PARENT_PID"  # set by xcorrflow.orchestration.fleet.WorkerProcess
STOP_GRACE_S = 30.0
_PR_SET_PDEATHSIG = 1


def watch_parent() -> None:
    """Ask the kernel to send SIGTERM when the process that started this worker dies (Linux only).

    The parent's pid comes from ``XCORRFLOW_PARENT_PID``; a worker started by hand has none and is left alone.
    If the parent died before this call, the worker exits at once rather than run as an orphan.
    """
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the run's own stop() remains the only stop
        log.warning("cannot ask to be stopped with the parent process on this system")
        return
    if os.getppid() != int(parent):
        log.warning("the process that started this worker (pid %s) is gone; exiting", parent)
        os._exit(1)


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
    watch_parent()
    configure_kafka_outage(settings)
    endpoint = serve_metrics(name, targets_dir=settings.targets_dir, port=settings.metrics_port, labels=labels)
    log.info("%s serving metrics on %s", name, endpoint.url)

    def on_signal(signum: int, _frame: object) -> None:
        log.info("%s: signal %d, stopping after the current step", name, signum)
        service.stop()
        watchdog = threading.Timer(STOP_GRACE_S, _exit_now, (name,))
        watchdog.daemon = True
        watchdog.start()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        service.run()
    finally:
        endpoint.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _exit_now(name: str) -> None:
    log.warning("%s did not stop within %.0f s of the signal; exiting now", name, STOP_GRACE_S)
    logging.shutdown()
    os._exit(143)
