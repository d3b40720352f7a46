"""A diffuse-field synthetic world whose seismic velocity changes on a known schedule (issue 14).

The medium is homogeneous 2-D with velocity ``v(t)``, fixed noise sources (most on an annulus around the array,
some inside it) and fixed point scatterers. Each hour, every source emits new Gaussian noise with a flat
spectrum ``S_s(f)`` in the band. A station records the direct wave of every source plus the single-scattered
wave of every scatterer (the scatterers re-radiate what reaches them), so the field has coda beyond the direct
arrival:

    U_i(f) = sum_s S_s(f) G(r_is, f) + strength * sum_k W_k(f) G(r_ki, f),    W_k(f) = sum_s S_s(f) G(r_sk, f)
    G(r, f) = exp(-2 pi i f r / v) / sqrt(max(r, 1 km))                           (2-D geometrical spreading)

Every travel time is a path length over ``v``, so when ``v`` grows by ``dv/v`` every arrival of every
cross-correlation comes earlier by the factor ``1 / (1 + dv/v)``: the CCFs stretch exactly with the velocity.
The velocity is constant within each hour window and equal to the schedule at the window's centre, so the
truth of a window is one number.

Why the frequency domain: one hour at a time, ``U_i`` is built on the hour's own frequency grid (1/3600 Hz) and
one inverse FFT per station gives the record at its own rate, with exact sub-sample delays and no aliasing.
Why the stations see a few hundred sources that never move: a field of fixed, persistent sources makes
hour-long correlations repeatable, so an hourly dv/v can be measured to a few hundredths of a percent (as the
targets of issue 14 require); the cost is some energy inside the V of the record section (arrivals of sources
off the stations' axis that a continuous source distribution would cancel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from contracts.errors import ConfigError

BLOCK = 64  # frequency bins per step: the propagator block [BLOCK, out, in] stays in cache (measured 4x faster)
NEAR_KM = 1.0  # spreading is capped inside this distance, so a source next to a station stays finite


@dataclass(frozen=True)
class DvvChange:
    """One term of a dv/v schedule (percent; positive = faster = earlier arrivals), times in hours from the start.

    ``kind`` is ``step`` (``+percent`` from ``start_h`` on), ``ramp`` (linear from 0 at ``start_h`` to
    ``percent`` at ``end_h``, then held) or ``recovery`` (``+percent`` at ``start_h``, relaxing to 0 as
    ``exp(-(t - start_h) / tau_h)``).
    """

    kind: str
    start_h: float
    percent: float
    end_h: float = 0.0
    tau_h: float = 0.0

    def at(self, t_h: float) -> float:
        """The term's dv/v (percent) at ``t_h`` hours after the start."""
        if t_h < self.start_h:
            return 0.0
        if self.kind == "step":
            return self.percent
        if self.kind == "ramp":
            return self.percent * min((t_h - self.start_h) / (self.end_h - self.start_h), 1.0)
        return self.percent * math.exp(-(t_h - self.start_h) / self.tau_h)

    @classmethod
    def parse(cls, kind: str, text: str) -> DvvChange:
        """Parse a CLI value: step ``HOUR:PERCENT``, ramp ``START:END:PERCENT``, recovery ``HOUR:PERCENT:TAU``.

        Raises:
            ConfigError: malformed text, a ramp that does not end after it starts, or a non-positive TAU.
        """
        shapes = {"step": "HOUR:PERCENT", "ramp": "START:END:PERCENT", "recovery": "HOUR:PERCENT:TAU_HOURS"}
        if kind not in shapes:
            raise ConfigError(f"unknown dv/v change {kind!r}; expected one of {sorted(shapes)}")
        try:
            values = [float(v) for v in text.split(":")]
        except ValueError as exc:
            raise ConfigError(f"--dvv-{kind} {text!r}: expected {shapes[kind]}") from exc
        if len(values) != shapes[kind].count(":") + 1 or not all(map(math.isfinite, values)):
            raise ConfigError(f"--dvv-{kind} {text!r}: expected {shapes[kind]}")
        if kind == "step":
            return cls("step", values[0], values[1])
        if kind == "ramp":
            if values[1] <= values[0]:
                raise ConfigError(f"--dvv-ramp {text!r}: END must come after START")
            return cls("ramp", values[0], values[2], end_h=values[1])
        if values[2] <= 0:
            raise ConfigError(f"--dvv-recovery {text!r}: TAU_HOURS must be positive")
        return cls("recovery", values[0], values[1], tau_h=values[2])


def dvv_at(changes: tuple[DvvChange, ...], t_h: float) -> float:
    """dv/v (percent) of the schedule at ``t_h`` hours: the sum of its terms (0 for an empty schedule)."""
    return float(sum(c.at(t_h) for c in changes))


@dataclass(frozen=True)
class DiffuseSpec:
    """The medium of the diffuse-field world (sizes relative to the array's aperture)."""

    n_sources: int = 100
    inside_fraction: float = 0.15
    n_scatterers: int = 100
    strength: float = 1.5
    band_hz: tuple[float, float] = (0.03, 2.6)

    def check(self, rates: tuple[int, ...]) -> None:
        """Raise ConfigError when the medium cannot be synthesised at these station rates."""
        if self.n_sources < 1 or self.n_scatterers < 0 or not 0 <= self.inside_fraction <= 1:
            raise ConfigError("the diffuse field needs >= 1 source, >= 0 scatterers and 0 <= inside fraction <= 1")
        if not 0 < self.band_hz[0] < self.band_hz[1] < min(rates) / 2:
            raise ConfigError(f"the diffuse band {self.band_hz} Hz must stay below every station's Nyquist")


