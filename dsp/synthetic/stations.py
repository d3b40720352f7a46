"""A synthetic deployment with a known answer: one plane wave of band-limited noise crossing a station array
(``field="plane"``, the default), or a diffuse field whose velocity changes on a schedule (``field="diffuse"``,
see :mod:`dsp.synthetic.diffuse`; its truth gains the true dv/v of every window).

Plane wave:
Every station records the same noise field ``s(t - d_i)`` plus independent local noise. The arrival times
``d_i`` come from a plane wave (slowness vector . station position) rounded to whole samples at ``target_fs``,
so the true lag of each pair, ``arrival(B) - arrival(A)`` for A < B, is an exact number of target samples and
"0 samples off" is well defined. The field is generated once at a base rate that every station rate divides
(their least common multiple with ``target_fs``) and each station takes every k-th sample of it: the field is
band-limited well below every Nyquist, so this subsampling is alias-free and introduces no delay.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import obspy

from contracts.errors import ConfigError
from dsp.seed import pair_key, split_seed_id, validate_seed_id
from dsp.synthetic.diffuse import DiffuseSpec, DvvChange, dvv_at, hour_spectra, make_medium, to_time
from dsp.windows import window_id

DEG_KM = 111.195  # km per degree of latitude (mean Earth radius 6371 km)


@dataclass(frozen=True)
class GapSpec:
    """A gap in one station's record: ``start_s`` seconds after the data start, ``length_s`` long."""

    station: str
    start_s: float
    length_s: float

    @classmethod
    def parse(cls, text: str) -> GapSpec:
        """Parse ``STATION:START:LEN`` (station code such as ``S003``, or its index; seconds).

        Raises:
            ConfigError: malformed text.
        """
        parts = text.split(":")
        try:
            station, start, length = parts[0], float(parts[1]), float(parts[2])
        except (IndexError, ValueError) as exc:
            raise ConfigError(f"--gap {text!r}: expected STATION:START:LEN, e.g. S003:1200:300") from exc
        if len(parts) != 3 or start < 0 or length <= 0:
            raise ConfigError(f"--gap {text!r}: expected STATION:START:LEN with START >= 0 and LEN > 0")
        return cls(station, start, length)


@dataclass(frozen=True)
class SynthConfig:
    """Parameters of a synthetic deployment."""

    stations: int
    hours: int
    rates: tuple[int, ...] = (100,)
    seed: int = 0
    gaps: tuple[GapSpec, ...] = ()
    start: float = float(obspy.UTCDateTime(2024, 1, 1))
    target_fs: int = 20
    network: str = "XF"
    aperture_km: float = 40.0
    velocity_km_s: float = 3.0
    local_noise: float = 0.5
    band_hz: tuple[float, float] = (0.03, 4.0)
    origin: tuple[float, float] = (45.0, 7.0)
    extra: dict[str, Any] = field(default_factory=dict)
    wavefield: str = "plane"
    dvv: tuple[DvvChange, ...] = ()
    diffuse: DiffuseSpec = field(default_factory=DiffuseSpec)

    def check(self) -> None:
        """Raise ConfigError when the configuration cannot be synthesised."""
        if self.stations < 2 or self.hours < 1:
            raise ConfigError("synth needs at least 2 stations and 1 hour")
        if not self.rates or any(r <= 0 for r in self.rates):
            raise ConfigError("rates must be positive integers (Hz)")
        if self.wavefield not in ("plane", "diffuse"):
            raise ConfigError(f"wavefield {self.wavefield!r}: expected plane or diffuse")
        if self.wavefield == "diffuse":
            self.diffuse.check(self.rates)
            return
        if self.dvv:
            raise ConfigError("a dv/v schedule needs the diffuse field (--field diffuse): a plane wave has no medium")
        if self.band_hz[1] >= min(self.rates) / 2:
            raise ConfigError(f"the field band {self.band_hz} Hz must stay below every station's Nyquist")


def channel_code(rate: float) -> str:
    """SEED band code for a sampling rate (F, C, H, B, M, L) followed by ``HZ``."""
    for floor, band in ((1000, "F"), (250, "C"), (80, "H"), (10, "B"), (1, "M")):
        if rate >= floor:
            return f"{band}HZ"
    return "LHZ"


