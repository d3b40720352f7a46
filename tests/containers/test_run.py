"""One small ``xcorrflow run`` in streaming mode against the containers: every pair, each at its true lag."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import obspy
import pytest

from contracts.settings import Settings
from dsp.synthetic.stations import SynthConfig, synthesise
from xcorrflow.cli import main

MAXLAG = 2000  # samples at 20 Hz for ±100 s


def test_streaming_run_on_the_containers(stack: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"CC_LEN_S": "600", "STEP_S": "300", "MAXLAG_S": "100"}.items():
        monkeypatch.setenv(f"XCORRFLOW_PROCESSING__{name}", value)
    synthesise(SynthConfig(stations=5, hours=1, rates=(50, 100), seed=3), tmp_path / "in")
    truth = json.loads((tmp_path / "in" / "truth.json").read_text())["pairs"]
    args = [
        "run",
        "--mode",
        "streaming",
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / "out"),
        "--format",
        "both",
    ]
    assert main([*args, "--timeout", "300", "--cleanup"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert (report["mode"], report["pairs"], report["dead_letters"]) == ("streaming", len(truth), [])
    for key, pair in truth.items():
        stacked = obspy.read(str(tmp_path / "out" / f"{key}.sac"))[0].data
        assert int(np.argmax(stacked)) - MAXLAG == pair["lag_samples"], key
