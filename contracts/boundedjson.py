"""Bounded JSON parsing for messages that anyone can publish (Kafka events, S3 bucket notifications).

``json.loads`` recurses once per level of nesting, so a record of 100,000 ``[`` raises ``RecursionError``, which
no worker expects, and it accepts ``NaN``, ``Infinity``, integers of thousands of digits and lone UTF-16
surrogates (which later fail to re-encode). :func:`load_bounded_json` checks the cheap things first, in this
order, and only then parses:

1. the type and size of the raw bytes;
2. strict UTF-8 (RFC 8259; ``json.loads`` would also guess UTF-16 and UTF-32 from bytes);
3. the nesting depth, with a linear scan that does not recurse;
4. the parse itself, refusing ``NaN``/``Infinity``, numbers outside 64 bits or not finite, and duplicate keys
   (which value a reader keeps is undefined across tools, so a duplicate is ambiguous, not harmless);
5. strings that hold a lone surrogate (``"\\ud800"``), which no UTF-8 writer can emit again.

Every refusal is a :class:`contracts.errors.JsonRefused` with a reason; nothing else escapes for any bytes.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from contracts.errors import JsonRefused

INT64_MAX = 2**63 - 1  # Kafka offsets and object sizes are Java longs; nothing on the wire needs more
_INT64_MAX_DIGITS = len(str(INT64_MAX))  # checked before int() so a 4,000-digit literal costs nothing

_ESCAPE = re.compile(r"\\.", re.DOTALL)  # one JSON escape: a backslash and the character after it
_STRING = re.compile(r'"[^"]*"')  # a string once its escapes are gone: no quote inside
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # a valid pair is already one astral character after parsing


def load_bounded_json(raw: object, *, max_bytes: int, max_depth: int) -> Any:
    """Parse ``raw`` as one JSON document within the given bounds.

    Args:
        raw: the message value; anything but ``bytes``/``bytearray`` is refused.
        max_bytes: the largest accepted size in bytes.
        max_depth: the deepest accepted nesting of arrays and objects (``{}`` is 1, ``{"a": []}`` is 2).

    Returns:
        The parsed value (dict, list, str, int, float, bool or None).

    Raises:
        JsonRefused: the bytes break a bound or are not valid JSON; ``reason`` says which.
    """
    if not isinstance(raw, bytes | bytearray):
        raise JsonRefused(f"not bytes but {type(raw).__name__}")
    if len(raw) > max_bytes:
        raise JsonRefused(f"{len(raw)} bytes is more than the {max_bytes} accepted")
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonRefused(f"not UTF-8: {exc}") from exc
    depth = nesting_depth(text, max_depth)
    if depth > max_depth:
        raise JsonRefused(f"nested deeper than {max_depth} levels")
    data = _parse(text)
    _refuse_lone_surrogates(data)
    return data


def nesting_depth(text: str, limit: int) -> int:
    """The deepest nesting of ``[``/``{`` outside strings, counting stops as soon as it passes ``limit``.

    Linear in ``len(text)`` and never recursive. Escapes are removed first, so that what remains of each string
    is a quote, non-quotes and a quote: no regex here can backtrack. For valid JSON the count is exact. For
    invalid JSON it is exact up to the first syntax error, which is as far as the parser ever recurses, so the
    parser never goes deeper than this says.

    Args:
        text: the JSON text.
        limit: stop counting (and return ``limit + 1``) as soon as the depth passes it.

    Returns:
        The maximal depth, or ``limit + 1`` when it passes ``limit``.
    """
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", _ESCAPE.sub("", text)))
    depth = deepest = 0
    for char in brackets:
        depth += 1 if char in "[{" else -1
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                break
    return deepest


def _parse(text: str) -> Any:
    """``json.loads`` with the hooks that refuse non-finite, oversized and ambiguous values."""
    try:
        return json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_int=_bounded_int,
            parse_float=_finite_float,
            object_pairs_hook=_unique_keys,
        )
    except JsonRefused:
        raise
    # RecursionError cannot happen after the depth check; it is caught anyway so that a mistake in that check
    # still costs one dead letter and not a worker.
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise JsonRefused(f"not JSON: {exc}") from exc


def _refuse_constant(name: str) -> Any:
    raise JsonRefused(f"{name} is not a JSON number")


def _bounded_int(literal: str) -> int:
    digits = literal.lstrip("-")
    if len(digits) > _INT64_MAX_DIGITS or abs(value := int(literal)) > INT64_MAX:
        raise JsonRefused(f"integer {literal[:24]}{'...' if len(literal) > 24 else ''} is outside 64 bits")
    return value


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise JsonRefused(f"number {literal[:24]}{'...' if len(literal) > 24 else ''} overflows a double")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise JsonRefused(f"duplicate key {key[:64]!r}")
        seen.add(key)
    return dict(pairs)


def _refuse_lone_surrogates(data: Any) -> None:
    """Walk the parsed value without recursion and refuse any string holding a lone surrogate."""
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if _LONE_SURROGATE.search(value):
                raise JsonRefused("a string holds a lone UTF-16 surrogate escape")
        elif isinstance(value, dict):
            stack.extend(value)
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
