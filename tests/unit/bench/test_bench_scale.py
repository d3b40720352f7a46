"""The pure parts of bench.scale: flags, process groups, per-cell medians, ratios, targets, tables, the watchdog."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench.scale.cli import counts, format_support, modes, resolve_format, rotated
from bench.scale.figures import cell, group_core_s, ratios, rss_growth, service_rss
from bench.scale.report import markdown, plot, summarise, targets
from bench.scale.runner import RunSpec, run_args, tree_size
from bench.scale.sampler import GIB, MemoryLimits, PeakTracker, RunSampler, breach, descends_from, worker_role
from bench.scale.stack import StackConfig

HELP_NEW = """
  --format {zarr,sac,both}
                        what the run writes: a .zarr folder, per-pair SAC files or both (default: zarr)
"""


def test_station_counts_are_sorted_and_checked() -> None:
    assert counts("520,130,260,130") == [130, 260, 520]
    for bad in ("", "a,b", "1,130"):
        with pytest.raises(argparse.ArgumentTypeError):
            counts(bad)


def test_modes_keep_their_order_and_refuse_unknown_ones() -> None:
    assert modes("barrier, streaming") == ["barrier", "streaming"]
    with pytest.raises(argparse.ArgumentTypeError):
        modes("streaming,turbo")


def test_each_round_starts_with_the_next_mode() -> None:
    assert [rotated(["s", "b", "i"], r)[0] for r in range(4)] == ["s", "b", "i", "s"]


def test_the_format_flag_is_read_from_the_run_help_and_left_out_when_unknown() -> None:
    assert format_support(HELP_NEW) == (["zarr", "sac", "both"], "zarr")
    assert format_support("usage: xcorrflow run [--mode ...]") == ([], None)
    assert resolve_format(None, HELP_NEW) == (None, "zarr (the run's default)")
    assert resolve_format("both", HELP_NEW) == ("both", "both")
    assert resolve_format("zarr", "no such flag")[0] is None, "an older run never gets a flag it does not know"
    with pytest.raises(SystemExit):
        resolve_format("hdf5", HELP_NEW)


def test_the_format_default_is_read_from_the_option_not_the_wrapped_usage_line() -> None:
    wrapped = "usage: xcorrflow run [--format {zarr,sac,both}] [--no-ccfs]\n" + " " * 21 + "[--workers W]\n" * 30
    assert format_support(wrapped + HELP_NEW) == (["zarr", "sac", "both"], "zarr")


def test_run_args_pass_workers_to_the_pipeline_and_format_only_when_set(tmp_path: Path) -> None:
    pipe = run_args(RunSpec("streaming", tmp_path, tmp_path / "o", p=2, c=1))
    assert pipe[pipe.index("--preprocess-workers") + 1] == "2" and "--format" not in pipe
    assert "--cleanup" not in pipe, "objects are counted before they are deleted"
    inproc = run_args(RunSpec("inprocess", tmp_path, tmp_path / "o", format="sac"))
    assert "--preprocess-workers" not in inproc and inproc[-2:] == ["--format", "sac"]


def test_the_private_stack_replaces_every_variable_that_names_another_stack() -> None:
    env = StackConfig(Path("/h"), 1, 2, 3, 4).env(
        {"XCORRFLOW_KAFKA_BOOTSTRAP": "x:19092", "XCORRFLOW_S3_ENDPOINT": "x:19000", "PATH": "/bin"}
    )
    assert "XCORRFLOW_KAFKA_BOOTSTRAP" not in env and "XCORRFLOW_S3_ENDPOINT" not in env
    assert env["XCORRFLOW_KAFKA_PORT"] == "1" and env["XCORRFLOW_HOME"] == "/h" and env["PATH"] == "/bin"


def test_core_seconds_total_the_followed_groups_but_not_the_machine() -> None:
    out = group_core_s({"run": 1.0, "kafka": 2.0, "preprocess": 3.004, "machine": 10.0})
    assert out["total"] == 6.0 and out["machine"] == 10.0 and out["preprocess"] == 3.0


def test_service_rss_merges_the_runs_worker_names_into_the_sampled_roles() -> None:
    sampled = {"run": 900.0, "schedule": 50.0, "preprocess": 150.0, "kafka": 700.0}
    reported: dict[str, float | None] = {"scheduler": 60.0, "preprocess-0": 140.0, "preprocess-1": 170.0, "x-0": None}
    assert service_rss(sampled, reported) == {"run": 900.0, "schedule": 60.0, "preprocess": 170.0, "kafka": 700.0}


def test_the_watchdog_names_the_limit_that_was_crossed() -> None:
    assert breach(1 * GIB, 2 * GIB, 10 * GIB, 1 * GIB) is None
    assert "memory cap" in (breach(3 * GIB, 2 * GIB, 10 * GIB, 1 * GIB) or "")
    assert "machine memory low" in (breach(1 * GIB, 2 * GIB, GIB // 2, 1 * GIB) or "")


def test_descent_follows_parents_and_stops_at_init() -> None:
    parents = {30: 20, 20: 10, 10: 1, 40: 1}
    assert descends_from(30, 10, parents.get)
    assert not descends_from(40, 10, parents.get)
    assert not descends_from(99, 10, parents.get), "a process that is gone"
    assert worker_role(["python", "-m", "xcorrflow", "-v", "worker", "correlate", "--threads", "1"]) == "correlate"
    assert worker_role(["python", "-m", "xcorrflow", "run"]) is None
    assert worker_role(["python", "-m", "xcorrflow", "worker", "stack", "--nice", "10"]) == "stacker", (
        "the stacker is a group of its own, not to be read as the stack's services"
    )


def test_peaks_use_vmhwm_only_where_it_is_the_process_own() -> None:
    peaks = PeakTracker(own_hwm={1})
    peaks.update(1, rss=100 * 2**20, hwm=300 * 2**20)
    peaks.update(2, rss=100 * 2**20, hwm=900 * 2**20)  # a long-lived service whose HWM predates the run
    peaks.update(2, rss=120 * 2**20, hwm=900 * 2**20)
    assert peaks.by_label({1: "run", 2: "kafka"}) == {"run": 300.0, "kafka": 120.0}


ALLOC = "import time; b = bytearray(80 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep({})"


def test_the_sampler_sees_a_child_peak_and_the_watchdog_stops_it() -> None:
    proc = subprocess.Popen([sys.executable, "-c", ALLOC.format(0.6)])
    with RunSampler(proc.pid, {}, MemoryLimits(cap=8 * GIB, reserve=0), interval=0.02) as sampler:
        proc.wait()
    assert sampler.peak_rss_mb()["run"] >= 80 and sampler.breached is None
    assert sampler.core_s(*sampler.span())["run"] >= 0.0

    proc = subprocess.Popen([sys.executable, "-c", ALLOC.format(30)])
    reasons: list[str] = []
    limits = MemoryLimits(cap=40 * 2**20, reserve=0, on_breach=lambda why: (reasons.append(why), proc.kill()))
    t0 = time.monotonic()
    with RunSampler(proc.pid, {}, limits, interval=0.02):
        proc.wait(20)
    assert time.monotonic() - t0 < 10 and reasons and "memory cap" in reasons[0]


def test_tree_size_counts_regular_files_by_suffix(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.log").write_bytes(b"1234")
    (tmp_path / "y.index").write_bytes(b"12")
    os.symlink(tmp_path / "y.index", tmp_path / "link.log")
    assert tree_size(tmp_path) == (6 + len(os.readlink(tmp_path / "link.log")), 3)
    assert tree_size(tmp_path / "a", suffix=".log") == (4, 1)
    assert tree_size(tmp_path / "missing") == (0, 0)


def record(n: int, mode: str, rnd: int, makespan: float, total: float, rss: float, **extra: Any) -> dict[str, Any]:
    pairs = n * (n - 1) // 2
    return {
        "n": n,
        "mode": mode,
        "round": rnd,
        "status": "ok",
        "makespan_s": makespan,
        "first_result_s": 1.0,
        "pairs": pairs,
        "pairs_per_s": round(pairs / makespan, 1),
        "core_s": {"run": total / 2, "kafka": total / 2, "total": total, "machine": total + 1},
        "peak_rss_mb": {"run": rss, "kafka": 500.0},
        "bytes": {"s3": 1e9, "out": 2e6},
    } | extra


def science(n: int, rnd: int, core: float) -> dict[str, Any]:
    return {"n": n, "round": rnd, "status": "ok", "core_s": core, "preprocess_core_s": core / 2,
            "kernel_core_s": core / 2, "wall_s": core}  # fmt: skip


RECORDS = [
    record(260, "streaming", 0, 50.0, 100.0, 1000.0),
    record(260, "barrier", 0, 60.0, 90.0, 1000.0),
    record(260, "streaming", 1, 40.0, 80.0, 1100.0),
    record(260, "barrier", 1, 40.0, 80.0, 900.0),
    record(520, "streaming", 0, 100.0, 300.0, 1500.0),
    record(520, "barrier", 0, 200.0, 300.0, 3000.0),
    {"n": 520, "mode": "inprocess", "round": 0, "status": "failed", "reason": "memory cap: 16 GiB"},
]
SCIENCE = [science(260, 0, 10.0), science(260, 1, 20.0), science(520, 0, 100.0)]


def test_a_cell_takes_medians_of_its_successful_rounds_and_the_largest_peak() -> None:
    c = cell([r for r in RECORDS if r["n"] == 260 and r["mode"] == "streaming"])
    assert c["status"] == "ok" and c["makespan_s"] == 45.0 and c["core_s"]["total"] == 90.0
    assert c["peak_rss_mb"]["run"] == 1100.0
    failed = cell([RECORDS[-1]])
    assert failed["status"] == "failed" and failed["reasons"] == ["memory cap: 16 GiB"] and "makespan_s" not in failed
    mixed = cell([RECORDS[0], {**RECORDS[2], "status": "failed", "reason": "boom"}])
    assert mixed["status"] == "partly failed" and mixed["makespan_s"] == 50.0


def test_ratios_pair_each_round_with_itself() -> None:
    r = ratios(RECORDS, SCIENCE)
    assert r["streaming_over_barrier"] == {260: pytest.approx((50 / 60 + 40 / 40) / 2, abs=1e-3), 520: 0.5}
    assert r["core_over_science"][260]["streaming"] == pytest.approx((100 / 10 + 80 / 20) / 2, abs=1e-3)
    assert r["core_over_science"][520] == {"streaming": 3.0, "barrier": 3.0}
    assert 520 not in r["streaming_over_inprocess"], "the failed inprocess run has no ratio"
    growth = rss_growth(summarise(RECORDS, SCIENCE, CONFIG)["cells"])
    assert growth["from"] == 260 and growth["by_mode"]["barrier"] == {"run": 3.0, "kafka": 1.0}


CONFIG = {"cpus": 2, "rate_hz": 100, "rounds": 2, "P": 1, "C": 1, "format": "sac", "cap_gib": 16.0}


def test_targets_are_judged_at_n_520() -> None:
    summary = summarise(RECORDS, SCIENCE, CONFIG)
    met = {t["target"]: t["met"] for t in summary["targets"]}
    assert met == {
        "N = 520 completes in all three modes": False,
        "streaming ≥ 5,000 pairs/s at N = 520": False,
        "every service ≤ 2 GiB at N = 520": False,
        "every service within 1.3× between N = 260 and N = 520": False,
        "all processes ≤ 2× the science's core-seconds at N = 520": False,
    }
    fast = [record(520, m, 0, 10.0, 150.0, 1000.0) for m in ("streaming", "barrier", "inprocess")]
    low = [record(260, m, 0, 5.0, 50.0, 900.0) for m in ("streaming", "barrier", "inprocess")]
    summary = summarise(low + fast, [science(260, 0, 30.0), science(520, 0, 100.0)], CONFIG)
    assert all(t["met"] for t in summary["targets"]), summary["targets"]
    assert summary["science"][520]["ceiling_pairs_per_s"] == pytest.approx(134940 / 50, abs=0.1)


def test_targets_name_the_largest_n_when_520_was_not_run() -> None:
    table = summarise(RECORDS[:4], SCIENCE[:2], CONFIG)["cells"]
    texts = [t["target"] for t in targets(table, ratios(RECORDS[:4], SCIENCE[:2]))]
    assert texts[0] == "N = 260 completes in all three modes" and len(texts) == 4, "no growth with one N"


def test_the_markdown_has_a_row_per_run_cell_and_says_why_one_failed(tmp_path: Path) -> None:
    summary = summarise(RECORDS, SCIENCE, CONFIG)
    text = markdown(summary)
    assert "| 520 | 134,940 | inprocess | failed: memory cap: 16 GiB |" in text
    assert "| 520 | 134,940 | streaming | ok | 100.0 | 1.00 | 1,349 | 300.0 (3.0×) | 1,500 (run) |" in text
    assert "1.00 GB / – / 2.0 MB" in text
    assert "| 520 | science bound | preprocess 50.0 + kernel 50.0 |" in text
    assert "streaming/barrier makespan 0.5" in text and "**not met**" in text
    plot(summary, tmp_path / "scale.png")
    assert (tmp_path / "scale.png").read_bytes()[:4] == b"\x89PNG"


def moved(n: int, rnd: int, core: float, put: float, get: float) -> dict[str, Any]:
    """A science record with its transport floor: ``put`` and ``get`` core-s split 1:3 client:server."""
    return science(n, rnd, core) | {
        "transport_status": "ok", "transport_bytes": 4.85e9, "transport_core_s": put + get,
        "transport_put_client_core_s": put / 4, "transport_put_server_core_s": 3 * put / 4,
        "transport_get_client_core_s": get / 4, "transport_get_server_core_s": 3 * get / 4,
    }  # fmt: skip


def test_the_transport_floor_adds_to_each_rounds_science_and_gives_its_own_ceiling(tmp_path: Path) -> None:
    rounds = [moved(520, 0, 100.0, 20.0, 8.0), moved(520, 1, 40.0, 40.0, 12.0), science(520, 2, 70.0)]
    summary = summarise(RECORDS, [*SCIENCE[:2], *rounds], CONFIG)
    sci = summary["science"][520]
    assert sci["core_s"] == 70.0  # every round's science; the floor only where the round measured one
    assert sci["floor_core_s"] == pytest.approx((128 + 92) / 2)  # per round, then the median: not 70 + 40
    assert sci["transport_core_s"] == pytest.approx(40.0)
    assert sci["floor_ceiling_pairs_per_s"] == pytest.approx(134940 / (110 / 2), abs=0.1)
    assert "floor_core_s" not in summary["science"][260]
    text = markdown(summary)
    assert "| 520 | transport floor | science + CCFs to S3 and back (4.85 GB): put 7.5 + server 22.5, get" in text
    assert "transport-floor ceiling 2,454 pairs/s" in text
    plot(summary, tmp_path / "scale.png")


def test_a_probe_emits_one_json_line_to_a_file_or_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench.scale.figures import emit

    emit({"core_s": 1.5, "put": [1.0, 2.0]}, tmp_path / "f.json")
    emit({"core_s": 2.5}, None)
    assert (tmp_path / "f.json").read_text() == '{"core_s": 1.5, "put": [1.0, 2.0]}\n'
    assert capsys.readouterr().out == '{"core_s": 2.5}\n'
