"""Scan a folder of raw MiniSEED: what is there, per (SEED id, window), and what is junk.

``scan_folder`` walks the folder without following symlinks (:mod:`producers.walk`: a link that leads outside
is a dead letter, one that stays inside is skipped with a warning), reads each file's headers (or, with
``headonly=False``, its samples too), validates it, and maps it to every processing window it overlaps.
Unreadable or invalid files become :class:`DeadLetter` entries with a reason instead of exceptions: one bad
file never sinks the run. Files of one channel that overlap in time are decoded and compared
(:mod:`producers.overlaps`): identical samples are merged with an :class:`InputWarning`, different samples
dead-letter both files, each naming the other. Station coordinates come from ``stations.csv``
(``id,latitude,longitude[,elevation_m]``, id = ``NET.STA`` or a full SEED id) or StationXML (``*.xml``) files
in the folder. ``truth.json`` (written by ``xcorrflow synth``) and hidden files are ignored.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

import obspy

from contracts.params import ProcessingParams
from dsp.errors import DspError
from dsp.mseed import check_stream, decode_mseed
from dsp.product import Coordinates
from dsp.windows import windows_in_span
from producers.overlaps import Overlap, Span, find_overlaps, sample_conflict
from producers.walk import Walk, read_input, shown, walk_folder

log = logging.getLogger(__name__)

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
class InputWarning:
    """Something in the input that was used (or harmlessly passed over) but deserves a word in the report."""

    source: str
    warning: str

    def to_dict(self) -> dict[str, str]:
        """JSON form ``{"source", "warning"}`` as in report.json."""
        return {"source": self.source, "warning": self.warning}


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
    warnings: tuple[InputWarning, ...] = ()

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
    """Scan ``path`` recursively for MiniSEED files and station metadata (see the module docstring).

    Args:
        path: the folder.
        params: processing parameters (window length, accepted rates).
        headonly: read headers only (fast); with False, samples are decoded and checked too (NaN/inf).
            Files of a channel that overlap are decoded either way, to compare their samples.

    Returns:
        The inventory: valid items, dead letters (``source`` is the file path), known coordinates and
        warnings (merged duplicates, symlinks inside the folder).

    Raises:
        OSError: the folder itself does not exist or cannot be listed.
    """
    return scan_walk(walk_folder(path), params, headonly=headonly)


def scan_walk(walk: Walk, params: ProcessingParams, *, headonly: bool = True) -> Inventory:
    """The inventory of the files of a walk (see :func:`scan_folder`); refused entries become dead letters."""
    dead = [DeadLetter(shown(n.path), n.reason) for n in walk.refused]
    warnings = [InputWarning(shown(n.path), n.reason) for n in walk.skipped]
    items, coords = [], {}
    for entry in walk.files:
        file = entry.path
        if is_metadata(file):
            try:
                coords.update(read_station_file(file))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                dead.append(DeadLetter(shown(file), f"unreadable station metadata: {exc}"))
            continue
        try:
            items.append(scan_file(file, params, headonly=headonly))
        except (DspError, OSError) as exc:
            dead.append(DeadLetter(shown(file), f"{type(exc).__name__}: {exc}"))
    kept = resolve_overlaps(items, dead, warnings)
    return Inventory(tuple(kept), tuple(dead), coords, tuple(warnings))


def resolve_overlaps(items: Sequence[RawItem], dead: list[DeadLetter], warnings: list[InputWarning]) -> list[RawItem]:
    """Compare the samples of files of one channel that overlap; only those files are decoded.

    Identical overlaps are kept (the windows merge them) with a warning; files whose overlap differs are all
    dead-lettered, each naming the files it conflicts with, since nothing says which one is right.

    Args:
        items: the valid files of a scan.
        dead: receives the dead letters (a file that fails to decode fully, conflicting files).
        warnings: receives one warning per identical overlap.

    Returns:
        The items to use, in their original order.
    """
    gone: set[int] = set()
    overlaps = find_overlaps([Span(it.seed_id, it.start, it.end) for it in items])
    for _, of_channel in groupby(overlaps, key=lambda o: items[o.i].seed_id):  # find_overlaps groups channels
        gone |= _judge_channel(items, list(of_channel), dead, warnings)
    return [it for k, it in enumerate(items) if k not in gone]


def _judge_channel(
    items: Sequence[RawItem], overlaps: list[Overlap], dead: list[DeadLetter], warnings: list[InputWarning]
) -> set[int]:
    """Judge the overlaps of one channel (see :func:`resolve_overlaps`); returns the files not to use.

    Decoded samples live only while their channel is judged, so a folder that holds every day file twice
    never has more than one channel's files in memory.
    """
    decoded: dict[int, obspy.Stream | None] = {}
    conflicts: dict[int, list[str]] = defaultdict(list)
    identical = []
    for o in overlaps:
        a, b = _decoded(items, o.i, decoded, dead), _decoded(items, o.j, decoded, dead)
        problem = None if a is None or b is None else sample_conflict(a, b)
        if problem:
            conflicts[o.i].append(f"{shown(items[o.j].source)} ({problem})")
            conflicts[o.j].append(f"{shown(items[o.i].source)} ({problem})")
        elif a is not None and b is not None:
            identical.append(o)
    for k, others in sorted(conflicts.items()):
        reason = f"conflicting samples: {items[k].seed_id} overlaps {'; '.join(others)}; neither file is used"
        dead.append(DeadLetter(shown(items[k].source), reason))
    gone = set(conflicts) | {k for k, stream in decoded.items() if stream is None}
    for o in (o for o in identical if o.i not in gone and o.j not in gone):
        note = f"{items[o.i].seed_id} overlaps {shown(items[o.j].source)} for {o.seconds:g} s with identical samples"
        warnings.append(InputWarning(shown(items[o.i].source), f"{note}: merged"))
    return gone


def _decoded(
    items: Sequence[RawItem], k: int, cache: dict[int, obspy.Stream | None], dead: list[DeadLetter]
) -> obspy.Stream | None:
    """The samples of ``items[k]``, decoded once; None (and a dead letter) when they cannot be decoded."""
    if k not in cache:
        try:
            cache[k] = load_stream([items[k]])
        except (DspError, OSError) as exc:
            cache[k] = None
            dead.append(DeadLetter(shown(items[k].source), f"{type(exc).__name__}: {exc}"))
    return cache[k]


def scan_metadata(path: str | Path) -> dict[str, Coordinates]:
    """Coordinates from every readable station metadata file of a folder, found by the same walk as the data.

    Unreadable files and refused entries are skipped here: :func:`scan_folder` is what dead-letters them.
    """
    coords: dict[str, Coordinates] = {}
    for entry in walk_folder(path).files:
        if is_metadata(entry.path):
            try:
                coords.update(read_station_file(entry.path))
            except (OSError, ValueError, KeyError, TypeError):
                log.warning("unreadable station metadata %s", shown(entry.path))
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
    stream = decode_mseed(read_input(file), shown(file), headonly=headonly)
    seed_id = check_stream(stream, shown(file), params, data=not headonly)
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
        stream += decode_mseed(read_input(item.source), shown(item.source))
    return stream


def read_station_file(file: Path) -> dict[str, Coordinates]:
    """Coordinates from ``stations.csv`` or a StationXML file, keyed by ``NET.STA`` (CSV: the id as written).

    Raises:
        OSError, ValueError, KeyError, TypeError: unreadable or malformed metadata, or a coordinate that is
            not a finite number (``nan`` parses as a float, and JSON cannot carry it to the workers).
    """
    data = read_input(file)
    if file.suffix.lower() == ".xml":
        inv = obspy.read_inventory(io.BytesIO(data))
        coords = {
            f"{net.code}.{sta.code}": Coordinates(sta.latitude, sta.longitude, sta.elevation or 0.0)
            for net in inv
            for sta in net
        }
    else:
        coords = {
            row["id"].strip(): Coordinates(
                float(row["latitude"]), float(row["longitude"]), float(row.get("elevation_m") or 0.0)
            )
            for row in csv.DictReader(io.StringIO(data.decode("utf-8"), newline=""))
        }
    for name, c in coords.items():
        if not all(math.isfinite(v) for v in (c.latitude, c.longitude, c.elevation_m)):
            raise ValueError(f"{name}: coordinates must be finite numbers, not {c}")
    return coords
