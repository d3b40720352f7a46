"""The CPU accounting of bench.cpu_budget: /proc/stat parsing and the interpolation between samples."""

from __future__ import annotations

import os
import time

import pytest

from bench.cpu_budget import CpuSampler, busy_cpu_s


def test_busy_cpu_time_grows_with_work_and_never_faster_than_the_cores() -> None:
    t0, b0 = time.time(), busy_cpu_s()
    end = time.process_time() + 0.3
    while time.process_time() < end:  # keep one core busy
        pass
    t1, b1 = time.time(), busy_cpu_s()
    assert 0.25 <= b1 - b0 <= (t1 - t0) * (os.cpu_count() or 1) + 0.05


def test_busy_between_interpolates_and_clamps_to_the_samples() -> None:
    sampler = CpuSampler()
    sampler.times, sampler.busy = [100.0, 101.0, 102.0], [10.0, 11.5, 13.5]
    assert sampler.busy_between(100.0, 102.0) == pytest.approx(3.5)
    assert sampler.busy_between(100.5, 101.5) == pytest.approx(0.75 + 1.0)
    assert sampler.busy_between(99.0, 103.0) == pytest.approx(3.5), "outside the samples: the ends"


def test_the_sampler_records_while_running() -> None:
    with CpuSampler(interval=0.01) as sampler:
        time.sleep(0.1)
    assert len(sampler.times) >= 3 and sampler.times == sorted(sampler.times)
    assert sampler.busy == sorted(sampler.busy)
