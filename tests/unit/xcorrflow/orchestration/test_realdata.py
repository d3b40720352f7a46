"""Real data: a day (2010-09-01) of YA.UV05, YA.UV06, YA.UV10 HHZ at 100 Hz from the msnoise 1.6.5 wheel.

The wheel is fetched once with ``pip download msnoise==1.6.5 --no-deps`` into the cache
(``<settings.cache_dir>/msnoise``) and only its data files are extracted. The whole chain runs in-process with
the default (DESIGN.md §6) parameters over the 24 hourly windows; each stacked CCF must stand clearly above
the noise: peak / RMS of lags beyond 60 s > 10. The peak lags and SNRs are printed (``pytest -s``) and written
to ``<out>/realdata.json``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import obspy
import pytest

from contracts.settings import Settings
from xcorrflow.orchestration.inprocess import run_inprocess

WHEEL = "msnoise-1.6.5-py3-none-any.whl"
DATA_PREFIX = "msnoise/test/data/2010/"
NOISE_LAG_S = 60.0
MIN_SNR = 10.0


def fetch_msnoise_data(cache: Path) -> Path:
    """Download the wheel (once) and extract its MiniSEED day files; skip the test when impossible."""
    wheel, data = cache / WHEEL, cache / "data"
    if not wheel.exists():
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "msnoise==1.6.5", "--no-deps", "-d", str(cache), "-q"]
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=600)
        except (subprocess.SubprocessError, OSError) as exc:
            pytest.skip(f"cannot fetch the msnoise 1.6.5 wheel from the package index: {exc}")
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            target = data / Path(name).name
            if name.startswith(DATA_PREFIX) and not name.endswith("/") and not target.exists():
                data.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(name))
    if len(list(data.glob("YA.*"))) != 3:
        pytest.skip(f"the wheel in {cache} does not hold the three expected day files")
    return data


def snr(ccf: np.ndarray, fs: float) -> tuple[float, float]:
    """Lag (s) of the largest |CCF| sample and its ratio to the RMS of lags beyond 60 s."""
    maxlag = (ccf.size - 1) // 2
    lags = np.arange(-maxlag, maxlag + 1) / fs
    peak = int(np.argmax(np.abs(ccf)))
    noise = np.sqrt(np.mean(ccf[np.abs(lags) > NOISE_LAG_S] ** 2))
    return float(lags[peak]), float(np.abs(ccf[peak]) / noise)


@pytest.mark.slow
def test_real_day_of_three_stations(tmp_path: Path) -> None:
    settings = Settings()
    data = fetch_msnoise_data(settings.cache_dir / "msnoise")
    report = run_inprocess(data, tmp_path, settings, keep_ccfs=False, formats=("sac",))
    assert (report.stations, report.windows, report.pairs, report.dead_letters) == (3, 24, 3, [])
    results = {}
    for sac in sorted(tmp_path.glob("*.sac")):
        tr = obspy.read(str(sac))[0]
        lag, ratio = snr(tr.data, 1 / tr.stats.delta)
        results[sac.stem] = {"peak_lag_s": lag, "snr": round(ratio, 2), "windows": int(tr.stats.sac.user0)}
        print(f"{sac.stem}: peak at {lag:+.2f} s, SNR {ratio:.1f} over {results[sac.stem]['windows']} windows")
    (tmp_path / "realdata.json").write_text(json.dumps(results, indent=1))
    assert len(results) == 3
    for key, r in results.items():
        assert r["snr"] > MIN_SNR, f"{key}: {r}"
        assert r["windows"] == 24
