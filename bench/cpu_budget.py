"""``python -m bench.cpu_budget``: how busy the machine's cores are during each phase of a run, and who uses them.

The overlap bound max(T_prep, T_xcorr) / (T_prep + T_xcorr) assumes each phase leaves the resources of the other
idle. On a 2-core machine that holds only if a barrier run leaves cores idle, and this benchmark shows whether
it does. It runs each mode once on ``bench.pipeline``'s deployment while a sampler reads the machine's CPU
counters (``/proc/stat``) and those of every process involved (``/proc/<pid>/stat``) every 0.1 s. It reports:

- ``busy``: the fraction of all cores in use (by any process) over the makespan, and over phase 1 (ingest start
  → last FileReady) and phase 2 (→ last stack) of the run;
- ``cpu_bound_s``: the busy core-seconds of the makespan over the core count, the shortest makespan that this
  much work allows. Overlapping phases cannot go below it; only less work can;
- ``cores_phase1`` / ``cores_phase2`` (``cores`` without phases): the cores each process group kept busy on
  average in that phase: the ``xcorrflow run`` process (ingest, progress, export), each worker role, and the
  stack's Kafka, S3 server and Prometheus; ``machine`` is everything, other processes included.

Writes ``bench/results/cpu_budget.json``. It needs the local stack (``make up``) and Linux ``/proc``.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.pipeline import RESULTS, run_once, synth
from contracts.settings import Settings
from xcorrflow.localstack.process import is_alive, read_pid_file
from xcorrflow.localstack.service import StackPaths
from xcorrflow.orchestration.fleet import process_cpu_s

SERVICES = ("kafka", "s3", "prometheus")
TICK = os.sysconf("SC_CLK_TCK")
LABEL_RETRY_S = 2.0  # how long a process that looks unrelated is asked again (fork happens before exec)


class CpuSampler:
    """Samples CPU time in a background thread: the whole machine's, and optionally each labelled process group's.

    ``labeller(pid)`` names the group a process belongs to (None: not followed). It is asked once per process,
    or again for two seconds while it says None: a process just forked still shows its parent's command line
    until it execs. A group's series counts its processes' CPU from the first sample that saw them, and keeps
    what an exited process used.
    """

    def __init__(self, interval: float = 0.1, labeller: Callable[[int], str | None] | None = None) -> None:
        self.times: list[float] = []
        self.series: dict[str, list[float]] = {"machine": []}
        self._labeller = labeller
        self._labels: dict[int, str | None] = {}
        self._first_seen: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._totals: dict[str, float] = {}
        self._interval, self._stop = interval, threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cpu-sampler", daemon=True)

    @property
    def busy(self) -> list[float]:
        """The machine's busy CPU seconds at each sample."""
        return self.series["machine"]

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.record(time.time(), busy_cpu_s(), self._groups() if self._labeller else {})
            self._stop.wait(self._interval)

    def record(self, t: float, machine: float, groups: dict[str, float]) -> None:
        """Append one sample (groups: cumulative CPU seconds per label; a new label starts at zero)."""
        n = len(self.times)
        self.times.append(t)
        self.busy.append(machine)
        for label, value in groups.items():
            self.series.setdefault(label, [0.0] * n).append(value)
        for values in self.series.values():
            if len(values) == n:  # a label this sample did not mention keeps its last value
                values.append(values[-1] if values else 0.0)

    def _groups(self) -> dict[str, float]:
        assert self._labeller is not None
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            if pid not in self._labels or (
                self._labels[pid] is None and time.monotonic() - self._first_seen[pid] < LABEL_RETRY_S
            ):
                self._first_seen.setdefault(pid, time.monotonic())
                self._labels[pid] = self._labeller(pid)
            label = self._labels[pid]
            if label is None:
                continue
            used = process_cpu_s(pid)
            if used is None:
                continue
            self._totals[label] = self._totals.get(label, 0.0) + used - self._last.get(pid, used)
            self._last[pid] = used
        return dict(self._totals)

    def busy_between(self, start: float, end: float, series: str = "machine") -> float:
        """CPU seconds of a series between two Unix times (interpolated between samples)."""
        return self._at(end, self.series[series]) - self._at(start, self.series[series])

    def _at(self, t: float, values: list[float]) -> float:
        i = bisect.bisect_left(self.times, t)
        if i <= 0:
            return values[0]
        if i >= len(self.times):
            return values[-1]
        t0, t1, b0, b1 = self.times[i - 1], self.times[i], values[i - 1], values[i]
        return b0 + (b1 - b0) * (t - t0) / (t1 - t0)


