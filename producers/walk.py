"""Walk an input folder and read its files without ever leaving it.

The input folder is the user's, but what it links to is not: a symlink to a station elsewhere would add pairs
nobody asked for, and one to ``/etc/hostname`` would be read and quoted in a dead letter. So:

- the walk never follows a symlink, to a folder or to a file (``os.scandir`` + ``lstat``, no recursion);
- a symlink whose target lies **outside** the folder, a broken symlink or a loop is *refused*: it becomes a
  dead letter with a reason, and its target is never opened;
- a symlink whose target lies **inside** the folder is *skipped* with a warning: its target is scanned under
  its own path already (unless hidden), so reading the link too would double a channel;
- anything but a regular file (FIFO, socket, device) is refused unopened: opening a FIFO blocks for ever;
- hidden entries (``.name``) and the run's own outputs (``truth.json``, ``report.json``) are ignored silently.

:func:`read_input` opens with ``O_NOFOLLOW | O_NONBLOCK`` and checks the opened file is regular, so a file
swapped for a symlink or a FIFO between the walk and the read is refused too.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

IGNORED_NAMES = frozenset({"truth.json", "report.json"})
# O_NOFOLLOW: the last path component may not be a symlink. O_NONBLOCK: opening a FIFO returns at once (and is
# then refused by the regular-file check) instead of waiting for a writer. Both are 0 where the OS lacks them.
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True)
class Entry:
    """A regular file found by the walk: its path (under the root as given) and its size in bytes."""

    path: Path
    size: int


@dataclass(frozen=True)
class Note:
    """An entry the walk did not return, and why."""

    path: Path
    reason: str


@dataclass(frozen=True)
class Walk:
    """What :func:`walk_folder` found: files to read, entries refused (bad input), entries skipped (harmless)."""

    files: tuple[Entry, ...]
    refused: tuple[Note, ...] = ()
    skipped: tuple[Note, ...] = ()


@dataclass
class _Found:
    files: list[Entry] = field(default_factory=list)
    refused: list[Note] = field(default_factory=list)
    skipped: list[Note] = field(default_factory=list)


def is_ignored(name: str) -> bool:
    """True for hidden names and the run's own outputs, which the walk passes over without a word."""
    return name.startswith(".") or name in IGNORED_NAMES


def walk_folder(root: str | Path) -> Walk:
    """Every regular file under ``root``, found without following any symlink (see the module docstring).

    Args:
        root: the input folder (it may itself be a symlink: the folder is what the user named).

    Returns:
        The files in path order, plus the refused and skipped entries with their reasons.

    Raises:
        OSError: ``root`` itself cannot be resolved or listed.
    """
    top = Path(root)
    real_root = top.resolve(strict=True)
    found, pending = _Found(), [top]
    os.scandir(top).close()  # an unreadable root is the caller's error, not a dead letter
    while pending:
        folder = pending.pop()
        try:
            with os.scandir(folder) as entries:
                listed = sorted(entries, key=lambda e: e.name)
        except OSError as exc:
            found.refused.append(Note(folder, f"unreadable folder: {exc.strerror or exc}"))
            continue
        for entry in listed:
            if not is_ignored(entry.name):
                _classify(entry, real_root, found, pending)
    return Walk(
        tuple(sorted(found.files, key=_by_path)),
        tuple(sorted(found.refused, key=_by_path)),
        tuple(sorted(found.skipped, key=_by_path)),
    )


def _by_path(item: Entry | Note) -> str:
    return str(item.path)


def _classify(entry: os.DirEntry[str], real_root: Path, found: _Found, pending: list[Path]) -> None:
    """File one directory entry as a file to read, a folder to walk, or a refused/skipped note."""
    path = Path(entry.path)
    try:
        if entry.is_symlink():
            _classify_link(path, real_root, found)
        elif entry.is_dir(follow_symlinks=False):
            pending.append(path)
        elif entry.is_file(follow_symlinks=False):
            found.files.append(Entry(path, entry.stat(follow_symlinks=False).st_size))
        else:
            found.refused.append(Note(path, "not a regular file (FIFO, socket or device): not opened"))
    except FileNotFoundError:
        pass  # vanished while we looked: a later scan sees what replaced it


def _classify_link(path: Path, real_root: Path, found: _Found) -> None:
    """A symlink is never followed: refused when it leads outside the folder (or nowhere), else skipped."""
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        found.refused.append(Note(path, f"broken symlink or symlink loop: not followed ({exc})"))
        return
    kind = "folder" if target.is_dir() else "file"
    if not target.is_relative_to(real_root):
        found.refused.append(Note(path, f"symlink to a {kind} outside the input folder ({target}): not followed"))
    else:
        found.skipped.append(
            Note(path, f"symlink to a {kind} inside the input folder: not followed, its target is scanned as itself")
        )


def read_input(path: str | Path) -> bytes:
    """Read a whole input file, refusing anything that is not a regular file at the moment it is opened.

    Args:
        path: a file returned by :func:`walk_folder`.

    Returns:
        Its bytes.

    Raises:
        OSError: the file cannot be read, is (now) a symlink (``ELOOP``), or is not a regular file.
    """
    fd = os.open(path, _READ_FLAGS)
    with open(fd, "rb", closefd=True) as fh:
        mode = os.fstat(fh.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(f"{path} is not a regular file: not read")
        return fh.read()


def shown(path: str | Path) -> str:
    """A path as text that any UTF-8 writer accepts: undecodable name bytes become ``\\xNN`` escapes.

    Linux file names are bytes; Python hands undecodable ones over as lone surrogates, which JSON encoders of
    events refuse. Use it for display (dead letters, reports, event ``source`` fields), never to reopen a file.
    """
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
