"""Object keys: validation and safe joining. Which keys exist (the layout of DESIGN.md §5) is :mod:`storage.layout`.

Why so strict: keys become S3 object names *and* file paths (the local store, versitygw's posix backend). A
key must never be able to leave its prefix, whatever a file name, a SEED id or a window id contains. So a key
is ``/``-separated segments, each drawn from a conservative charset, and nothing else:

- no empty key, no leading ``/`` (absolute), no empty segment (``a//b``), no trailing ``/``;
- no segment starting with ``.``: that rules out ``.`` and ``..`` and keeps hidden names free for a store's
  own bookkeeping (temporary files, metadata side-cars), which therefore can never collide with an object;
- segments use only ``[A-Za-z0-9._-]`` (so no backslash, control character, space or non-ASCII byte; no ``+``
  either, which S3 event notifications and some tools decode as a space);
- at most 200 bytes per segment (the file-system limit is 255, and a store's hidden side-car names add a few
  bytes to an object's name) and 1024 bytes per key (the S3 limit).

:mod:`storage.layout` builds keys from SEED ids and window ids checked here (the grammar of :mod:`contracts.ids`),
so a key derived from them is correct by construction.
"""

from __future__ import annotations

import re

from contracts.ids import seed_id_problem, window_id_problem
from storage.errors import InvalidKey

MAX_KEY_BYTES = 1024
MAX_SEGMENT_BYTES = 200  # NAME_MAX is 255; room is left for '.meta-<name>.json' side-cars

_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def validate_segment(segment: str, *, key: str | None = None) -> str:
    """Check one path segment (no ``/``) against the key rules.

    Args:
        segment: the segment to check.
        key: the whole key, only to make the error message useful.

    Returns:
        The segment, unchanged.

    Raises:
        InvalidKey: the segment is empty, hidden (starts with ``.``), too long, or has a forbidden character.
    """
    shown = segment if key is None else key
    if not segment:
        raise InvalidKey(shown, "empty path segment")
    if segment.startswith("."):
        raise InvalidKey(shown, f"segment {segment!r} starts with '.' ('.', '..' and hidden names are reserved)")
    if not _SEGMENT.fullmatch(segment):
        raise InvalidKey(shown, f"segment {segment!r} has a character outside [A-Za-z0-9._-]")
    if len(segment.encode()) > MAX_SEGMENT_BYTES:
        raise InvalidKey(shown, f"segment longer than {MAX_SEGMENT_BYTES} bytes")
    return segment


def validate_key(key: str) -> str:
    """Check an object key.

    Args:
        key: e.g. ``"prep/20240101T000000Z/XX.STA..HHZ.npz"``.

    Returns:
        The key, unchanged (valid keys are already canonical).

    Raises:
        InvalidKey: the key breaks a rule in the module docstring.
    """
    if not isinstance(key, str):
        raise InvalidKey(repr(key), "a key must be a str")
    if not key:
        raise InvalidKey(key, "empty key")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidKey(key[:64] + "...", f"longer than {MAX_KEY_BYTES} bytes")
    if key.startswith("/"):
        raise InvalidKey(key, "absolute keys are not allowed")
    for segment in key.split("/"):
        validate_segment(segment, key=key)
    return key


def validate_prefix(prefix: str) -> str:
    """Check a directory prefix and return it in canonical form.

    A prefix is a directory: ``"prep/a"`` and ``"prep/a/"`` both mean the keys under ``prep/a/``, never
    ``prep/ab``. The empty prefix means the whole store.

    Args:
        prefix: ``""`` or a key-like path with an optional trailing ``/``.

    Returns:
        ``""`` or the prefix ending in exactly one ``/``.

    Raises:
        InvalidKey: the prefix (without its trailing ``/``) is not a valid key.
    """
    if prefix == "":
        return ""
    stripped = prefix[:-1] if prefix.endswith("/") else prefix
    validate_key(stripped)
    if len(prefix.encode()) >= MAX_KEY_BYTES:
        raise InvalidKey(prefix, "prefix leaves no room for an object name")
    return stripped + "/"


def key_under(prefix: str, key: object, *, segments: int | None = None) -> tuple[str, ...]:
    """Check that a key named by an event lies strictly under ``prefix``, and split what follows it.

    For consumers: an event is only a claim, so before reading ``key`` check that it is a valid key inside the
    directory the event's kind allows (e.g. ``<ns>prep/`` for a product), never ``<ns>prep/../x`` or another
    run's namespace. Valid keys have no ``.``/``..``/empty segment, so "starts with the canonical prefix" is
    enough to be inside it.

    Args:
        prefix: the expected directory (``""`` = the whole store; a trailing ``/`` is optional).
        key: the key taken from the event (any type: a non-str is refused, not trusted).
        segments: when given, the exact number of segments the key must have below the prefix.

    Returns:
        The segments of the key below the prefix, e.g. ``key_under("ns/prep/", "ns/prep/W/X.npz")`` is
        ``("W", "X.npz")``.

    Raises:
        InvalidKey: the prefix or the key is malformed, the key is not under the prefix (or is the prefix
            itself), or it has another number of segments than ``segments``.
    """
    directory = validate_prefix(prefix)
    if not isinstance(key, str):
        raise InvalidKey(repr(key)[:64], "a key must be a str")
    validate_key(key)
    if not key.startswith(directory):
        raise InvalidKey(key, f"not under {directory!r}")
    parts = tuple(key[len(directory) :].split("/"))
    if segments is not None and len(parts) != segments:
        raise InvalidKey(key, f"expected {segments} segment(s) under {directory!r}, found {len(parts)}")
    return parts


def join(prefix: str, *parts: str) -> str:
    """Build a key from a directory prefix and single segments, validating every piece.

    Each part must be one segment: a ``/`` inside a part is rejected, so a file name cannot add directories.

    Args:
        prefix: a directory prefix (``""``, ``"prep"`` or ``"prep/"`` ...).
        *parts: one or more segments.

    Returns:
        The validated key.

    Raises:
        InvalidKey: the prefix or any part is invalid, or no part is given.
    """
    if not parts:
        raise InvalidKey(prefix, "join needs at least one part after the prefix")
    for part in parts:
        if not isinstance(part, str) or "/" in part:
            raise InvalidKey(str(part), "a part must be a single path segment without '/'")
        validate_segment(part)
    return validate_key(validate_prefix(prefix) + "/".join(parts))


# --- identifiers --------------------------------------------------------------------------------------------


def validate_seed_id(seed_id: str) -> str:
    """Check a SEED id ``NET.STA.LOC.CHA`` (the grammar of :mod:`contracts.ids`).

    Raises:
        InvalidKey: the id is malformed.
    """
    problem = seed_id_problem(seed_id)
    if problem:
        raise InvalidKey(str(seed_id), problem)
    return seed_id


def validate_window_id(window_id: str) -> str:
    """Check a window id ``YYYYMMDDTHHMMSSZ`` that is also a real UTC instant.

    Raises:
        InvalidKey: wrong shape or impossible date/time.
    """
    problem = window_id_problem(window_id)
    if problem:
        raise InvalidKey(str(window_id), problem)
    return window_id