def layout(cfg: SynthConfig, rng: np.random.Generator) -> dict[str, dict[str, Any]]:
    """Station ids, positions, rates and arrival times (whole target samples) of the plane wave."""
    xy = rng.uniform(-cfg.aperture_km / 2, cfg.aperture_km / 2, size=(cfg.stations, 2))
    azimuth = rng.uniform(0, 360)
    slowness = np.array([math.sin(math.radians(azimuth)), math.cos(math.radians(azimuth))]) / cfg.velocity_km_s
    arrivals = np.round(xy @ slowness * cfg.target_fs) / cfg.target_fs
    lat0, lon0 = cfg.origin
    stations = {}
    for i in range(cfg.stations):
        rate = cfg.rates[i % len(cfg.rates)]
        seed_id = validate_seed_id(f"{cfg.network}.S{i:03d}.00.{channel_code(rate)}")
        stations[seed_id] = {
            "station": f"S{i:03d}",
            "fs": rate,
            "x_km": float(xy[i, 0]),
            "y_km": float(xy[i, 1]),
            "latitude": lat0 + float(xy[i, 1]) / DEG_KM,
            "longitude": lon0 + float(xy[i, 0]) / (DEG_KM * math.cos(math.radians(lat0))),
            "elevation_m": 0.0,
            "arrival_s": float(arrivals[i]),
        }
    return stations | {"_plane_wave": {"azimuth_deg": azimuth, "velocity_km_s": cfg.velocity_km_s}}


