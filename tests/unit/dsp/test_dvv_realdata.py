"""Real data: hourly dv/v of the MSNoise 1.6.5 day (YA.UV05, UV06, UV10, 2010-09-01) against the day's stack.

A quiet day on Piton de la Fournaise: each hour's dv/v must stay small and stable, within the error the
method itself reports. The whole chain runs in-process with the default processing (0.05-2 Hz); dv/v is
measured on the coda from max(5 s, distance / 1 km/s) to 40 s on both sides, the reference being the linear
stack of the day's 24 windows. Inter-station distances come from the wheel's ``stations.csv`` (UTM, metres).
The figures are printed (``pytest -s``) and written to ``<tmp>/realdata_dvv.json``.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest

from contracts.settings import Settings
from dsp.dvv import DvvParams, DvvRun, ReferenceSpec, measure_run
from tests.unit.dsp.test_dvv_synthetic import load_ccfs
from tests.unit.xcorrflow.orchestration.test_realdata import WHEEL, fetch_msnoise_data
from xcorrflow.orchestration.inprocess import run_inprocess

PARAMS = DvvParams(
    min_lag_s=5.0,
    start_velocity_km_s=1.0,
    end_lag_s=40.0,
    mwcs_window_s=10.0,
    mwcs_step_s=5.0,
    reference=ReferenceSpec(first_k=24),
)


def utm_distances(wheel: Path, pairs: list[str]) -> dict[str, float]:
    """Distance (km) of each pair from the UTM coordinates in the wheel's ``msnoise/test/extra/stations.csv``."""
    with zipfile.ZipFile(wheel) as zf:
        text = zf.read("msnoise/test/extra/stations.csv").decode()
    xy = {row.split(",")[0]: tuple(map(float, row.split(",")[1:3])) for row in text.split()}

    def net_sta(seed_id: str) -> str:
        return ".".join(seed_id.split(".")[:2])

    out = {}
    for key in pairs:
        a, b = (xy[net_sta(s)] for s in key.split("__"))
        out[key] = math.hypot(a[0] - b[0], a[1] - b[1]) / 1000
    return out


def figures(run: DvvRun, method: str) -> dict[str, float]:
    """Range, median error and 2/3-sigma exceedances of the hourly pair values, and the network's range."""
    rows = [m for m in run.pairs if m.method == method and m.side == "both"]
    good = [m for m in rows if m.ok]
    dvv = np.array([m.dvv_percent for m in good])
    err = np.array([m.err_percent for m in good])
    net = run.series(method, "both")
    return {
        "measured": len(good),
        "of": len(rows),
        "pair_min": float(dvv.min()),
        "pair_max": float(dvv.max()),
        "pair_median_err": float(np.median(err)),
        "beyond_2_sigma": int((np.abs(dvv) > 2 * err).sum()),
        "beyond_3_sigma": int((np.abs(dvv) > 3 * err).sum()),
        "network_min": min(p.dvv_percent for p in net),
        "network_max": max(p.dvv_percent for p in net),
        "network_median_err": float(np.median([p.err_percent for p in net])),
        "network_std": float(np.std([p.dvv_percent for p in net])),
    }


@pytest.mark.slow
def test_hourly_dvv_of_a_quiet_day_is_small_and_within_its_errors(tmp_path: Path) -> None:
    settings = Settings()
    cache = settings.cache_dir / "msnoise"
    data = fetch_msnoise_data(cache)
    run_inprocess(data, tmp_path, settings)
    ccfs, fs = load_ccfs(tmp_path)
    assert len(ccfs) == 24
    pairs = sorted({p for by_pair in ccfs.values() for p in by_pair})
    run = measure_run(ccfs, utm_distances(cache / WHEEL, pairs), fs, PARAMS)
    results = {method: figures(run, method) for method in ("stretching", "mwcs")}
    (tmp_path / "realdata_dvv.json").write_text(json.dumps(results, indent=1))
    for method, r in results.items():
        print(f"\n{method}: {json.dumps({k: round(v, 4) for k, v in r.items()})}")
    for method, r in results.items():
        assert r["measured"] >= 0.9 * r["of"] and r["of"] == 72, method  # 3 pairs x 24 hours
        assert r["pair_min"] > -0.5 and r["pair_max"] < 0.5, method  # small: a few tenths of a percent at most
        assert r["beyond_2_sigma"] <= 0.15 * r["measured"] and r["beyond_3_sigma"] <= 3, method  # errors hold
        assert r["network_std"] <= 2 * r["network_median_err"], method  # stable: scatter as the errors say
