"""Worker processes started by ``xcorrflow run`` (and by the integration tests): start, wait ready, supervise, stop.

Each worker is ``python -m xcorrflow worker <service> …`` in its own process, exactly what an operator would
run on another machine; a run only adds the topic prefix and namespace that isolate it.

**Supervision.** A worker that dies (a crash, ``kill -9``, the OOM killer) is started again after a pause that
doubles with each restart (``faults.restart_backoff_s``, at most 30 s); its consumer group gives it its
partitions back and the work it had not committed is redone, which the services' exactly-once commits make
harmless. After ``faults.max_restarts`` restarts of one worker the run fails, quoting the end of its log.

**No orphans.** Each worker is told its parent's pid (``XCORRFLOW_PARENT_PID``) and asks the kernel for a
SIGTERM when that parent dies (``PR_SET_PDEATHSIG``, see :func:`xcorrflow.orchestration.workers.watch_parent`), so
killing the run, even with ``kill -9``, stops its workers. The signal follows the *thread* that started the worker:
start workers from the main thread.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from xcorrflow.errors import CommandError
from xcorrflow.orchestration.workers import PARENT_ENV

log = logging.getLogger(__name__)
_MAX_BACKOFF_S = 30.0


class WorkerFailed(CommandError):
    """A worker exited, or did not become ready in time."""


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60.0, interval: float = 0.05) -> None:
    """Poll until ``predicate()`` holds.

    Raises:
        TimeoutError: it did not within ``timeout`` seconds (the message says what was awaited).
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting until {what}")
        time.sleep(interval)


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) of a process itself, from ``/proc``; None when it is gone.

    Waited-for children are left out: a parent that reaps its workers must not be charged for them.
    """
    try:
        # /proc/<pid>/stat: the command may hold spaces, so split after its closing parenthesis
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class WorkerProcess:
    """``xcorrflow worker <args>`` as a child process, logging to a file."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None, log: Path | None = None) -> None:
        self.args = [sys.executable, "-m", "xcorrflow", "-v", "worker", *args]
        self.env = {**os.environ, **(env or {})}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_start = 0
        self.restarts = 0
        self.restart_at: float | None = None  # monotonic time of the next restart of a dead worker

    @property
    def name(self) -> str:
        """The service name (first worker argument)."""
        return self.args[5]

    def start(self) -> WorkerProcess:
        """Start the worker; it will stop when this process dies."""
        self.env[PARENT_ENV] = str(os.getpid())
        if self.log is not None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            # An earlier process may have written to the same log: only what this one writes counts.
            self._log_start = self.log.stat().st_size if self.log.exists() else 0
            with open(self.log, "ab") as out:
                self.proc = subprocess.Popen(self.args, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        else:
            self.proc = subprocess.Popen(self.args, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        return self

    def wait_log(self, text: str, timeout: float = 60.0) -> WorkerProcess:
        """Wait until the worker's log contains ``text`` (workers log "ready" once they consume).

        Raises:
            WorkerFailed: it exited first, or the text did not appear in time.
        """
        if self.log is None:
            raise WorkerFailed(f"{self.name}: wait_log needs a log file")
        try:
            wait_for(lambda: not self.alive() or text in self.log_text(), f"{self.name} is {text}", timeout)
        except TimeoutError as exc:
            raise WorkerFailed(str(exc)) from exc
        if not self.alive():
            raise WorkerFailed(f"{self.name} exited:\n{self.log_text()[-3000:]}")
        return self

    def log_text(self) -> str:
        """What this process wrote to its log so far."""
        if self.log is None or not self.log.exists():
            return ""
        with open(self.log, "rb") as fh:
            fh.seek(self._log_start)
            return fh.read().decode(errors="replace")

    def kill9(self) -> None:
        """SIGKILL: no shutdown hook runs, open transactions stay open."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait, SIGKILL if needed; returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    @property
    def label(self) -> str:
        """A name unique within a fleet: the log file's stem (e.g. ``correlate-1``), else the service."""
        return self.log.stem if self.log else self.name

    def peak_rss_mb(self) -> float | None:
        """The process's peak resident memory so far (VmHWM), in MiB; None when it is not running."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
        return None

    def cpu_s(self) -> float | None:
        """CPU seconds (user + system) the process used so far; None when it is not running."""
        used = process_cpu_s(self.pid)
        return None if used is None else round(used, 2)

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        """The process id (0 before start)."""
        return self.proc.pid if self.proc else 0


class Fleet:
    """A set of workers started together and stopped together."""

    def __init__(self) -> None:
        self.workers: list[WorkerProcess] = []

    def add(self, worker: WorkerProcess) -> WorkerProcess:
        """Start a worker and keep it (readiness is awaited by :meth:`wait_ready`)."""
        self.workers.append(worker.start())
        return worker

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Wait until every worker logged "ready"."""
        for worker in self.workers:
            worker.wait_log("ready", timeout)

    def check_alive(self) -> None:
        """Raise when a worker died.

        Raises:
            WorkerFailed: naming the worker and the tail of its log.
        """
        for worker in self.workers:
            if not worker.alive():
                raise WorkerFailed(f"worker {worker.label} (pid {worker.pid}) exited unexpectedly:\n{_tail(worker)}")

    def supervise(self, max_restarts: int, backoff_s: float) -> list[str]:
        """Restart the workers that died, each after its pause; returns what was done, one line per action.

        Raises:
            WorkerFailed: a worker died after ``max_restarts`` restarts (the message quotes its log's end).
        """
        said = []
        now = time.monotonic()
        for worker in self.workers:
            if worker.alive():
                continue
            if worker.restart_at is None:
                code = worker.proc.returncode if worker.proc else None
                if worker.restarts >= max_restarts:
                    raise WorkerFailed(
                        f"worker {worker.label} exited (code {code}) after {worker.restarts} restarts, the limit "
                        f"set by faults.max_restarts; the end of its log:\n{_tail(worker)}"
                    )
                delay = min(_MAX_BACKOFF_S, backoff_s * 2**worker.restarts)
                worker.restart_at = now + delay
                said.append(f"worker {worker.label} (pid {worker.pid}) exited with code {code}; restarting it in "
                            f"{delay:.1f} s ({worker.restarts + 1}/{max_restarts})")  # fmt: skip
            elif now >= worker.restart_at:
                worker.restart_at = None
                worker.restarts += 1
                worker.start()
                said.append(f"worker {worker.label} restarted as pid {worker.pid}")
        for line in said:
            log.warning("%s", line)
        return said

    def restarts(self) -> dict[str, int]:
        """How often each worker was restarted."""
        return {w.label: w.restarts for w in self.workers}

    def peak_rss_mb(self) -> dict[str, float | None]:
        """Peak resident memory of each worker so far (call before :meth:`stop`)."""
        return {w.label: w.peak_rss_mb() for w in self.workers}

    def cpu_s(self) -> dict[str, float | None]:
        """CPU seconds each worker used so far (call before :meth:`stop`)."""
        return {w.label: w.cpu_s() for w in self.workers}

    def stop(self) -> None:
        """Stop every worker (in parallel: SIGTERM to all, then wait); none is restarted afterwards."""
        for worker in self.workers:
            if worker.alive() and worker.proc is not None:
                worker.proc.terminate()
        for worker in self.workers:
            worker.stop()


def _tail(worker: WorkerProcess, chars: int = 2000) -> str:
    """The end of a worker's log file (every run of it)."""
    if worker.log is None or not worker.log.exists():
        return "(no log)"
    with open(worker.log, "rb") as fh:
        fh.seek(max(0, worker.log.stat().st_size - chars))
        return fh.read().decode(errors="replace")
