"""Per-run accounting for ``bench.scale``: CPU per process group, peak RSS per service, and a memory watchdog.

:class:`RunSampler` extends :class:`bench.cpu_budget.CpuSampler` (the same ``/proc`` counters every 0.1 s). It
follows only the processes of one run: the process it started (``run``) and that process's descendants, named
by worker role (``xcorrflow worker <role>``), plus the stack's services by pid. Other agents' xcorrflow
workers on the same machine are never counted, which a command-line match alone would do.

Peak RSS is each process's ``VmHWM``. A fresh process's high-water mark is its own; the stack's long-lived
services get theirs reset at the start of the run (``/proc/<pid>/clear_refs``), or else their largest
``VmRSS`` seen during the run is used.

The watchdog sums ``VmRSS`` over the run's own processes at every sample. Over the cap, or with the machine's
``MemAvailable`` under the reserve, it calls ``on_breach`` once with the reason, so that a run that cannot
fit is stopped before the kernel's OOM killer picks a victim among other people's processes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.cpu_budget import CpuSampler, busy_cpu_s

GIB = 2**30
PAGE = os.sysconf("SC_PAGE_SIZE")


# Roles whose name would read as something else in a table: ``stack`` is the stacker, not the stack's services.
ROLE_NAMES = {"stack": "stacker"}


def worker_role(args: list[str]) -> str | None:
    """The role of an ``xcorrflow … worker <role> …`` command line, or None for any other command."""
    if "worker" in args and args.index("worker") + 1 < len(args):
        role = args[args.index("worker") + 1]
        return ROLE_NAMES.get(role, role)
    return None


def parent_pid(pid: int) -> int | None:
    """The parent of a process (``/proc/<pid>/stat``), or None when it is gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def descends_from(pid: int, root: int, parent: Callable[[int], int | None] = parent_pid) -> bool:
    """True when ``root`` is ``pid``'s parent, grandparent, …"""
    seen = 0
    while pid > 1 and seen < 64:
        ppid = parent(pid)
        if ppid is None:
            return False
        if ppid == root:
            return True
        pid, seen = ppid, seen + 1
    return False


def run_labeller(root: int, services: dict[int, str], root_label: str = "run") -> Callable[[int], str | None]:
    """Names the run's process ``root_label``, its worker descendants by role and the services by pid.

    A descendant that is not (yet) a worker answers None, so the sampler asks again: a process just forked
    shows its parent's command line until it execs.
    """

    def label(pid: int) -> str | None:
        if pid in services:
            return services[pid]
        if pid == root:
            return root_label
        if not descends_from(pid, root):
            return None
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            return None
        return worker_role(args)

    return label


def memory_of(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) of a process in bytes, or None when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values = {}
    for line in status.splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            values[line[:5]] = int(line.split()[1]) * 1024
    if len(values) < 2:  # a zombie has no memory lines
        return None
    return values["VmRSS"], values["VmHWM"]


def reset_peak(pid: int) -> bool:
    """Reset a process's VmHWM to its current RSS (``clear_refs`` 5); False when not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def mem_available() -> int:
    """The machine's ``MemAvailable`` in bytes."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def breach(tree_rss: int, cap: int, available: int, reserve: int) -> str | None:
    """Why a run must be stopped now (its processes over ``cap``, the machine under ``reserve``), or None."""
    if tree_rss > cap:
        return f"memory cap: the run's processes held {tree_rss / GIB:.1f} GiB, over the cap of {cap / GIB:.1f} GiB"
    if available < reserve:
        return (
            f"machine memory low: {available / GIB:.1f} GiB available, under the reserve of {reserve / GIB:.1f} GiB "
            f"(the run's processes held {tree_rss / GIB:.1f} GiB)"
        )
    return None


@dataclass
class MemoryLimits:
    """The watchdog's limits: the run's processes together, and what the machine must keep available."""

    cap: int
    reserve: int
    on_breach: Callable[[str], None] | None = None


@dataclass
class PeakTracker:
    """Peak memory per process: VmHWM where it is the process's own, else the largest VmRSS seen."""

    own_hwm: set[int] = field(default_factory=set)
    peaks: dict[int, int] = field(default_factory=dict)

    def update(self, pid: int, rss: int, hwm: int) -> None:
        """Record one reading of a process."""
        seen = hwm if pid in self.own_hwm else rss
        self.peaks[pid] = max(self.peaks.get(pid, 0), seen)

    def by_label(self, labels: dict[int, str | None]) -> dict[str, float]:
        """Peak MiB per label: the largest of the label's processes (each process is one service instance)."""
        out: dict[str, float] = {}
        for pid, peak in self.peaks.items():
            label = labels.get(pid)
            if label is not None:
                out[label] = max(out.get(label, 0.0), round(peak / 2**20, 1))
        return out


class RunSampler(CpuSampler):
    """CPU per group, peak memory per service and the memory watchdog of one run (see the module docstring)."""

    def __init__(
        self,
        root: int,
        services: dict[int, str],
        limits: MemoryLimits,
        *,
        root_label: str = "run",
        interval: float = 0.1,
    ) -> None:
        super().__init__(interval=interval, labeller=run_labeller(root, services, root_label))
        self.services, self.limits = services, limits
        self.peak = PeakTracker(own_hwm={pid for pid in services if reset_peak(pid)})
        self.tree_peak = 0
        self.breached: str | None = None

    def __enter__(self) -> RunSampler:
        super().__enter__()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.record(time.time(), busy_cpu_s(), self._groups())
            self._watch()
            self._stop.wait(self._interval)

    def _watch(self) -> None:
        tree = 0
        for pid, label in list(self._labels.items()):
            if label is None:
                continue
            mem = memory_of(pid)
            if mem is None:
                continue
            if pid not in self.services:
                self.peak.own_hwm.add(pid)  # started during the run: its high-water mark is its own
                tree += mem[0]
            self.peak.update(pid, *mem)
        self.tree_peak = max(self.tree_peak, tree)
        reason = breach(tree, self.limits.cap, mem_available(), self.limits.reserve)
        if reason and self.breached is None:
            self.breached = reason
            if self.limits.on_breach is not None:
                self.limits.on_breach(reason)

    def peak_rss_mb(self) -> dict[str, float]:
        """Peak MiB per service (workers by role, the largest instance)."""
        return self.peak.by_label(self._labels)

    def core_s(self, start: float, end: float) -> dict[str, float]:
        """Core-seconds of each followed group between two Unix times (``machine``: everything)."""
        return {name: round(self.busy_between(start, end, name), 2) for name in self.series}

    def span(self) -> tuple[float, float]:
        """The first and last sample times."""
        return (self.times[0], self.times[-1]) if self.times else (0.0, 0.0)
