"""Services run their BLAS on one thread (xcorrflow.orchestration.tuning.single_threaded_blas)."""

from __future__ import annotations

import os
import subprocess
import sys

from xcorrflow.orchestration.tuning import BLAS_THREAD_VARS, command_of, single_threaded_blas

# A fresh interpreter: the CLI as a worker would run it (up to --help), then what OpenBLAS started with.
PROBE = """
import os, sys
from xcorrflow.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
import numpy  # loaded by the command already, or now: either way after the CLI had its say
print(os.environ.get("OPENBLAS_NUM_THREADS"), len(os.listdir("/proc/self/task")))
"""


def _probe(*argv: str) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k not in BLAS_THREAD_VARS}
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], env=env, capture_output=True, text=True, check=True)
    value, threads = done.stdout.split()[-2:]
    return value, int(threads)


def test_the_command_is_the_first_positional_argument() -> None:
    assert command_of(["-v", "worker", "correlate", "--threads", "1"]) == "worker"
    assert command_of(["--config", "worker", "run", "--mode", "inprocess"]) == "run", "--config takes a value"
    assert command_of(["-vv"]) is None


def test_services_get_one_blas_thread_unless_the_environment_says_otherwise() -> None:
    env: dict[str, str] = {"MKL_NUM_THREADS": "4"}
    assert single_threaded_blas(["-v", "worker", "preprocess"], env)
    assert env == {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "4"}
    other: dict[str, str] = {}
    assert not single_threaded_blas(["run", "--mode", "inprocess"], other) and other == {}


def test_a_worker_process_loads_openblas_with_one_thread() -> None:
    value, threads = _probe("-v", "worker", "--help")
    assert value == "1", "the CLI must set the variable before numpy loads OpenBLAS"
    assert threads == 1, f"OpenBLAS started {threads - 1} thread(s) of its own in a service"


def test_the_cli_module_does_not_import_numpy() -> None:
    code = "import sys, xcorrflow.cli; print('numpy' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False", "numpy imported before main() could set the BLAS threads"
