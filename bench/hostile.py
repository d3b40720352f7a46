"""A hostile input folder: good data under odd names, and every kind of bad file an operator meets.

Built from one ``xcorrflow synth`` deployment of N + 3 stations:

- the first N stations are **good**: each file under an odd name (spaces, unicode, ``..``, glob characters,
  very long names, nested folders whose names hold ``..``); their pairs must all come out exact;
- station N+1 lives **outside** the folder and is reachable only through symlinks (a file link to its first
  hour, a folder link to all its hours); it must not be read, so none of its pairs may appear;
- station N+2 has its first hour twice, **identical** (merged with a warning, or dead-lettered): its pairs
  may appear and must then be exact;
- station N+3 has its first hour twice, **conflicting** (the second copy is shifted), and its last hour
  truncated: it must be dead-lettered, so if its pairs appear they must still be exact;
- junk: an empty file, a truncated file, text named ``.mseed``, three bad SEED ids (``*``, ``/``, ``..``)
  and a symlink to ``/etc/hostname``.

:func:`check_hostile` says which bad file got no dead letter with a reason, and whether a symlink was read.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import obspy

from bench.checks import Expectation
from dsp.synthetic.stations import SynthConfig, synthesise

SYMLINK_WORDS = ("symlink", "link", "outside")  # a dead letter that says why a link was refused
OUTSIDE_TARGET = Path("/etc/hostname")


@dataclass(frozen=True)
class HostileInput:
    """The folder, the synth truth of every station, and what each bad entry is."""

    folder: Path
    outside: Path
    truth: dict[str, Any]
    good: tuple[str, ...]
    maybe: tuple[str, ...]
    bad: dict[str, str]  # entry (path relative to the folder, as it appears in a dead letter) -> what it is
    links: tuple[str, ...]  # the bad entries that are symlinks
    outside_files: tuple[str, ...]  # what the outside folder held when built (nothing may be added)

    def expectation(self) -> Expectation:
        """Pairs of the good stations are required; pairs with the duplicated channels are optional."""
        return Expectation.from_truth(self.truth, self.good, self.maybe)


def _odd_name(sid: str, hour: int, style: int) -> str:
    """One of seven odd names for a good file (all legal on Linux, at most 255 bytes)."""
    names = [
        f"with space {sid} h{hour}.mseed",
        f"ünï cødé 日本 {sid} {hour}.mseed",
        f"dots..{sid}..{hour}..mseed",
        f"{sid}-{hour}-".ljust(240, "x") + ".mseed",
        f"a..b/dir with space/{sid}_{hour}.mseed",
        f"glob[*]?{sid} {hour}.mseed",
        f"{sid}__h{hour}.mseed",
    ]
    return names[style % len(names)]


def build_hostile(dest: Path, stations: int = 12, hours: int = 2, seed: int = 3) -> HostileInput:
    """Write the hostile folder ``dest`` (and ``<dest>.outside`` beside it); see the module docstring."""
    staging, outside = dest.with_name(dest.name + ".staging"), dest.with_name(dest.name + ".outside")
    for path in (dest, staging, outside):
        shutil.rmtree(path, ignore_errors=True)
    truth = synthesise(SynthConfig(stations=stations + 3, hours=hours, rates=(50, 100), seed=seed), staging)
    ids = sorted(truth["stations"])
    good, (linked, dup, conflict) = ids[:stations], ids[stations:]
    files = {(sid, h): staging / f"{sid}__{_hour_id(truth, h)}.mseed" for sid in ids for h in range(hours)}
    dest.mkdir(parents=True)
    shutil.copy(staging / "stations.csv", dest / "stations.csv")
    for j, sid in enumerate(good):
        for h in range(hours):
            _copy(files[sid, h], dest / _odd_name(sid, h, j + h))
    bad = _links(dest, outside, [files[linked, h] for h in range(hours)])
    links = tuple(bad)
    for h in range(hours):
        _copy(files[dup, h], dest / f"dup-{h}-a.mseed")
    _copy(files[dup, 0], dest / "dup-0-b.mseed")
    _copy(files[conflict, 0], dest / "conflict-a.mseed")
    _shifted(files[conflict, 0], dest / "conflict-b.mseed")
    bad["conflict-b.mseed"] = "same channel and time as conflict-a.mseed, other samples"
    bad |= _junk(dest, files[conflict, hours - 1], files[good[0], 0])
    shutil.rmtree(staging)
    listing = _listing(outside)
    return HostileInput(dest, outside, truth, tuple(good), (dup, conflict), bad, links, listing)


def _hour_id(truth: dict[str, Any], hour: int) -> str:
    from dsp.windows import window_id

    return window_id(float(obspy.UTCDateTime(truth["start"])) + 3600 * hour)


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def _links(dest: Path, outside: Path, linked: list[Path]) -> dict[str, str]:
    """A file symlink and a folder symlink to a station outside, and a symlink to /etc/hostname."""
    (outside / "station").mkdir(parents=True)
    _copy(linked[0], outside / linked[0].name)
    for path in linked:
        _copy(path, outside / "station" / path.name)
    (dest / "linked-outside.mseed").symlink_to(outside / linked[0].name)
    (dest / "linked-folder").symlink_to(outside / "station", target_is_directory=True)
    (dest / "hostname.mseed").symlink_to(OUTSIDE_TARGET)
    return {
        "linked-outside.mseed": "symlink to a station file outside the folder",
        "linked-folder": "symlink to a folder outside the folder",
        "hostname.mseed": f"symlink to {OUTSIDE_TARGET}",
    }


def _shifted(src: Path, dst: Path) -> None:
    """The same channel and time span as ``src`` with its samples rolled by 37: a conflicting copy."""
    stream = obspy.read(str(src))
    for tr in stream:
        tr.data = np.roll(tr.data, 37)
    stream.write(str(dst), format="MSEED", encoding="STEIM2", reclen=4096)


def _junk(dest: Path, cut_from: Path, relabel_from: Path) -> dict[str, str]:
    """Empty, truncated and text files, and three files whose SEED ids break the grammar."""
    (dest / "empty.mseed").write_bytes(b"")
    (dest / "truncated.mseed").write_bytes(cut_from.read_bytes()[:700])
    (dest / "notes.mseed").write_text("this is not MiniSEED\n")
    bad = {
        "empty.mseed": "empty file",
        "truncated.mseed": "MiniSEED cut after 700 bytes",
        "notes.mseed": "text",
    }
    for name, (net, sta) in {
        "bad-star.mseed": ("XF", "S*1"),
        "bad-slash.mseed": ("X/", "S1"),
        "bad-dots.mseed": ("XF", ".."),
    }.items():
        stream = obspy.read(str(relabel_from))
        for tr in stream:
            tr.stats.network, tr.stats.station = net, sta
        stream.write(str(dest / name), format="MSEED", encoding="STEIM2", reclen=4096)
        bad[name] = f"SEED id {stream[0].id!r} outside the grammar"
    return bad


# --- checks ---------------------------------------------------------------------------------------------------


def check_hostile(hostile: HostileInput, report: dict[str, Any]) -> list[str]:
    """What the run did wrong with the bad entries (empty when nothing): a bad entry without a dead letter, a
    symlink dead-lettered for its *content* (so it was read), or a file written outside the folder."""
    letters = [(str(d.get("source", "")), str(d.get("reason", ""))) for d in report.get("dead_letters") or []]
    problems = []
    for entry, what in sorted(hostile.bad.items()):
        reasons = [reason for source, reason in letters if entry in source]
        if not reasons and not (entry.startswith("conflict") and _any_conflict(letters)):
            problems.append(f"{entry} ({what}): no dead letter")
        elif entry in hostile.links and not any(w in r.lower() for r in reasons for w in SYMLINK_WORDS):
            problems.append(f"{entry} ({what}) was read: {reasons[0][:120]}")
    if _listing(hostile.outside) != hostile.outside_files:
        problems.append(f"files appeared in {hostile.outside}")
    return problems


def _any_conflict(letters: list[tuple[str, str]]) -> bool:
    return any("conflict-" in source for source, _ in letters)


def _listing(folder: Path) -> tuple[str, ...]:
    return tuple(sorted(str(p.relative_to(folder)) for p in folder.rglob("*")))
