"""The numpy SAC writer against ObsPy's own SAC writer and reader."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import obspy
import pytest
from obspy.geodetics import gps2dist_azimuth, kilometer2degrees
from obspy.io.sac import SACTrace
from obspy.io.sac import header as sac_header

from dsp.product import Coordinates
from results.sac import ccf_sac_bytes, write_sac

A, B = "XF.S000.00.HHZ", "XF.S001..BHZ"
CA = Coordinates(latitude=45.1, longitude=6.2, elevation_m=812.0)
CB = Coordinates(latitude=45.4, longitude=6.9, elevation_m=1530.0)
EVEL = sac_header.FLOATHDRS.index("evel")


def obspy_reference(ccf: np.ndarray, fs: float, ca: Coordinates | None, cb: Coordinates | None) -> bytes:
    """The same file written through ObsPy's SACTrace, header by header."""
    maxlag = (ccf.size - 1) // 2
    trace = SACTrace(data=ccf.astype(np.float32), delta=1.0 / fs, b=-maxlag / fs)
    trace.knetwk, trace.kstnm, trace.kcmpnm = "XF", "S001", "BHZ"
    trace.kevnm, trace.kuser0, trace.kuser1, trace.kuser2 = A, "XF", "S000", "HHZ"
    trace.user0, trace.kinst = 3.0, "pws"
    if ca is not None:
        trace.evla, trace.evlo = ca.latitude, ca.longitude
    if cb is not None:
        trace.stla, trace.stlo, trace.stel = cb.latitude, cb.longitude, cb.elevation_m
    if ca is not None and cb is not None:
        dist_m, az, baz = gps2dist_azimuth(ca.latitude, ca.longitude, cb.latitude, cb.longitude)
        trace.dist, trace.az, trace.baz, trace.gcarc = dist_m / 1e3, az, baz, kilometer2degrees(dist_m / 1e3)
    out = io.BytesIO()
    trace.write(out, byteorder="little")
    return out.getvalue()


@pytest.mark.parametrize(("ca", "cb"), [(CA, CB), (None, None), (None, CB)])
def test_bytes_match_obspys_writer(ca: Coordinates | None, cb: Coordinates | None) -> None:
    ccf = np.random.default_rng(3).standard_normal(801).astype(np.float32)
    ours = bytearray(ccf_sac_bytes(ccf, 20.0, A, B, coords_a=ca, coords_b=cb, n_windows=3, kind="pws"))
    theirs = obspy_reference(ccf, 20.0, ca, cb)
    assert len(ours) == len(theirs) == 632 + 4 * ccf.size
    # ObsPy's SACTrace has no evel attribute, so its writer never stores the event elevation; ours does.
    expected_evel = np.float32(ca.elevation_m if ca else sac_header.FNULL).tobytes()
    assert ours[4 * EVEL : 4 * EVEL + 4] == expected_evel
    ours[4 * EVEL : 4 * EVEL + 4] = np.float32(sac_header.FNULL).tobytes()
    assert bytes(ours) == theirs


def test_obspy_reads_the_lag_axis_names_and_coordinates(tmp_path: Path) -> None:
    ccf = np.zeros(401, dtype=np.float32)
    ccf[200 + 30] = 2.0  # B arrives 1.5 s after A at 20 Hz
    path = tmp_path / "pair.sac"
    write_sac(path, ccf_sac_bytes(ccf, 20.0, A, B, coords_a=CA, coords_b=CB, n_windows=5))
    tr = obspy.read(str(path))[0]
    sac = tr.stats.sac
    assert tr.stats.npts == 401 and tr.stats.delta == pytest.approx(0.05)
    assert sac.b == pytest.approx(-10.0) and sac.e == pytest.approx(10.0)
    assert sac.b + int(np.argmax(tr.data)) * tr.stats.delta == pytest.approx(1.5)
    assert (tr.stats.network, tr.stats.station, tr.stats.location, tr.stats.channel) == ("XF", "S001", "", "BHZ")
    assert (sac.kevnm, sac.kuser0, sac.kuser1, sac.kuser2) == (A, "XF", "S000", "HHZ")
    assert sac.evel == pytest.approx(812.0) and sac.stel == pytest.approx(1530.0)
    assert sac.dist == pytest.approx(gps2dist_azimuth(45.1, 6.2, 45.4, 6.9)[0] / 1e3, rel=1e-6)
    assert (sac.user0, sac.depmax, sac.depmin) == (5.0, 2.0, 0.0)
    assert not list(tmp_path.glob(".*.tmp")), "the temporary file is renamed into place"


def test_long_seed_ids_keep_net_sta_in_kevnm() -> None:
    trace = SACTrace.read(io.BytesIO(ccf_sac_bytes(np.ones(3), 10.0, "XS.LONGSTA.00.HHZ", "XS.LONGSTB.00.HHZ")))
    assert trace.kevnm == "XS.LONGSTA" and trace.kuser1 == "LONGSTA" and trace.kstnm == "LONGSTB"


@pytest.mark.parametrize("shape", [(4,), (0,), (3, 3)])
def test_a_ccf_without_a_centre_sample_is_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="odd length"):
        ccf_sac_bytes(np.zeros(shape), 20.0, A, B)
