"""``python -m bench.cpu_budget``: how busy the machine's cores are during each phase of a run, and who uses them.

The overlap bound max(T_prep, T_xcorr) / (T_prep + T_xcorr) assumes each phase leaves the resources of the other
idle. On a 2-core machine that holds only if a barrier run leaves cores idle, and this benchmark shows whether
it does. It runs each mode once on ``bench.pipeline``'s deployment while a sampler reads the machine's CPU
counters (``/proc/stat``) every 0.1 s, and reports:

- ``busy``: the fraction of all cores in use (by any process) over the makespan, and over phase 1 (ingest start
  → last FileReady) and phase 2 (→ last stack) of the run;
- ``cpu_bound_s``: the busy core-seconds of the makespan over the core count, the shortest makespan that this
  much work allows. Overlapping phases cannot go below it; only less work can;
- ``cpu_s``: each process's share, from the ``xcorrflow run`` process, each worker's report and the stack's own
  Kafka, S3 server and Prometheus (``/proc/<pid>/stat`` before and after). These include the work before the
  clock starts (worker start-up) and after it stops (clean-up), so they add up to more than the busy
  core-seconds.

Writes ``bench/results/cpu_budget.json``. It needs the local stack (``make up``) and Linux ``/proc``.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from bench.pipeline import RESULTS, run_once, synth
from contracts.settings import Settings
from xcorrflow.stack.process import is_alive, read_pid_file
from xcorrflow.stack.service import StackPaths

SERVICES = ("kafka", "s3", "prometheus")
TICK = os.sysconf("SC_CLK_TCK")


class CpuSampler:
    """Samples the machine's busy CPU time (all cores, all processes) in a background thread."""

    def __init__(self, interval: float = 0.1) -> None:
        self.times: list[float] = []
        self.busy: list[float] = []
        self._interval, self._stop = interval, threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cpu-sampler", daemon=True)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.times.append(time.time())
            self.busy.append(busy_cpu_s())
            self._stop.wait(self._interval)

    def busy_between(self, start: float, end: float) -> float:
        """Busy core-seconds between two Unix times (interpolated between samples)."""
        return self._at(end) - self._at(start)

    def _at(self, t: float) -> float:
        i = bisect.bisect_left(self.times, t)
        if i <= 0:
            return self.busy[0]
        if i >= len(self.times):
            return self.busy[-1]
        t0, t1, b0, b1 = self.times[i - 1], self.times[i], self.busy[i - 1], self.busy[i]
        return b0 + (b1 - b0) * (t - t0) / (t1 - t0)


def busy_cpu_s() -> float:
    """CPU seconds the machine has spent busy since boot, over all cores (``/proc/stat``: all but idle, iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / TICK


def service_cpu_s(paths: StackPaths) -> dict[str, float]:
    """CPU seconds (user + system) each running stack service has used since it started."""
    found = {}
    for name in SERVICES:
        record = read_pid_file(paths.pid_file(name))
        if record is None or not is_alive(record):
            continue
        # /proc/<pid>/stat: the command may hold spaces, so split after its closing parenthesis
        fields = Path(f"/proc/{record.pid}/stat").read_text().rsplit(")", 1)[1].split()
        found[name] = sum(int(v) for v in fields[11:15]) / TICK
    return found


def budget(mode: str, data: Path, out: Path, paths: StackPaths, cores: int) -> dict[str, Any]:
    """Run ``mode`` once and account its CPU."""
    before = service_cpu_s(paths)
    with CpuSampler() as sampler:
        report = run_once(mode, data, out)
    after = service_cpu_s(paths)
    start, makespan = report["started_at"], report["makespan_s"]
    phase1 = report["timings_s"].get("last_ready") or report["timings_s"].get("preprocess") or 0.0
    busy = sampler.busy_between(start, start + makespan)
    # The run process waits for the workers it started, so its rusage already holds theirs; each worker's own
    # figure (read from /proc just before it stops) splits that total.
    workers = {k: v for k, v in (report.get("outputs", {}).get("cpu_s") or {}).items() if v is not None}
    cpu = {"run": round(max(0.0, report["run_process"]["cpu_s"] - sum(workers.values())), 2), **workers}
    cpu.update({name: round(after[name] - before[name], 2) for name in after if name in before})
    row: dict[str, Any] = {
        "mode": mode,
        "makespan_s": makespan,
        "busy": round(busy / (cores * makespan), 3),
        "busy_core_s": round(busy, 2),
        "cpu_bound_s": round(busy / cores, 2),
        "cpu_s": cpu,
    }
    if 0 < phase1 < makespan:
        row["phase1_s"] = round(phase1, 3)
        row["busy_phase1"] = round(sampler.busy_between(start, start + phase1) / (cores * phase1), 3)
        row["busy_phase2"] = round(
            sampler.busy_between(start + phase1, start + makespan) / (cores * (makespan - phase1)), 3
        )
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
        shares = ", ".join(f"{k} {v:.1f}" for k, v in sorted(row["cpu_s"].items(), key=lambda kv: -kv[1]))
        print(
            f"{row['mode']:>10}: makespan {row['makespan_s']:.1f} s, cores busy {row['busy']:.0%}{phases}; "
            f"CPU-bound makespan {row['cpu_bound_s']:.1f} s. CPU s: {shares}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
