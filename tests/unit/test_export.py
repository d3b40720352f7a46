"""Export from a store (MemoryStore) to SAC: stacks equal the per-window mean, headers carry the lag axis and the
coordinates read from the products, per-window CCFs and the stacker's stacks/ are exported as they are."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from obspy.geodetics import gps2dist_azimuth
from obspy.io.sac import SACTrace

from consumers.stackstate import StackerState
from dsp.ccf import encode_ccfs
from dsp.correlate import CcfBatch
from dsp.params import ProcessingParams
from dsp.product import Coordinates, StationProduct, encode_product
from dsp.seed import pair_key
from dsp.stack import stack_pws
from storage import MemoryStore
from xcorrflow.cli import main
from xcorrflow.export import (
    export_ccfs,
    export_from_stacks,
    export_stacks,
    station_coordinates,
)
from xcorrflow.sac import ccf_sac_bytes

NS = "demo/"
PARAMS = ProcessingParams(maxlag_s=5.0)  # 201 lags at 20 Hz keep the test small
STATIONS = [f"XS.S{i}..HHZ" for i in range(4)]
COORDS = {s: Coordinates(45.0 + 0.05 * i, 7.0 + 0.1 * i, 5.0 * i) for i, s in enumerate(STATIONS)}
WINDOWS = ["20240101T000000Z", "20240101T010000Z", "20240101T020000Z"]
# S3 misses the last window; S2 has no coordinates in its product.
PRESENT = {w: STATIONS if w != WINDOWS[2] else STATIONS[:3] for w in WINDOWS}


def _product(seed_id: str, window: str, coords: Coordinates | None) -> bytes:
    return encode_product(
        StationProduct(
            seed_id=seed_id, window=window, fs=PARAMS.target_fs, nfft=64, k0=1, cc_len=32, step=16,
            spectra=np.zeros((1, 4), np.complex64), valid=np.ones(1, bool), gap_fraction=np.zeros(1, np.float32),
            coordinates=coords,
        )
    )  # fmt: skip


@pytest.fixture
def store() -> tuple[MemoryStore, dict[tuple[str, str], np.ndarray]]:
    """CCF row objects (as the correlators write them) and products of three windows under ``demo/``."""
    store, truth = MemoryStore(), {}
    rng = np.random.default_rng(7)
    for w in WINDOWS:
        stations = PRESENT[w]
        for s in stations:
            coords = None if s == STATIONS[2] else COORDS[s]
            store.put(f"{NS}prep/{w}/{s}.npz", _product(s, w, coords))
        for i, row in enumerate(stations[:-1]):
            pairs = tuple((row, c) for c in stations[i + 1 :])
            ccfs = rng.standard_normal((len(pairs), 2 * PARAMS.maxlag + 1)).astype(np.float32)
            digest = hashlib.sha1(row.encode()).hexdigest()[:12]
            batch = CcfBatch(w, PARAMS.target_fs, PARAMS.maxlag, pairs, ccfs, np.full(len(pairs), 5))
            store.put(f"{NS}ccf/{w}/{row}.r{digest}.npz", encode_ccfs(batch))
            truth.update({(w, pair_key(a, b)): c for (a, b), c in zip(pairs, ccfs, strict=True)})
    store.put("other/ccf/20240101T000000Z/XS.S0..HHZ.rffffffffffff.npz", b"another namespace, never read")
    return store, truth


def _windows_of(truth: dict[tuple[str, str], np.ndarray], pair: str) -> list[str]:
    return [w for w in WINDOWS if (w, pair) in truth]


def test_stacks_are_the_mean_over_windows_with_the_lag_axis_and_coordinates(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    objects, truth = store
    result = export_stacks(objects, NS, tmp_path, PARAMS)
    assert result.pairs == 6 and result.windows == 3
    for a, b in [(a, b) for i, a in enumerate(STATIONS) for b in STATIONS[i + 1 :]]:
        pair = pair_key(a, b)
        windows = _windows_of(truth, pair)
        sac = SACTrace.read(str(tmp_path / f"{pair}.sac"))
        mean = np.mean([truth[(w, pair)].astype(np.float64) for w in windows], axis=0)
        np.testing.assert_allclose(sac.data, mean, rtol=1e-5, atol=1e-6)
        assert int(sac.user0) == len(windows) and sac.kinst == "linear"
        assert sac.npts == 2 * PARAMS.maxlag + 1
        assert sac.b == pytest.approx(-PARAMS.maxlag_s) and sac.delta == pytest.approx(1 / PARAMS.target_fs)
        assert sac.e == pytest.approx(PARAMS.maxlag_s, abs=1e-4)
        if STATIONS[2] in (a, b):
            assert sac.dist is None, "no coordinates in S2's product: no distance"
        else:
            assert (sac.evla, sac.evlo) == pytest.approx((COORDS[a].latitude, COORDS[a].longitude))
            assert (sac.stla, sac.stlo) == pytest.approx((COORDS[b].latitude, COORDS[b].longitude))
            dist_m, _, _ = gps2dist_azimuth(
                COORDS[a].latitude, COORDS[a].longitude, COORDS[b].latitude, COORDS[b].longitude
            )
            assert sac.dist == pytest.approx(dist_m / 1000, rel=1e-5)


def test_stacks_of_some_windows_only(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    objects, truth = store
    result = export_stacks(objects, NS, tmp_path, PARAMS, windows=[WINDOWS[1]])
    pair = pair_key(STATIONS[0], STATIONS[1])
    assert result.windows == 1 and result.pairs == 6
    np.testing.assert_allclose(SACTrace.read(str(tmp_path / f"{pair}.sac")).data, truth[(WINDOWS[1], pair)], rtol=1e-6)


def test_phase_weighted_stacks(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    objects, truth = store
    params = PARAMS.model_copy(update={"stack": "pws", "pws_power": 2.0})
    export_stacks(objects, NS, tmp_path, params)
    pair = pair_key(STATIONS[0], STATIONS[1])
    sac = SACTrace.read(str(tmp_path / f"{pair}.sac"))
    expected = stack_pws(np.array([truth[(w, pair)] for w in WINDOWS], dtype=np.float64), 2.0)
    assert sac.kinst == "pws"
    np.testing.assert_allclose(sac.data, expected, rtol=1e-4, atol=1e-6)


def test_per_window_ccfs(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    objects, truth = store
    result = export_ccfs(objects, NS, tmp_path)
    assert len(result.files) == len(truth) == 6 + 6 + 3 and result.windows == 3 and result.pairs == 6
    for (w, pair), ccf in truth.items():
        sac = SACTrace.read(str(tmp_path / "ccf" / w / f"{pair}.sac"))
        np.testing.assert_array_equal(sac.data, ccf)
        assert sac.kinst == "ccf" and int(sac.user0) == 1 and sac.b == pytest.approx(-PARAMS.maxlag_s)


def test_station_coordinates_reads_one_product_per_station(store) -> None:  # type: ignore[no-untyped-def]
    objects, _ = store
    found = station_coordinates(objects, NS)
    assert found == {s: (None if s == STATIONS[2] else COORDS[s]) for s in STATIONS}
    assert station_coordinates(objects, NS, ["XS.S9..HHZ"]) == {"XS.S9..HHZ": None}


def test_export_from_the_stacker_copies_its_sacs_only(tmp_path: Path) -> None:
    objects = MemoryStore()
    pair = pair_key(STATIONS[0], STATIONS[1])
    stack = np.arange(11, dtype=np.float32) - 5
    objects.put(f"{NS}stacks/{pair}.sac", ccf_sac_bytes(stack, 20.0, STATIONS[0], STATIONS[1], n_windows=4))
    objects.put(f"{NS}stacks/_stacker/state.npz", StackerState(20.0, 5, phase=False).encode())
    result = export_from_stacks(objects, NS, tmp_path)
    assert [p.name for p in result.files] == [f"{pair}.sac"] and result.windows == 4
    np.testing.assert_array_equal(SACTrace.read(str(tmp_path / f"{pair}.sac")).data, stack)


def test_export_command_rejects_windows_with_from_stacks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["export", "--output", str(tmp_path), "--from-stacks", "--windows", WINDOWS[0]])
    assert code == 2 and "--windows does not apply" in capsys.readouterr().err