@dataclass(frozen=True, eq=False)
class Medium:
    """Positions (km, array centre at 0) of the sources and scatterers, and the wave speed at dv/v = 0."""

    stations: np.ndarray
    sources: np.ndarray
    scatterers: np.ndarray
    velocity_km_s: float
    strength: float
    band_hz: tuple[float, float]


def make_medium(
    stations: np.ndarray, aperture_km: float, velocity_km_s: float, spec: DiffuseSpec, rng: np.random.Generator
) -> Medium:
    """Draw the sources (annulus of radius 1.5-4 apertures, plus a share inside the array's square) and the
    scatterers (uniform over a square of 4 apertures a side, so scattered paths reach ~2x the direct ones)."""
    n_in = round(spec.n_sources * spec.inside_fraction)
    n_out = spec.n_sources - n_in
    azimuth = rng.uniform(0, 2 * np.pi, n_out)
    radius = rng.uniform(1.5 * aperture_km, 4 * aperture_km, n_out)
    ring = np.c_[radius * np.cos(azimuth), radius * np.sin(azimuth)]
    inside = rng.uniform(-aperture_km / 2, aperture_km / 2, (n_in, 2))
    scatterers = rng.uniform(-2 * aperture_km, 2 * aperture_km, (spec.n_scatterers, 2))
    return Medium(stations, np.vstack([ring, inside]), scatterers, velocity_km_s, spec.strength, spec.band_hz)


class _Propagator:
    """``G(r, f)`` for every path between two point sets, one block of frequency bins at a time.

    ``G(r, f0 + j df) = exp(-2 pi i f0 r/v) * exp(-2 pi i j df r/v) / sqrt(r)``: the second factor is computed
    once per hour for ``j < BLOCK``, so each block costs one complex exponential per path, not one per bin.
    """

    def __init__(self, receivers: np.ndarray, emitters: np.ndarray, velocity: float, df: float) -> None:
        r = np.hypot(*(receivers[:, None, :] - emitters[None, :, :]).transpose(2, 0, 1))
        self.tau = r / velocity
        ramp = np.exp(-2j * np.pi * np.arange(BLOCK)[:, None, None] * df * self.tau[None])
        self.ramp = (ramp / np.sqrt(np.maximum(r, NEAR_KM))[None]).astype(np.complex64)

    def block(self, f0: float, n: int) -> np.ndarray:
        """complex64 ``[n, receivers, emitters]`` for bins ``f0, f0 + df, ...`` (``n <= BLOCK``)."""
        base = np.exp(-2j * np.pi * ((self.tau * f0) % 1.0)).astype(np.complex64)  # mod 1: exact in float64
        return self.ramp[:n] * base[None]


def hour_spectra(medium: Medium, dvv_percent: float, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """Spectra of one hour at every station on the grid ``k / duration_s`` Hz, bins 0 .. top of the band.

    Args:
        medium: the world.
        dvv_percent: the hour's velocity change; the wave speed is ``v0 * (1 + dvv/100)``.
        duration_s: the record length (one hour window).
        rng: draws the sources' spectra of this hour.

    Returns:
        complex128 ``[n_stations, k_top + 1]``, zero outside the band.
    """
    df = 1.0 / duration_s
    k0, k1 = math.ceil(medium.band_hz[0] / df), math.floor(medium.band_hz[1] / df)
    n_src = medium.sources.shape[0]
    sources = (rng.standard_normal((k1 - k0 + 1, n_src, 2)) @ np.array([1.0, 1j])).astype(np.complex64)
    velocity = medium.velocity_km_s * (1 + dvv_percent / 100)
    direct = _Propagator(medium.stations, medium.sources, velocity, df)
    lit = _Propagator(medium.scatterers, medium.sources, velocity, df)
    scattered = _Propagator(medium.stations, medium.scatterers, velocity, df)
    out = np.zeros((k1 + 1, medium.stations.shape[0]), dtype=np.complex128)
    for b0 in range(0, k1 - k0 + 1, BLOCK):
        n, f0 = min(BLOCK, k1 - k0 + 1 - b0), (k0 + b0) * df
        s = sources[b0 : b0 + n, :, None]
        incident = np.matmul(lit.block(f0, n), s)  # what each scatterer receives, and re-radiates
        field = np.matmul(direct.block(f0, n), s) + medium.strength * np.matmul(scattered.block(f0, n), incident)
        out[k0 + b0 : k0 + b0 + n] = field[..., 0]
    return out.T


def to_time(spectra: np.ndarray, n: int) -> np.ndarray:
    """The records ``[n_stations, n]`` of spectra on a ``1/duration`` grid, at ``n`` samples per duration.

    The band sits far below every Nyquist, so zero-padding the spectrum is exact band-limited resampling.
    """
    full = np.zeros((spectra.shape[0], n // 2 + 1), dtype=np.complex128)
    full[:, : spectra.shape[1]] = spectra
    return np.fft.irfft(full, n=n, axis=1) * n  # * n: the same amplitude at every station rate
