"""Fault injection on a private stack: kill, restart, freeze and thaw Kafka and the S3 server; find and kill a
run's workers and its ``xcorrflow run`` process.

Everything here acts on a :class:`PrivateStack`, never on the shared development stack: the stack has its own
home (pid files, data, logs) and its own ports, and :meth:`PrivateStack.check_private` refuses the shared
defaults. Services are found through the pid files the stack manager writes (pid *and* start time, so a
recycled pid is never signalled); worker processes through ``/proc`` (their command line names the run id as
``--topic-prefix``). Nothing is ever stopped by name.

Used by ``bench/chaos.py`` (``make chaos``) and ``tests/integration/xcorrflow/test_faults.py``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from contracts.settings import Settings
from xcorrflow.localstack import process
from xcorrflow.localstack.manager import NativeStack
from xcorrflow.localstack.service import Service
from xcorrflow.orchestration.fleet import process_cpu_s

SHARED_PORTS = frozenset({19000, 19090, 19092, 19093})  # the shared dev stack (README): never touch it
SERVICES = ("kafka", "s3")  # Prometheus is left out: no fault involves it, and it costs CPU on 2 cores


class FaultError(RuntimeError):
    """A fault could not be injected or undone (the message says which and why)."""


@dataclass(frozen=True)
class PrivateStack:
    """Kafka and the S3 server under their own home and ports: ``port_base`` + 92/93 (Kafka client and
    controller), + 0 (S3) and + 90 (Prometheus, should it be started)."""

    home: Path
    port_base: int

    @property
    def ports(self) -> dict[str, int]:
        """Every port of the stack by its settings name."""
        b = self.port_base
        return {"kafka_port": b + 92, "kafka_controller_port": b + 93, "s3_port": b, "prometheus_port": b + 90}

    def env(self) -> dict[str, str]:
        """``XCORRFLOW_*`` variables that point a process (``xcorrflow run``, its workers) at this stack.

        The bootstrap and S3 endpoint are set explicitly because ``make test`` exports the shared stack's,
        and they win over the ports.
        """
        p = self.ports
        return {
            "XCORRFLOW_HOME": str(self.home),
            "XCORRFLOW_KAFKA_PORT": str(p["kafka_port"]),
            "XCORRFLOW_KAFKA_CONTROLLER_PORT": str(p["kafka_controller_port"]),
            "XCORRFLOW_KAFKA_BOOTSTRAP": f"127.0.0.1:{p['kafka_port']}",
            "XCORRFLOW_S3_PORT": str(p["s3_port"]),
            "XCORRFLOW_S3_ENDPOINT": f"127.0.0.1:{p['s3_port']}",
            "XCORRFLOW_PROMETHEUS_PORT": str(p["prometheus_port"]),
            "XCORRFLOW_S3_NOTIFICATIONS": "false",
        }

    def process_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """This process's environment pointed at the stack, plus ``extra``."""
        return {**os.environ, **self.env(), **(extra or {})}

    def settings(self) -> Settings:
        """Settings of the stack (explicit values beat any ``XCORRFLOW_*`` in the environment)."""
        b = self.port_base
        return Settings(
            home=self.home,
            kafka_port=b + 92,
            kafka_controller_port=b + 93,
            kafka_bootstrap=f"127.0.0.1:{b + 92}",
            s3_port=b,
            s3_endpoint=f"127.0.0.1:{b}",
            prometheus_port=b + 90,
            s3_notifications=False,
        )

    @property
    def bootstrap(self) -> str:
        """Kafka bootstrap servers."""
        return self.settings().bootstrap_servers

    def check_private(self) -> None:
        """Refuse the shared stack's ports or home.

        Raises:
            FaultError: a port of the shared stack, or the home of a checkout's default stack.
        """
        shared = SHARED_PORTS & set(self.ports.values())
        if shared:
            raise FaultError(f"ports {sorted(shared)} belong to the shared dev stack; pick another port base")
        if self.home.resolve().name == ".stack":
            raise FaultError(f"{self.home} looks like a checkout's shared stack home; use a private directory")

    def service(self, name: str) -> Service:
        """The stack manager's service object (``kafka`` or ``s3``)."""
        self.check_private()
        stack = NativeStack(self.settings(), say=lambda _line: None)
        return {"kafka": stack.kafka, "s3": stack.s3, "prometheus": stack.prometheus}[name]

    def up(self) -> float:
        """Start whatever of Kafka and S3 is down (installing what is missing) and wait until healthy.

        Returns:
            Seconds it took.
        """
        t0 = time.monotonic()
        for name in SERVICES:
            thaw(self, name)  # a frozen server would never answer its health check
            self.service(name).start()
        return time.monotonic() - t0

    def down(self) -> None:
        """Stop the services this stack started (its pid files say which)."""
        for name in reversed(SERVICES):
            thaw(self, name)
            self.service(name).stop()

    def wipe(self) -> None:
        """Stop the stack and delete its home."""
        self.down()
        shutil.rmtree(self.home, ignore_errors=True)

    def healthy(self, name: str) -> bool:
        """True when the service answers its readiness check."""
        return self.service(name).healthy()


