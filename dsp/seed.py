"""SEED id validation and the object-key fragments derived from it (DESIGN.md §5).

Storage keys are built only from ids that passed :func:`validate_seed_id`, so a crafted file name or header
can never make a key that escapes its prefix (no ``/``, ``..``, spaces or control characters can survive).
"""

from __future__ import annotations

import re

from dsp.errors import InvalidSeedId

_CODE = r"[A-Za-z0-9_-]"
# NET and STA and CHA must be non-empty; LOC may be empty ("NET.STA..CHA").
_SEED_RE = re.compile(rf"^({_CODE}{{1,8}})\.({_CODE}{{1,8}})\.({_CODE}{{0,8}})\.({_CODE}{{1,8}})$")
PAIR_SEPARATOR = "__"


def validate_seed_id(seed_id: str) -> str:
    """Check that ``seed_id`` is ``NET.STA.LOC.CHA`` made of ``[A-Za-z0-9_-]`` (LOC may be empty).

    Args:
        seed_id: the candidate id, e.g. ``"YA.UV05.00.HHZ"``.

    Returns:
        The id unchanged, so the call can be used inline.

    Raises:
        InvalidSeedId: the id has the wrong shape or a forbidden character.
    """
    # fullmatch, not match: "$" would accept a trailing newline
    if not isinstance(seed_id, str) or not _SEED_RE.fullmatch(seed_id):
        raise InvalidSeedId(repr(seed_id), "not a SEED id NET.STA.LOC.CHA of [A-Za-z0-9_-] codes")
    return seed_id


def split_seed_id(seed_id: str) -> tuple[str, str, str, str]:
    """Split a validated SEED id into (network, station, location, channel).

    Raises:
        InvalidSeedId: the id is malformed.
    """
    match = _SEED_RE.fullmatch(validate_seed_id(seed_id))
    assert match is not None  # validate_seed_id guarantees it
    net, sta, loc, cha = match.groups()
    return net, sta, loc, cha


def pair_key(a: str, b: str) -> str:
    """The key fragment ``A__B`` of a pair; ids are validated and must be given in string order A < B.

    Raises:
        InvalidSeedId: an id is malformed, the ids are equal or out of order, or (codes may contain ``_``) the
            key could not be split back unambiguously.
    """
    validate_seed_id(a)
    validate_seed_id(b)
    key = f"{a}{PAIR_SEPARATOR}{b}"
    if not a < b:
        raise InvalidSeedId(key, "pair ids must be distinct and in string order A < B")
    if parse_pair_key(key) != (a, b):
        raise InvalidSeedId(key, "ambiguous pair key (underscores next to the separator)")
    return key


def parse_pair_key(key: str) -> tuple[str, str]:
    """Inverse of :func:`pair_key`: ``"A__B"`` → ``(A, B)``, validated.

    Raises:
        InvalidSeedId: the key is not two valid ids in order.
    """
    parts = key.split(PAIR_SEPARATOR)
    # "__" can occur inside a code (underscores are allowed), so accept only an unambiguous split.
    candidates = [(PAIR_SEPARATOR.join(parts[:i]), PAIR_SEPARATOR.join(parts[i:])) for i in range(1, len(parts))]
    valid = [c for c in candidates if _SEED_RE.fullmatch(c[0]) and _SEED_RE.fullmatch(c[1]) and c[0] < c[1]]
    if len(valid) != 1:
        raise InvalidSeedId(repr(key), "not an unambiguous pair key A__B of two SEED ids")
    return valid[0]