def pipeline_labeller(services: dict[int, str]) -> Callable[[int], str | None]:
    """Labels the stack's services by pid, xcorrflow workers by role and the ``xcorrflow run`` process."""

    def label(pid: int) -> str | None:
        if pid in services:
            return services[pid]
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            return None
        if "xcorrflow" not in args:
            return None
        if "worker" in args and args.index("worker") + 1 < len(args):
            return args[args.index("worker") + 1]
        return "run" if "run" in args else None

    return label


def busy_cpu_s() -> float:
    """CPU seconds the machine has spent busy since boot, over all cores (``/proc/stat``: all but idle, iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / TICK


def service_pids(paths: StackPaths) -> dict[int, str]:
    """The pid of each running stack service."""
    found = {}
    for name in SERVICES:
        record = read_pid_file(paths.pid_file(name))
        if record is not None and is_alive(record):
            found[record.pid] = name
    return found


def budget(mode: str, data: Path, out: Path, paths: StackPaths, cores: int) -> dict[str, Any]:
    """Run ``mode`` once and account its CPU: the machine's busy time and each process group's, per phase."""
    with CpuSampler(labeller=pipeline_labeller(service_pids(paths))) as sampler:
        report = run_once(mode, data, out)
    start, makespan = report["started_at"], report["makespan_s"]
    phase1 = report["timings_s"].get("last_ready") or report["timings_s"].get("preprocess") or 0.0

    def cores_used(t0: float, t1: float) -> dict[str, float]:
        used = {name: sampler.busy_between(start + t0, start + t1, name) / (t1 - t0) for name in sampler.series}
        return {name: round(v, 2) for name, v in sorted(used.items(), key=lambda kv: -kv[1]) if v >= 0.005}

    busy = sampler.busy_between(start, start + makespan)
    row: dict[str, Any] = {
        "mode": mode,
        "makespan_s": makespan,
        "busy": round(busy / (cores * makespan), 3),
        "busy_core_s": round(busy, 2),
        "cpu_bound_s": round(busy / cores, 2),
        "cores": cores_used(0.0, makespan),
    }
    if 0 < phase1 < makespan:
        row["phase1_s"] = round(phase1, 3)
        row["busy_phase1"] = round(sampler.busy_between(start, start + phase1) / (cores * phase1), 3)
        row["busy_phase2"] = round(
            sampler.busy_between(start + phase1, start + makespan) / (cores * (makespan - phase1)), 3
        )
        row["cores_phase1"] = cores_used(0.0, phase1)
        row["cores_phase2"] = cores_used(phase1, makespan)
    return row


def main(argv: list[str] | None = None) -> int:
    """Account one run of each mode and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=130)
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--modes", default="barrier,streaming,inprocess")
    args = parser.parse_args(argv)

    cores = os.cpu_count() or 1
    paths = StackPaths.from_settings(Settings())
    data = synth(args.stations, args.rate)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "xcorrflow-bench" / "cpu"
    rows = [budget(mode, data, work / mode, paths, cores) for mode in args.modes.split(",")]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cpu_budget.json").write_text(json.dumps({"cores": cores, "runs": rows}, indent=1) + "\n")
    for row in rows:
        phases = (
            f", phase 1 {row['busy_phase1']:.0%} / phase 2 {row['busy_phase2']:.0%}" if "busy_phase1" in row else ""
        )
        print(
            f"{row['mode']:>10}: makespan {row['makespan_s']:.1f} s, cores busy {row['busy']:.0%}{phases}; "
            f"CPU-bound makespan {row['cpu_bound_s']:.1f} s"
        )
        for key in ("cores_phase1", "cores_phase2") if "cores_phase1" in row else ("cores",):
            print(f"{'':>12}{key}: " + ", ".join(f"{k} {v:.2f}" for k, v in row[key].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
