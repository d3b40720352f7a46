"""Scan a folder of raw MiniSEED: what is there, per (SEED id, window), and what is junk.

``scan_folder`` reads each file's headers (or, with ``headonly=False``, its samples too), validates it, and
maps it to every processing window it overlaps. Unreadable or invalid files become :class:`DeadLetter` entries
with a reason instead of exceptions: one bad file never sinks the run. Station coordinates come from
``stations.csv`` (``id,latitude,longitude[,elevation_m]``, id = ``NET.STA`` or a full SEED id) or StationXML
(``*.xml``) files in the folder. ``truth.json`` (written by ``xcorrflow synth``) and hidden files are ignored.
"""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import obspy

from dsp.errors import DspError
from dsp.mseed import check_stream, decode_mseed
from dsp.params import ProcessingParams
from dsp.product import Coordinates
from dsp.windows import windows_in_span

log = logging.getLogger(__name__)

IGNORED_NAMES = frozenset({"truth.json", "report.json"})
STATIONS_CSV = "stations.csv"


@dataclass(frozen=True)
class DeadLetter:
    """An input that could not be used, and why."""

    source: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        """JSON form ``{"source", "reason"}`` as in report.json."""
        return {"source": self.source, "reason": self.reason}


@dataclass(frozen=True)
class RawItem:
    """One valid raw file: channel, time span (epoch s, end exclusive), rate and the windows it touches."""

    source: str
    seed_id: str
    start: float
    end: float
    sampling_rate: float
    windows: tuple[str, ...]


@dataclass(frozen=True)
class Inventory:
    """Result of :func:`scan_folder`."""

    items: tuple[RawItem, ...]
    dead_letters: tuple[DeadLetter, ...]
    coordinates: Mapping[str, Coordinates] = field(default_factory=dict)

    def windows(self) -> list[str]:
        """Every window id touched by some file, in time order."""
        return sorted({w for item in self.items for w in item.windows})

    def seed_ids(self) -> list[str]:
        """Every SEED id found, sorted."""
        return sorted({item.seed_id for item in self.items})

    def by_window(self) -> dict[str, dict[str, list[RawItem]]]:
        """``{window: {seed_id: [items]}}``: the files to merge for each product."""
        table: dict[str, dict[str, list[RawItem]]] = defaultdict(lambda: defaultdict(list))
        for item in self.items:
            for w in item.windows:
                table[w][item.seed_id].append(item)
        return {w: dict(table[w]) for w in sorted(table)}

    def coordinates_of(self, seed_id: str) -> Coordinates | None:
        """Coordinates by full SEED id, else by ``NET.STA``, else None."""
        net_sta = ".".join(seed_id.split(".")[:2])
        return self.coordinates.get(seed_id) or self.coordinates.get(net_sta)


def scan_folder(path: str | Path, params: ProcessingParams, *, headonly: bool = True) -> Inventory:
    """Scan ``path`` recursively for MiniSEED files and station metadata.

    Args:
        path: the folder.
        params: processing parameters (window length, accepted rates).
        headonly: read headers only (fast); with False, samples are decoded and checked too (NaN/inf).

    Returns:
        The inventory: valid items, dead letters (``source`` is the file path) and known coordinates.
    """
    root = Path(path)
    items, dead, coords = [], [], {}
    for file in sorted(p for p in root.rglob("*") if p.is_file() and is_input(p, root)):
        if is_metadata(file):
            try:
                coords.update(read_station_file(file))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                dead.append(DeadLetter(str(file), f"unreadable station metadata: {exc}"))
            continue
        try:
            items.append(scan_file(file, params, headonly=headonly))
        except (DspError, OSError) as exc:
            dead.append(DeadLetter(str(file), f"{type(exc).__name__}: {exc}"))
    return Inventory(tuple(items), tuple(dead), coords)


def scan_metadata(path: str | Path) -> dict[str, Coordinates]:
    """Coordinates from every readable station metadata file of a folder (unreadable ones are skipped)."""
    root = Path(path)
    coords: dict[str, Coordinates] = {}
    for file in sorted(p for p in root.rglob("*") if p.is_file() and is_input(p, root) and is_metadata(p)):
        try:
            coords.update(read_station_file(file))
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("unreadable station metadata %s", file)
    return coords


def is_metadata(file: Path) -> bool:
    """True for station metadata files (stations.csv, StationXML)."""
    return file.name == STATIONS_CSV or file.suffix.lower() == ".xml"


def scan_file(file: Path, params: ProcessingParams, *, headonly: bool = True) -> RawItem:
    """Read and validate one MiniSEED file (see :func:`scan_folder`).

    Raises:
        OSError: the file cannot be read.
        DspError: it is not valid MiniSEED of one supported channel (CorruptMiniSEED, EmptyRecord,
            MixedChannels, InvalidSeedId, UnsupportedSamplingRate, NonFiniteSamples).
    """
    stream = decode_mseed(file.read_bytes(), str(file), headonly=headonly)
    seed_id = check_stream(stream, str(file), params, data=not headonly)
    start = min(float(tr.stats.starttime) for tr in stream)
    end = max(float(tr.stats.endtime) + tr.stats.delta for tr in stream)
    rate = float(stream[0].stats.sampling_rate)
    return RawItem(str(file), seed_id, start, end, rate, tuple(windows_in_span(start, end, params.window_s)))


def load_stream(items: Iterable[RawItem]) -> obspy.Stream:
    """Read the samples of several files of one channel into one stream (to merge into a product).

    Raises:
        OSError, CorruptMiniSEED, EmptyRecord: a file changed or vanished since the scan.
    """
    stream = obspy.Stream()
    for item in items:
        stream += decode_mseed(Path(item.source).read_bytes(), item.source)
    return stream


def read_station_file(file: Path) -> dict[str, Coordinates]:
    """Coordinates from ``stations.csv`` or a StationXML file, keyed by ``NET.STA`` (CSV: the id as written).

    Raises:
        OSError, ValueError, KeyError, TypeError: unreadable or malformed metadata.
    """
    if file.suffix.lower() == ".xml":
        inv = obspy.read_inventory(str(file))
        return {
            f"{net.code}.{sta.code}": Coordinates(sta.latitude, sta.longitude, sta.elevation or 0.0)
            for net in inv
            for sta in net
        }
    with file.open(newline="") as fh:
        return {
            row["id"].strip(): Coordinates(
                float(row["latitude"]), float(row["longitude"]), float(row.get("elevation_m") or 0.0)
            )
            for row in csv.DictReader(fh)
        }


def is_input(file: Path, root: Path) -> bool:
    """False for hidden files/folders and known non-data outputs (truth.json, report.json)."""
    parts = file.relative_to(root).parts
    return not (file.name in IGNORED_NAMES or any(p.startswith(".") for p in parts))
