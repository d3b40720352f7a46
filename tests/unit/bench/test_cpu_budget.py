"""The CPU accounting of bench.cpu_budget: /proc parsing, process groups and the interpolation between samples."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from bench.cpu_budget import CpuSampler, busy_cpu_s, pipeline_labeller
from xcorrflow.orchestration.fleet import process_cpu_s


def spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_busy_cpu_time_grows_with_work_and_never_faster_than_the_cores() -> None:
    t0, b0 = time.time(), busy_cpu_s()
    spin(0.3)
    t1, b1 = time.time(), busy_cpu_s()
    assert 0.25 <= b1 - b0 <= (t1 - t0) * (os.cpu_count() or 1) + 0.05


def test_busy_between_interpolates_and_clamps_to_the_samples() -> None:
    sampler = CpuSampler()
    for t, machine in ((100.0, 10.0), (101.0, 11.5), (102.0, 13.5)):
        sampler.record(t, machine, {})
    assert sampler.busy_between(100.0, 102.0) == pytest.approx(3.5)
    assert sampler.busy_between(100.5, 101.5) == pytest.approx(0.75 + 1.0)
    assert sampler.busy_between(99.0, 103.0) == pytest.approx(3.5), "outside the samples: the ends"


def test_a_group_seen_late_starts_at_zero_and_a_silent_one_keeps_its_value() -> None:
    sampler = CpuSampler()
    sampler.record(0.0, 1.0, {"a": 0.0})
    sampler.record(1.0, 2.0, {"a": 0.4, "b": 0.2})
    sampler.record(2.0, 3.0, {"b": 0.5})
    assert sampler.series == {"machine": [1.0, 2.0, 3.0], "a": [0.0, 0.4, 0.4], "b": [0.0, 0.2, 0.5]}
    assert sampler.busy_between(0.0, 2.0, "b") == pytest.approx(0.5)


def test_the_sampler_follows_a_labelled_process_while_it_works() -> None:
    me = os.getpid()
    with CpuSampler(interval=0.02, labeller=lambda pid: "me" if pid == me else None) as sampler:
        time.sleep(0.05)
        spin(0.3)
        time.sleep(0.05)
    assert sampler.times == sorted(sampler.times) and sampler.busy == sorted(sampler.busy)
    assert 0.2 <= sampler.series["me"][-1] - sampler.series["me"][0] <= 0.5
    used = process_cpu_s(me)
    assert used is not None and used >= 0.3


def test_the_labeller_names_services_workers_and_the_run() -> None:
    sleeper = [sys.executable, "-c", "import time; time.sleep(30)"]
    procs = {
        "preprocess": subprocess.Popen([*sleeper, "xcorrflow", "-v", "worker", "preprocess", "--nice", "0"]),
        "run": subprocess.Popen([*sleeper, "xcorrflow", "run", "--mode", "streaming"]),
        None: subprocess.Popen([*sleeper, "something", "else"]),
    }
    try:
        label = pipeline_labeller({os.getpid(): "kafka"})
        assert label(os.getpid()) == "kafka"
        assert {expected: label(p.pid) for expected, p in procs.items()} == {e: e for e in procs}
    finally:
        for p in procs.values():
            p.kill()
            p.wait()
    assert process_cpu_s(procs["run"].pid) is None, "a process that is gone"
