"""Background processes of the local stack, tracked by pid files.

A pid file records the pid *and* the process's start time (from /proc), so ``stop`` never signals a recycled pid
that now belongs to somebody else, and nothing is ever stopped by name. Each service runs in its own session
(process group), so stopping it also stops any child it spawned.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from xcorrflow.localstack.errors import StackError


@dataclass(frozen=True)
class PidRecord:
    """What a pid file holds."""

    pid: int
    start_ticks: int
    argv0: str


def process_start_ticks(pid: int) -> int | None:
    """Return the start time of ``pid`` in clock ticks since boot, or None when no such process exists."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses; fields after the last ')' are fixed.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has exited; it only waits to be reaped
        return None
    return int(fields[19])


def read_pid_file(path: Path) -> PidRecord | None:
    """Read a pid file, or return None when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text())
        return PidRecord(pid=int(data["pid"]), start_ticks=int(data["start_ticks"]), argv0=str(data["argv0"]))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def is_alive(record: PidRecord) -> bool:
    """True when the process of ``record`` still runs (same pid *and* same start time)."""
    return process_start_ticks(record.pid) == record.start_ticks


def spawn(
    argv: Sequence[str],
    *,
    pid_file: Path,
    log_file: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> PidRecord:
    """Start ``argv`` detached in its own session, log its output to ``log_file`` and record it in ``pid_file``.

    Returns:
        The record written to the pid file.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    ticks = None
    for _ in range(50):  # /proc/<pid>/stat appears as soon as fork returns; be patient on a loaded machine
        ticks = process_start_ticks(proc.pid)
        if ticks is not None:
            break
        time.sleep(0.01)
    record = PidRecord(pid=proc.pid, start_ticks=ticks or 0, argv0=str(argv[0]))
    pid_file.write_text(json.dumps(record.__dict__))
    return record


def stop(pid_file: Path, *, timeout: float = 30.0) -> bool:
    """Stop the process group recorded in ``pid_file``: SIGTERM, then SIGKILL after ``timeout`` seconds.

    Returns:
        True when a live process was stopped, False when there was nothing (or only a stale record) to stop.
    """
    record = read_pid_file(pid_file)
    if record is None:
        return False
    stopped = False
    if is_alive(record):
        _signal_group(record.pid, signal.SIGTERM)
        if not wait_until(lambda: not is_alive(record), timeout=timeout, interval=0.2):
            _signal_group(record.pid, signal.SIGKILL)
            wait_until(lambda: not is_alive(record), timeout=10, interval=0.1)
        stopped = True
    pid_file.unlink(missing_ok=True)
    return stopped


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)  # the service is its session leader, so its pgid is its pid
    _reap(pid)


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our own child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def wait_until(predicate: Callable[[], bool], *, timeout: float, interval: float = 0.25) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_free_port(service: str, host: str, port: int) -> None:
    """Raise when a port the stack needs is taken by a process the stack did not start."""
    if port_open(host, port):
        raise StackError(
            f"{service}: port {host}:{port} is already in use by another process; stop it or choose another "
            f"port (see README, XCORRFLOW_*_PORT)"
        )


def tail(path: Path, lines: int = 20) -> str:
    """Return the last ``lines`` lines of a log file, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
