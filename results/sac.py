"""SAC export of CCFs and stacks (readable by ``obspy.read``).

Header convention: ``b = -maxlag`` seconds and ``delta = 1/fs``, so sample i sits at lag ``b + i*delta`` and
the centre sample is zero lag. Source A (the smaller SEED id) is the "event" (``evla``/``evlo``/``evel``), B
is the "station" (``stla``/``stlo``/``stel``), as NoisePy does; with both known,
``dist``/``az``/``baz``/``gcarc`` are set. Names: ``knetwk``/``kstnm``/``khole``/``kcmpnm`` describe B;
``kevnm`` holds A's SEED id (or ``NET.STA`` when longer than 16 characters) and
``kuser0``/``kuser1``/``kuser2`` hold A's network, station and channel. ``user0`` is the number of windows
stacked and ``kinst`` the stack kind.

The file is assembled here with numpy, straight from the SAC v6 binary layout (70 floats, 40 integers, 24
eight-byte strings, then the samples), instead of through ObsPy's ``SACTrace``: a run writes one file per
pair (8,385 for 130 stations), and encoding them through ``SACTrace`` took 1.26 CPU s against 0.50 s here.
The bytes equal ObsPy's, except that ``evel`` is stored (``SACTrace`` has no such attribute and silently
dropped it). ``SACTrace.read(io.BytesIO(ccf_sac_bytes(...)))`` gives ObsPy's view of a file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from obspy.geodetics import gps2dist_azimuth, kilometer2degrees
from obspy.io.sac import header as sac_header

from dsp.product import Coordinates
from dsp.seed import split_seed_id

_F = {name: i for i, name in enumerate(sac_header.FLOATHDRS)}
_I = {name: i for i, name in enumerate(sac_header.INTHDRS)}
_S = {name: i for i, name in enumerate(sac_header.STRHDRS)}

# What ObsPy writes for a new trace with only data, delta and b: zero reference time at 1970-001, evenly
# spaced time series (iftype ITIME), times relative to b (iztype IB), header version 6.
_FLOATS = np.full(len(_F), sac_header.FNULL, dtype="<f4")
_FLOATS[_F["internal0"]] = 2.0
_INTS = np.full(len(_I), sac_header.INULL, dtype="<i4")
for _name, _value in {
    "nzyear": 1970,
    "nzjday": 1,
    "nzhour": 0,
    "nzmin": 0,
    "nzsec": 0,
    "nzmsec": 0,
    "nvhdr": 6,
    "iftype": sac_header.ENUM_VALS["itime"],
    "iztype": sac_header.ENUM_VALS["ib"],
    "leven": 1,
    "lpspol": 1,
    "lovrok": 1,
    "lcalda": 0,
}.items():
    _INTS[_I[_name]] = _value
_STRINGS = np.full(len(_S), sac_header.SNULL.encode().ljust(8), dtype="S8")


def ccf_sac_bytes(
    ccf: np.ndarray,
    fs: float,
    a: str,
    b: str,
    *,
    coords_a: Coordinates | None = None,
    coords_b: Coordinates | None = None,
    n_windows: int = 1,
    kind: str = "linear",
) -> bytes:
    """The SAC file (little-endian) of one pair's CCF (odd length, zero lag at the centre).

    Args:
        ccf: the CCF, lags -maxlag..+maxlag.
        fs: sampling rate, Hz.
        a, b: SEED ids with A < B.
        coords_a, coords_b: station coordinates when known.
        n_windows: windows in the stack.
        kind: ``"linear"``, ``"pws"`` or ``"ccf"``.

    Raises:
        ValueError: the CCF is not one-dimensional or its length is even (no centre sample).
    """
    data = np.ascontiguousarray(ccf, dtype="<f4")
    if data.ndim != 1 or data.size % 2 != 1:
        raise ValueError(f"a CCF must be one-dimensional with an odd length, got shape {data.shape}")
    maxlag = (data.size - 1) // 2
    floats, ints, strings = _FLOATS.copy(), _INTS.copy(), _STRINGS.copy()
    delta, begin = np.float32(1.0 / fs), np.float32(-maxlag / fs)
    floats[_F["delta"]], floats[_F["b"]] = delta, begin
    floats[_F["e"]] = float(begin) + (data.size - 1) * float(delta)
    floats[_F["depmin"]], floats[_F["depmax"]], floats[_F["depmen"]] = data.min(), data.max(), data.mean()
    floats[_F["user0"]] = float(n_windows)
    _set_coordinates(floats, coords_a, coords_b)
    ints[_I["npts"]] = data.size

    a_net, a_sta, _, a_cha = split_seed_id(a)
    b_net, b_sta, b_loc, b_cha = split_seed_id(b)
    for name, text in (
        ("knetwk", b_net),
        ("kstnm", b_sta),
        ("khole", b_loc),
        ("kcmpnm", b_cha),
        ("kuser0", a_net),
        ("kuser1", a_sta),
        ("kuser2", a_cha),
        ("kinst", kind),
    ):
        if text:
            strings[_S[name]] = text.encode("ascii")[:8]
    event = (a if len(a) <= 16 else f"{a_net}.{a_sta}"[:16]).encode("ascii").ljust(16)  # as ObsPy pads it
    strings[_S["kevnm"]], strings[_S["kevnm2"]] = event[:8], event[8:]
    return b"".join((floats.tobytes(), ints.tobytes(), strings.tobytes(), data.tobytes()))


def write_sac(path: Path, content: bytes) -> None:
    """Write a SAC file atomically (temporary file, then rename), so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(content)
    os.replace(tmp, path)


def _set_coordinates(floats: np.ndarray, ca: Coordinates | None, cb: Coordinates | None) -> None:
    if ca is not None:
        floats[_F["evla"]], floats[_F["evlo"]], floats[_F["evel"]] = ca.latitude, ca.longitude, ca.elevation_m
    if cb is not None:
        floats[_F["stla"]], floats[_F["stlo"]], floats[_F["stel"]] = cb.latitude, cb.longitude, cb.elevation_m
    if ca is not None and cb is not None:
        dist_m, az, baz = gps2dist_azimuth(ca.latitude, ca.longitude, cb.latitude, cb.longitude)
        floats[_F["dist"]], floats[_F["az"]], floats[_F["baz"]] = dist_m / 1000.0, az, baz
        floats[_F["gcarc"]] = kilometer2degrees(dist_m / 1000.0)
