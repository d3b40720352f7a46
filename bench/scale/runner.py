"""One measured run of ``bench.scale``: an ``xcorrflow run`` (or the science bound) in its own process.

The process gets its own session, so the whole tree (the run and its workers) can be stopped with one signal
when the watchdog fires, the run overruns or the benchmark is interrupted. A run that fails, does not fit or
overruns is recorded with its reason and never stops the benchmark.

The cap is on resident memory, not on address space: ``RLIMIT_AS`` would fail runs that fit. The old run
process grows its stack bank by doubling a zeroed float64 array (15.6 GiB of address space at N = 520)
whose untouched pages never become resident; with ``RLIMIT_AS`` at 20 GiB, N = 520 streaming died in that
allocation at 11 GiB resident.

After a pipeline run, the bytes it wrote are counted before anything is deleted: the objects under its
namespace in the bucket (listed through the S3 API, so any S3 server counts), its topics' log segments in
Kafka's data directory (a native stack only), and OUT; the part of S3 and of OUT that is ``results.zarr`` (per-window
CCFs and stacks) is also counted on its own. Then its objects, topics and OUT are deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.scale.figures import group_core_s
from bench.scale.sampler import GIB, MemoryLimits, RunSampler, mem_available
from bench.scale.stack import Stack

MANIFEST = ".xcorrflow-run.json"
ZARR = "results.zarr"  # the run's result store: OUT/results.zarr, and <run id>/results.zarr in the bucket
REPO = Path(__file__).resolve().parents[2]
SINGLE_THREADED = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass(frozen=True)
class Limits:
    """How much a run may take: memory of its processes, memory the machine keeps, and time."""

    cap_gib: float = 16.0
    reserve_gib: float = 2.0
    timeout_s: float = 1800.0

    def cap_now(self) -> int:
        """The cap for a run starting now: the flag, or less when the machine has less to give (bytes)."""
        return int(min(self.cap_gib * GIB, mem_available() - self.reserve_gib * GIB))


@dataclass(frozen=True)
class RunSpec:
    """What to run."""

    mode: str
    data: Path
    out: Path
    p: int = 1
    c: int = 1
    format: str | None = None  # passed as --format only when set (and the run knows the flag)


def run_args(spec: RunSpec) -> list[str]:
    """The ``xcorrflow run`` command line of a spec (no --cleanup: the bytes are counted first)."""
    args = [sys.executable, "-m", "xcorrflow", "run", "--mode", spec.mode]
    args += ["--input", str(spec.data), "--output", str(spec.out)]
    if spec.mode != "inprocess":
        args += ["--preprocess-workers", str(spec.p), "--correlate-workers", str(spec.c), "--timeout", "3600"]
    if spec.format:
        args += ["--format", spec.format]
    return args


def measured(
    args: list[str], env: dict[str, str], stack: Stack | None, limits: Limits, log: Path, label: str = "run"
) -> dict[str, Any]:
    """Run ``args`` in its own session under the watchdog; returns status, reason and the sampler's figures."""
    cap = limits.cap_now()
    log.parent.mkdir(parents=True, exist_ok=True)
    if cap <= 0:
        return {"status": "skipped", "reason": f"machine memory low: {mem_available() / GIB:.1f} GiB available"}
    t0 = time.time()
    with open(log, "wb") as err:
        proc = subprocess.Popen(args, env=env, stdout=err, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(_reason: str) -> None:
        _kill_group(proc.pid)

    services = stack.service_pids() if stack is not None else {}
    with RunSampler(proc.pid, services, MemoryLimits(cap, int(limits.reserve_gib * GIB), stop), root_label=label) as s:
        try:
            code = proc.wait(limits.timeout_s)
            overran = False
        except subprocess.TimeoutExpired:
            overran = True
            _kill_group(proc.pid)
            code = proc.wait()
        except BaseException:  # interrupted: the run must not outlive the benchmark
            _kill_group(proc.pid)
            raise
    return {
        "returncode": code,
        "status": "ok" if code == 0 and not s.breached and not overran else "failed",
        "reason": s.breached or (f"overran the limit of {limits.timeout_s:.0f} s" if overran else None),
        "limit_gib": round(cap / GIB, 1),
        "process_s": round(time.time() - t0, 2),
        "sampler": s,
    }


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def run_pipeline_once(spec: RunSpec, env: dict[str, str], stack: Stack | None, limits: Limits) -> dict[str, Any]:
    """One ``xcorrflow run``, measured; returns the run's figures (see :mod:`bench.scale.figures`)."""
    shutil.rmtree(spec.out, ignore_errors=True)
    log = spec.out.with_name(f"{spec.out.name}.log")
    done = measured(run_args(spec), env, stack, limits, log)
    record: dict[str, Any] = {k: v for k, v in done.items() if k != "sampler"}
    report = _report(spec.out)
    if report is not None:
        record.update(_from_report(report))
        if record["status"] == "ok" and not report.get("complete", True):
            record["status"], record["reason"] = "failed", report.get("reason")
    if record["status"] != "ok":
        record["log_tail"] = _tail(log)
        record["reason"] = record.get("reason") or record["log_tail"].splitlines()[-1]
    sampler = done.get("sampler")
    if sampler is not None:
        start = report.get("started_at") if report else None
        record.update(_resources(sampler, start, record.get("makespan_s")))
    record["bytes"] = written(spec.out, record.get("run_id") or _manifest_run_id(spec.out), stack)
    shutil.rmtree(spec.out, ignore_errors=True)
    if record["status"] == "ok":
        log.unlink(missing_ok=True)  # a failed run's log stays beside OUT, for its reason
    return record


def run_science(data: Path, env: dict[str, str], limits: Limits, work: Path) -> dict[str, Any]:
    """The science bound of ``data`` in its own process (single-threaded BLAS: the least work), under the watchdog."""
    out = work / "science.json"
    args = [sys.executable, "-m", "bench.scale.science", "--input", str(data), "--output", str(out)]
    env = {**env, **SINGLE_THREADED, "PYTHONPATH": str(REPO)}
    done = measured(args, env, None, limits, work / "science.log", label="science")
    record: dict[str, Any] = {k: v for k, v in done.items() if k not in ("sampler", "returncode")}
    if done["status"] == "ok" and out.exists():
        record.update(json.loads(out.read_text()))
        record["peak_rss_mb"] = done["sampler"].peak_rss_mb().get("science")
    elif not record.get("reason"):
        record["status"], record["reason"] = "failed", _tail(work / "science.log").splitlines()[-1]
    out.unlink(missing_ok=True)
    return record


def run_transport(stations: int, env: dict[str, str], stack: Stack, limits: Limits, work: Path) -> dict[str, Any]:
    """The transport floor of N stations (:mod:`bench.scale.transport`) on the benchmark's stack: core-seconds of
    the client and of the S3 server over its put and over its get, flat keys ``transport_*``."""
    out = work / "transport.json"
    args = [sys.executable, "-m", "bench.scale.transport", "--stations", str(stations), "--output", str(out)]
    env = {**env, **SINGLE_THREADED, "PYTHONPATH": str(REPO)}
    done = measured(args, env, stack, limits, work / "transport.log", label="transport")
    if done["status"] != "ok" or not out.exists():
        reason = done.get("reason") or _tail(work / "transport.log").splitlines()[-1]
        return {"transport_status": "failed", "transport_reason": reason}
    figures = json.loads(out.read_text())
    out.unlink(missing_ok=True)
    record: dict[str, Any] = {"transport_status": "ok", "transport_bytes": figures["bytes"]}
    for phase in ("put", "get"):
        core = done["sampler"].core_s(*figures[phase])
        record[f"transport_{phase}_client_core_s"] = core.get("transport", 0.0)
        record[f"transport_{phase}_server_core_s"] = core.get("s3", 0.0)
        record[f"transport_{phase}_wall_s"] = round(figures[phase][1] - figures[phase][0], 2)
    record["transport_core_s"] = round(
        sum(record[f"transport_{p}_{side}_core_s"] for p in ("put", "get") for side in ("client", "server")), 2
    )
    return record


def _report(out: Path) -> dict[str, Any] | None:
    try:
        report: dict[str, Any] = json.loads((out / "report.json").read_text())
    except (OSError, ValueError):
        return None
    return report


def _manifest_run_id(out: Path) -> str | None:
    """The run id of a run that left no report (killed): its manifest names it."""
    try:
        run_id = json.loads((out / MANIFEST).read_text()).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None
    return run_id if isinstance(run_id, str) else None


def _from_report(report: dict[str, Any]) -> dict[str, Any]:
    """The figures the report holds."""
    outputs = report.get("outputs") or {}
    makespan = report.get("makespan_s") or 0.0
    pairs = report.get("pairs") or 0
    return {
        "makespan_s": makespan,
        "first_result_s": report.get("first_result_s"),
        "pairs": pairs,
        "pairs_per_s": round(pairs / makespan, 1) if makespan else None,
        "stations": report.get("stations"),
        "run_id": outputs.get("run_id"),
        "worker_peak_rss_mb": outputs.get("peak_rss_mb") or {},
        "worker_cpu_s": outputs.get("cpu_s") or {},
        "timings_s": {k: v for k, v in (report.get("timings_s") or {}).items() if k in ("setup", "last_ready")},
    }


def _resources(sampler: RunSampler, start: float | None, makespan: float | None) -> dict[str, Any]:
    """Core-seconds by group over the makespan (and over the process's life), peak RSS by service."""
    first, last = sampler.span()
    window = (start, start + makespan) if start and makespan else (first, last)
    return {
        "core_s": group_core_s(sampler.core_s(*window)),
        "core_s_lifetime": group_core_s(sampler.core_s(first, last)),
        "peak_rss_mb": sampler.peak_rss_mb(),
        "tree_peak_rss_mb": round(sampler.tree_peak / 2**20, 1),
    }


def written(out: Path, run_id: str | None, stack: Stack | None) -> dict[str, Any]:
    """Bytes a run wrote: OUT, its objects in the bucket, its Kafka topics; then its objects and topics go."""
    sizes = tree_size(out)
    found: dict[str, Any] = {"out": sizes[0], "out_files": sizes[1], "out_zarr": tree_size(out / ZARR)[0]}
    if not run_id:
        return found
    from contracts.settings import Settings
    from storage import open_store
    from xcorrflow.orchestration.runs import delete_run

    settings = Settings()
    store = open_store(settings)
    objects = [info for prefix in (f"{run_id}/", f"runs/{run_id}/") for info in store.list(prefix)]
    found.update({"s3": sum(info.size for info in objects), "s3_objects": len(objects),
                  "s3_zarr": sum(info.size for info in objects if f"/{ZARR}/" in f"/{info.key}")})  # fmt: skip
    if stack is not None and stack.kafka_data().is_dir():
        found["kafka"] = sum(
            tree_size(d, suffix=".log")[0] for d in stack.kafka_data().iterdir() if d.name.startswith(f"{run_id}.")
        )
    delete_run(settings, store, run_id)
    return found


def tree_size(root: Path, suffix: str = "") -> tuple[int, int]:
    """(bytes, files) of the regular files under ``root`` whose names end in ``suffix`` (no symlink followed)."""
    total = files = 0
    for folder, _dirs, names in os.walk(root):
        for name in names:
            if name.endswith(suffix):
                try:
                    st = os.lstat(os.path.join(folder, name))
                except OSError:
                    continue
                total, files = total + st.st_size, files + 1
    return total, files


def _tail(log: Path, chars: int = 1500) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "no output"
    return text.strip()[-chars:] or "no output"
