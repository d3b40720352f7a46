"""SEED id validation and the object-key fragments derived from it (DESIGN.md §5).

Storage keys are built only from ids that passed :func:`validate_seed_id`, so a crafted file name or header
can never make a key that escapes its prefix (no ``/``, ``..``, spaces or control characters can survive).
"""

from __future__ import annotations

from contracts.ids import PAIR_SEPARATOR, pair_problem, seed_id_problem, split_pair
from dsp.errors import InvalidSeedId


def validate_seed_id(seed_id: str) -> str:
    """Check that ``seed_id`` is ``NET.STA.LOC.CHA`` (see :func:`contracts.ids.seed_id_problem`).

    Args:
        seed_id: the candidate id, e.g. ``"YA.UV05.00.HHZ"``.

    Returns:
        The id unchanged, so the call can be used inline.

    Raises:
        InvalidSeedId: the id has the wrong shape or a forbidden character.
    """
    problem = seed_id_problem(seed_id)
    if problem:
        raise InvalidSeedId(repr(seed_id), problem)
    return seed_id


def split_seed_id(seed_id: str) -> tuple[str, str, str, str]:
    """Split a validated SEED id into (network, station, location, channel).

    Raises:
        InvalidSeedId: the id is malformed.
    """
    net, sta, loc, cha = validate_seed_id(seed_id).split(".")
    return net, sta, loc, cha


def pair_key(a: str, b: str) -> str:
    """The key fragment ``A__B`` of a pair; ids are validated and must be given in string order A < B.

    Raises:
        InvalidSeedId: an id is malformed, or the ids are equal or out of order.
    """
    problem = pair_problem(a, b)
    if problem:
        raise InvalidSeedId(f"{a}{PAIR_SEPARATOR}{b}", problem)
    return f"{a}{PAIR_SEPARATOR}{b}"


def parse_pair_key(key: str) -> tuple[str, str]:
    """Inverse of :func:`pair_key`: ``"A__B"`` → ``(A, B)``, validated.

    Raises:
        InvalidSeedId: the key is not two valid ids in order.
    """
    pair = split_pair(key)
    if pair is None:
        raise InvalidSeedId(repr(key), "not a pair key A__B of two SEED ids with A < B")
    return pair