def noise_field(n: int, fs: int, band: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Unit-variance white noise band-limited to ``band`` Hz (brick-wall in frequency), float64 ``[n]``."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / fs)
    spec[(f < band[0]) | (f > band[1])] = 0
    x = np.fft.irfft(spec, n=n)
    return x / x.std()


def synthesise(cfg: SynthConfig, out: Path) -> dict[str, Any]:
    """Write hourly MiniSEED files (one per station and hour), ``stations.csv`` and ``truth.json`` into
    ``out``.

    Returns:
        The truth record (also written to ``truth.json``).

    Raises:
        ConfigError: the configuration is invalid.
    """
    cfg.check()
    out.mkdir(parents=True, exist_ok=True)
    seeds = np.random.SeedSequence(cfg.seed)
    layout_seq, field_seq, *station_seqs = seeds.spawn(2 + cfg.stations)
    info = layout(cfg, np.random.default_rng(layout_seq))
    plane = info.pop("_plane_wave")
    if cfg.wavefield == "diffuse":
        truth = _synthesise_diffuse(cfg, out, info, field_seq, station_seqs)
        (out / "truth.json").write_text(json.dumps(truth, indent=1))
        _write_stations_csv(out / "stations.csv", info)
        return truth
    base = math.lcm(*cfg.rates, cfg.target_fs)
    arrivals = {sid: round(v["arrival_s"] * base) for sid, v in info.items()}
    pad = max(arrivals.values()) - min(arrivals.values())
    n_base = cfg.hours * 3600 * base + pad
    common = noise_field(n_base, base, cfg.band_hz, np.random.default_rng(field_seq))
    first = max(arrivals.values())  # base index of t = start for the latest station stays >= 0
    for (sid, meta), seq in zip(info.items(), station_seqs, strict=True):
        _write_station(cfg, out, sid, meta, common, base, first - arrivals[sid], np.random.default_rng(seq))
    truth = _truth(cfg, info, plane)
    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    _write_stations_csv(out / "stations.csv", info)
    return truth


def _write_station(
    cfg: SynthConfig,
    out: Path,
    seed_id: str,
    meta: dict[str, Any],
    common: np.ndarray,
    base: int,
    offset: int,
    rng: np.random.Generator,
) -> None:
    rate = int(meta["fs"])
    step = base // rate
    n = cfg.hours * 3600 * rate
    x = common[offset : offset + n * step : step] + cfg.local_noise * rng.standard_normal(n)
    counts = np.round(x * 1000).astype(np.int32)
    mask = _gap_mask(cfg, meta["station"], seed_id, n, rate)
    per_hour = 3600 * rate
    for h in range(cfg.hours):
        sl = slice(h * per_hour, (h + 1) * per_hour)
        _write_hour(cfg, out, seed_id, rate, h, counts[sl], mask[sl])


def _write_hour(
    cfg: SynthConfig, out: Path, seed_id: str, rate: int, hour: int, counts: np.ndarray, mask: np.ndarray
) -> None:
    """Write one station's hour as MiniSEED (split at gaps); nothing when the whole hour is gap."""
    if mask.all():
        return  # the whole hour is gap: no file, as a real station would leave
    net, sta, loc, cha = split_seed_id(seed_id)
    data = np.ma.masked_array(counts, mask=mask) if mask.any() else counts
    tr = obspy.Trace(data, header={"network": net, "station": sta, "location": loc, "channel": cha})
    tr.stats.sampling_rate = rate
    tr.stats.starttime = obspy.UTCDateTime(cfg.start + hour * 3600)
    stream = tr.split() if np.ma.is_masked(data) else obspy.Stream([tr])
    name = f"{seed_id}__{window_id(cfg.start + hour * 3600, 3600)}.mseed"
    stream.write(str(out / name), format="MSEED", encoding="STEIM2", reclen=4096)


def _synthesise_diffuse(
    cfg: SynthConfig,
    out: Path,
    info: dict[str, dict[str, Any]],
    field_seq: np.random.SeedSequence,
    station_seqs: list[np.random.SeedSequence],
) -> dict[str, Any]:
    """Write the diffuse-field world hour by hour (memory stays one hour deep) and return its truth."""
    for meta in info.values():
        meta.pop("arrival_s")  # a plane-wave quantity; the diffuse truth gives distances instead
    ids = list(info)
    xy = np.array([[info[sid]["x_km"], info[sid]["y_km"]] for sid in ids])
    medium_seq, *hour_seqs = field_seq.spawn(1 + cfg.hours)
    medium = make_medium(xy, cfg.aperture_km, cfg.velocity_km_s, cfg.diffuse, np.random.default_rng(medium_seq))
    rngs = [np.random.default_rng(seq) for seq in station_seqs]
    rates = [int(info[sid]["fs"]) for sid in ids]
    masks = [
        _gap_mask(cfg, info[sid]["station"], sid, cfg.hours * 3600 * r, r) for sid, r in zip(ids, rates, strict=True)
    ]
    # the velocity is constant within a window and equal to the schedule at the window's centre
    dvv = {window_id(cfg.start + h * 3600, 3600): dvv_at(cfg.dvv, h + 0.5) for h in range(cfg.hours)}
    gain = 0.0
    for h, (wid, seq) in enumerate(zip(dvv, hour_seqs, strict=True)):
        spectra = hour_spectra(medium, dvv[wid], 3600.0, np.random.default_rng(seq))
        # one gain for every station and hour, from hour 0 (Parseval: mean square = 2 sum |X_k|^2): stations
        # keep their amplitude differences, and the local noise is relative to the network's mean field
        gain = gain or 1.0 / math.sqrt(2 * float(np.mean(np.sum(np.abs(spectra) ** 2, axis=1))))
        for i, sid in enumerate(ids):
            n = 3600 * rates[i]
            x = to_time(spectra[i : i + 1], n)[0] * gain + cfg.local_noise * rngs[i].standard_normal(n)
            counts = np.round(x * 1000).astype(np.int32)
            _write_hour(cfg, out, sid, rates[i], h, counts, masks[i][h * n : (h + 1) * n])
    return _truth_diffuse(cfg, info, dvv)


def _gap_mask(cfg: SynthConfig, station: str, seed_id: str, n: int, rate: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    index = int(station[1:])
    for gap in cfg.gaps:
        if gap.station in (station, seed_id, str(index)):
            mask[round(gap.start_s * rate) : round((gap.start_s + gap.length_s) * rate)] = True
    return mask


def _truth(cfg: SynthConfig, info: dict[str, dict[str, Any]], plane: dict[str, Any]) -> dict[str, Any]:
    ids = sorted(info)
    pairs = {}
    for i, a in enumerate(ids):
        for b in ids[i + 1 :]:
            lag = info[b]["arrival_s"] - info[a]["arrival_s"]
            pairs[pair_key(a, b)] = {"lag_s": round(lag, 9), "lag_samples": round(lag * cfg.target_fs)}
    return {
        "generator": "xcorrflow synth",
        "seed": cfg.seed,
        "start": str(obspy.UTCDateTime(cfg.start)),
        "hours": cfg.hours,
        "target_fs": cfg.target_fs,
        "plane_wave": plane,
        "gaps": [g.__dict__ for g in cfg.gaps],
        "stations": info,
        "pairs": pairs,
    }


def _truth_diffuse(cfg: SynthConfig, info: dict[str, dict[str, Any]], dvv: dict[str, float]) -> dict[str, Any]:
    ids = sorted(info)
    pairs = {}
    for i, a in enumerate(ids):
        for b in ids[i + 1 :]:
            d = math.hypot(info[b]["x_km"] - info[a]["x_km"], info[b]["y_km"] - info[a]["y_km"])
            pairs[pair_key(a, b)] = {"distance_km": round(d, 9), "arrival_s": round(d / cfg.velocity_km_s, 9)}
    spec = cfg.diffuse
    return {
        "generator": "xcorrflow synth",
        "field": "diffuse",
        "seed": cfg.seed,
        "start": str(obspy.UTCDateTime(cfg.start)),
        "hours": cfg.hours,
        "target_fs": cfg.target_fs,
        "medium": {
            "velocity_km_s": cfg.velocity_km_s,
            "n_sources": spec.n_sources,
            "inside_fraction": spec.inside_fraction,
            "n_scatterers": spec.n_scatterers,
            "strength": spec.strength,
            "band_hz": list(spec.band_hz),
        },
        "dvv_schedule": [c.__dict__ for c in cfg.dvv],
        "gaps": [g.__dict__ for g in cfg.gaps],
        "stations": info,
        "pairs": pairs,
        "dvv": dvv,
    }


def _write_stations_csv(path: Path, info: dict[str, dict[str, Any]]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "latitude", "longitude", "elevation_m"])
        for sid, meta in sorted(info.items()):
            writer.writerow([sid, f"{meta['latitude']:.6f}", f"{meta['longitude']:.6f}", meta["elevation_m"]])
