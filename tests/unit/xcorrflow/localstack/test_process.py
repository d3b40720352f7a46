"""Pid-file process control: stop what was started, and never a recycled pid."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from xcorrflow.localstack import process


def test_spawn_and_stop_a_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "run" / "svc.pid"
    # The child spawns a grandchild; stopping the service must stop both.
    code = "import subprocess, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"
    record = process.spawn([sys.executable, "-c", code], pid_file=pid_file, log_file=tmp_path / "svc.log")
    assert process.is_alive(record)
    assert process.read_pid_file(pid_file) == record
    assert process.stop(pid_file, timeout=10)
    assert not process.is_alive(record)
    assert not pid_file.exists()
    assert not process.stop(pid_file), "stopping twice finds nothing to stop"


def test_stale_record_of_a_recycled_pid_is_not_signalled(tmp_path: Path) -> None:
    """A pid file whose start time does not match belongs to another process: leave that process alone."""
    pid_file = tmp_path / "svc.pid"
    me = process.process_start_ticks(1)
    assert me is not None
    pid_file.write_text(json.dumps({"pid": 1, "start_ticks": me + 12345, "argv0": "x"}))
    assert process.stop(pid_file) is False
    assert process.process_start_ticks(1) == me


def test_wait_until_and_tail(tmp_path: Path) -> None:
    calls = iter([False, False, True])
    assert process.wait_until(lambda: next(calls), timeout=5, interval=0.01)
    assert not process.wait_until(lambda: False, timeout=0.05, interval=0.01)
    log = tmp_path / "x.log"
    log.write_text("\n".join(str(i) for i in range(50)))
    assert process.tail(log, 3) == "47\n48\n49"
