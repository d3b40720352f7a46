"""Shared science fixtures: the reference processing parameters and a small synthetic deployment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import obspy
import pytest

from contracts.params import ProcessingParams
from dsp.preprocess import preprocess_window
from dsp.product import StationProduct
from dsp.synthetic.stations import GapSpec, SynthConfig, synthesise

# the reference configuration: 600 s sub-windows every 300 s, +-100 s
REFERENCE = {"cc_len_s": 600.0, "step_s": 300.0, "maxlag_s": 100.0}


@pytest.fixture(scope="session")
def params() -> ProcessingParams:
    """Reference-configuration processing parameters."""
    return ProcessingParams(**REFERENCE)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 stations, 1 hour, mixed rates (50/100/200 Hz) and one 500 s gap at S002."""
    out = tmp_path_factory.mktemp("synth")
    cfg = SynthConfig(stations=6, hours=1, rates=(50, 100, 200), seed=7, gaps=(GapSpec("S002", 1300, 500),))
    synthesise(cfg, out)
    return out


@pytest.fixture(scope="session")
def truth(synth_dir: Path) -> dict[str, Any]:
    """The synthetic deployment's truth.json."""
    return json.loads((synth_dir / "truth.json").read_text())


@pytest.fixture(scope="session")
def products(synth_dir: Path, truth: dict[str, Any], params: ProcessingParams) -> list[StationProduct]:
    """Products of every station of the synthetic deployment's first window."""
    window = "20240101T000000Z"
    return [
        preprocess_window(obspy.read(str(synth_dir / f"{sid}__{window}.mseed")), window, params, source=sid)
        for sid in sorted(truth["stations"])
    ]
