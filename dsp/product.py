"""The preprocessed product of one station and window, and its versioned binary codec.

A product holds the station's whitened sub-window spectra (in-band bins only, complex64), a validity mask per
sub-window, and everything needed to correlate it with another product of the same window: sampling rate, FFT
size, first stored bin, window id, station coordinates and the full processing provenance. Phase 2
(correlation) then needs only products and inverse FFTs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dsp import codec
from dsp.errors import CorruptProduct, DspError
from dsp.seed import validate_seed_id
from dsp.windows import window_start

PRODUCT_FORMAT = "xcorrflow.product"
PRODUCT_VERSION = 1


@dataclass(frozen=True)
class Coordinates:
    """Station position: latitude and longitude in degrees, elevation in metres."""

    latitude: float
    longitude: float
    elevation_m: float = 0.0

    def to_dict(self) -> dict[str, float]:
        """JSON-able form."""
        return {"latitude": self.latitude, "longitude": self.longitude, "elevation_m": self.elevation_m}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Coordinates:
        """Inverse of :meth:`to_dict`; raises KeyError/TypeError/ValueError on a malformed mapping."""
        return cls(float(data["latitude"]), float(data["longitude"]), float(data.get("elevation_m", 0.0)))


@dataclass(frozen=True, eq=False)
class StationProduct:
    """Whitened sub-window spectra of one station (SEED id) in one processing window.

    ``spectra[s, i]`` is bin ``k0 + i`` of the ``nfft``-point real FFT of sub-window ``s`` (rows of invalid
    sub-windows are zero). Sub-window ``s`` starts ``s * step`` samples after the window start, at ``fs``.
    """

    seed_id: str
    window: str
    fs: float
    nfft: int
    k0: int
    cc_len: int
    step: int
    spectra: np.ndarray
    valid: np.ndarray
    gap_fraction: np.ndarray
    coordinates: Coordinates | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def n_subwindows(self) -> int:
        """Number of sub-windows (valid or not)."""
        return int(self.spectra.shape[0])

    def grid(self) -> tuple[str, float, int, int, int, int, int, int]:
        """What two products must share to be correlated: window, rate, FFT size, bins, sub-window layout."""
        shape = self.spectra.shape
        return (
            self.window,
            self.fs,
            self.nfft,
            self.k0,
            int(shape[1]),
            self.cc_len,
            self.step,
            int(shape[0]),
        )


def encode_product(product: StationProduct) -> bytes:
    """Encode a product as deterministic ``.npz`` bytes (see :mod:`dsp.codec`)."""
    header = {
        "seed_id": product.seed_id,
        "window": product.window,
        "fs": product.fs,
        "nfft": product.nfft,
        "k0": product.k0,
        "cc_len": product.cc_len,
        "step": product.step,
        "coordinates": product.coordinates.to_dict() if product.coordinates else None,
        "provenance": product.provenance,
    }
    arrays = {
        "spectra": product.spectra.astype(np.complex64, copy=False),
        "valid": product.valid.astype(bool, copy=False),
        "gap_fraction": product.gap_fraction.astype(np.float32, copy=False),
    }
    return codec.pack(PRODUCT_FORMAT, PRODUCT_VERSION, header, arrays)


def decode_product(data: bytes, source: str = "<product>") -> StationProduct:
    """Decode bytes made by :func:`encode_product`, checking every field.

    Raises:
        CorruptProduct: the bytes are damaged, of another format/version, or inconsistent.
    """
    header, arrays = codec.unpack(data, PRODUCT_FORMAT, frozenset({PRODUCT_VERSION}), source)
    try:
        product = _build(header, arrays)
    except (KeyError, TypeError, ValueError, DspError) as exc:
        raise CorruptProduct(source, f"inconsistent product: {exc}") from exc
    return product


def _build(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> StationProduct:
    spectra, valid, gaps = arrays["spectra"], arrays["valid"], arrays["gap_fraction"]
    if spectra.dtype != np.complex64 or spectra.ndim != 2 or valid.dtype != bool or gaps.dtype != np.float32:
        raise ValueError("unexpected array types")
    if valid.shape != (spectra.shape[0],) or gaps.shape != valid.shape:
        raise ValueError("mask and spectra disagree on the number of sub-windows")
    nfft, k0, fs = int(header["nfft"]), int(header["k0"]), float(header["fs"])
    if not (nfft > 0 and k0 >= 0 and k0 + spectra.shape[1] <= nfft // 2 + 1 and math.isfinite(fs) and fs > 0):
        raise ValueError("bin range outside the FFT")
    window_start(header["window"])
    coords = header["coordinates"]
    for a in (spectra, valid, gaps):
        a.setflags(write=False)
    return StationProduct(
        seed_id=validate_seed_id(header["seed_id"]),
        window=header["window"],
        fs=fs,
        nfft=nfft,
        k0=k0,
        cc_len=int(header["cc_len"]),
        step=int(header["step"]),
        spectra=spectra,
        valid=valid,
        gap_fraction=gaps,
        coordinates=Coordinates.from_dict(coords) if coords is not None else None,
        provenance=dict(header["provenance"]),
    )
