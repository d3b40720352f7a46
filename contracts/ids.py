"""The grammar of the ids that object keys are built from: SEED ids, window ids and pair names.

One definition for every package: storage validates keys with it, the DSP core validates headers with it,
and each wraps a problem in its own typed error. Keys are derived from ids that passed these checks only, so
no file name or header can make a key that escapes its prefix.
"""

from __future__ import annotations

import re
from datetime import datetime

PAIR_SEPARATOR = "__"
WINDOW_FORMAT = "%Y%m%dT%H%M%SZ"
_CODE = r"[A-Za-z0-9_-]"
# NET, STA and CHA are 1-8 characters, LOC 0-8 ("NET.STA..CHA").
SEED_ID_RE = re.compile(rf"({_CODE}{{1,8}})\.({_CODE}{{1,8}})\.({_CODE}{{0,8}})\.({_CODE}{{1,8}})")
WINDOW_ID_RE = re.compile(r"[0-9]{8}T[0-9]{6}Z")  # not \d: it also matches non-ASCII digits
SEED_ID_MAX_CHARS = 8 + 1 + 8 + 1 + 8 + 1 + 8  # the longest id SEED_ID_RE accepts, for cheap length bounds
WINDOW_ID_CHARS = len("YYYYMMDDTHHMMSSZ")


def seed_id_problem(seed_id: object) -> str | None:
    """Why ``seed_id`` is not a valid SEED id, or None when it is.

    Besides the charset, an id may not contain ``__`` nor start or end with ``_``, so that a pair name
    ``A__B`` always splits one way.
    """
    if not isinstance(seed_id, str) or not SEED_ID_RE.fullmatch(seed_id):  # fullmatch: no trailing newline
        return "not a SEED id NET.STA.LOC.CHA of [A-Za-z0-9_-] codes (NET, STA, CHA 1-8, LOC 0-8 long)"
    if PAIR_SEPARATOR in seed_id or seed_id.startswith("_") or seed_id.endswith("_"):
        return "a SEED id may not contain '__' or start/end with '_' (pair names use '__')"
    return None


def window_id_problem(window_id: object) -> str | None:
    """Why ``window_id`` is not a window id ``YYYYMMDDTHHMMSSZ`` of a real UTC instant, or None."""
    if not isinstance(window_id, str) or not WINDOW_ID_RE.fullmatch(window_id):
        return "not a window id YYYYMMDDTHHMMSSZ"
    try:
        datetime.strptime(window_id, WINDOW_FORMAT)
    except ValueError as exc:
        return f"not a real UTC date/time: {exc}"
    return None


def pair_problem(a: str, b: str) -> str | None:
    """Why ``(a, b)`` cannot be named ``A__B``, or None (both valid SEED ids and ``a < b``)."""
    problem = seed_id_problem(a) or seed_id_problem(b)
    if problem:
        return problem
    if not a < b:
        return "pair ids must be distinct and in string order A < B"
    return None


def split_pair(name: str) -> tuple[str, str] | None:
    """``"A__B"`` → ``(A, B)`` when it names a valid ordered pair, else None."""
    a, sep, b = name.partition(PAIR_SEPARATOR)
    if not sep or pair_problem(a, b):
        return None
    return a, b