def ephemeral_ports() -> range:
    """The ports the kernel hands out to outgoing connections (Linux's ``ip_local_port_range``).

    A server port inside it can be taken at any moment by some client's socket, so a private stack must not
    use one.
    """
    try:
        low, high = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return range(low, high + 1)


def port_bindable(port: int) -> bool:
    """True when a server could bind 127.0.0.1:``port`` now (nobody listens on it, no socket holds it)."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_base(first: int, tries: int = 10, step: int = 100) -> int:
    """The first port base from ``first`` (then + ``step``…) whose stack ports are all free and outside the
    ephemeral range, so that two test sessions on one machine each get their own stack.

    Raises:
        FaultError: all ``tries`` bases are taken or ephemeral.
    """
    ephemeral = ephemeral_ports()
    for base in range(first, first + tries * step, step):
        ports = PrivateStack(Path("/nonexistent"), base).ports.values()
        if not any(port in ephemeral for port in ports) and all(port_bindable(port) for port in ports):
            return base
    raise FaultError(
        f"no free port base among {first}..{first + (tries - 1) * step} outside the ephemeral ports "
        f"{ephemeral.start}..{ephemeral.stop - 1}"
    )


# --- services: kill, restart, freeze, thaw ---------------------------------------------------------------


def service_pid(stack: PrivateStack, name: str) -> int | None:
    """The live pid of a stack service from its pid file, or None when it is not running."""
    record = process.read_pid_file(stack.home / "run" / f"{name}.pid")
    return record.pid if record is not None and process.is_alive(record) else None


def kill_service(stack: PrivateStack, name: str) -> float:
    """SIGKILL a stack service (its whole process group) and wait until it is gone.

    Returns:
        The wall time (Unix seconds) of the kill.

    Raises:
        FaultError: the service is not running.
    """
    pid = service_pid(stack, name)
    if pid is None:
        raise FaultError(f"{name} is not running; nothing to kill")
    thaw(stack, name)  # a stopped process dies on SIGKILL too, but keep the state simple
    at = time.time()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)  # the service leads its own session (xcorrflow.localstack.process.spawn)
    service = stack.service(name)
    # A multi-threaded process shows as a zombie while its threads still exit, its sockets open: wait for both.
    gone = lambda: _reaped(pid) and not any(process.port_open(h, p) for h, p in service.endpoints())  # noqa: E731
    if not process.wait_until(gone, timeout=15, interval=0.05):
        raise FaultError(f"{name} (pid {pid}) survived SIGKILL for 15 s, or its ports stayed open")
    return at


def _reaped(pid: int) -> bool:
    """Collect the exit status when the process is our child; True once it no longer runs."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return process.process_start_ticks(pid) is None


def restart_service(stack: PrivateStack, name: str) -> float:
    """Start a service that is down (as ``xcorrflow stack up`` would) and wait until it is healthy.

    Returns:
        The wall time at which it answered its health check again.
    """
    stack.service(name).start()
    return time.time()


def freeze(stack: PrivateStack, name: str) -> float:
    """SIGSTOP a stack service: its sockets stay open but nothing answers. Returns the wall time."""
    pid = service_pid(stack, name)
    if pid is None:
        raise FaultError(f"{name} is not running; nothing to freeze")
    os.killpg(pid, signal.SIGSTOP)
    return time.time()


def thaw(stack: PrivateStack, name: str) -> float:
    """SIGCONT a stack service (harmless when it is not stopped). Returns the wall time."""
    pid = service_pid(stack, name)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGCONT)
    return time.time()


# --- processes of a run ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    """One process seen in ``/proc``."""

    pid: int
    ppid: int
    argv: tuple[str, ...]

    @property
    def cmdline(self) -> str:
        """The command line as one string."""
        return " ".join(self.argv)

    def option(self, flag: str) -> str | None:
        """The value after ``flag`` on the command line, or None."""
        args = list(self.argv)
        return args[args.index(flag) + 1] if flag in args[:-1] else None

    @property
    def service(self) -> str | None:
        """For ``python -m xcorrflow [-v] worker <service> …``: the service; otherwise None."""
        args = list(self.argv)
        return args[args.index("worker") + 1] if "xcorrflow" in args and "worker" in args[:-1] else None


def processes() -> list[Proc]:
    """Every live, non-zombie process of this machine that we may read, except this one."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if raw and fields[0] != "Z":
            argv = tuple(a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0"))
            found.append(Proc(int(entry.name), int(fields[1]), argv))
    return found


def naming(text: str) -> list[Proc]:
    """Processes whose command line contains ``text`` (after a run ends: its orphans)."""
    return [p for p in processes() if text in p.cmdline]


def workers_of(run_id: str, service: str | None = None) -> list[Proc]:
    """Worker processes of a run (``--topic-prefix <run id>``), optionally of one service, by pid."""
    found = [p for p in processes() if p.service and p.option("--topic-prefix") == run_id]
    return sorted((p for p in found if service in (None, p.service)), key=lambda p: p.pid)


def run_id_of(run_pid: int, timeout: float = 120.0) -> str:
    """The run id of a running ``xcorrflow run``: the ``--topic-prefix`` of the workers it started.

    Raises:
        FaultError: no worker of that process appeared within ``timeout`` seconds, or it exited.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in processes():
            prefix = proc.option("--topic-prefix")
            if proc.service and prefix and _descends_from(proc, run_pid):
                return prefix
        if process.process_start_ticks(run_pid) is None:
            raise FaultError(f"run process {run_pid} exited before any worker appeared")
        time.sleep(0.2)
    raise FaultError(f"no worker of run process {run_pid} appeared within {timeout:.0f} s")


def _descends_from(proc: Proc, ancestor: int, depth: int = 4) -> bool:
    """True when ``ancestor`` is the parent of ``proc``, or its parent's parent (up to ``depth`` levels)."""
    pid = proc.ppid
    for _ in range(depth):
        if pid == ancestor:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat[stat.rindex(")") + 2 :].split()[1])
    return False


def busiest(procs: list[Proc]) -> Proc:
    """The process that used the most CPU so far: the one doing the work (an idle group member has none).

    Raises:
        FaultError: the list is empty.
    """
    if not procs:
        raise FaultError("no process to choose from")
    return max(procs, key=lambda p: process_cpu_s(p.pid) or 0.0)


def kill9(pid: int) -> float:
    """SIGKILL one process (not its group); returns the wall time. A process already gone is fine."""
    at = time.time()
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return at


def kill_all(procs: list[Proc]) -> list[int]:
    """SIGKILL each process by pid (cleanup of a run's leftovers); returns the pids signalled."""
    for proc in procs:
        kill9(proc.pid)
    return [p.pid for p in procs]


def wait_gone(text: str, timeout: float) -> list[Proc]:
    """Wait up to ``timeout`` seconds until no process names ``text``; returns those still alive."""
    process.wait_until(lambda: not naming(text), timeout=timeout, interval=0.2)
    return naming(text)
