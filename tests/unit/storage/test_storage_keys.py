"""Key rules (the layout itself: test_storage_layout.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage import InvalidKey, keys
from tests.storage_contract import BAD_KEYS

W = "20100901T000000Z"
A = "YA.UV05..HHZ"


@pytest.mark.parametrize(
    "key",
    ["a", "prep/20100901T000000Z/YA.UV05..HHZ.npz", "a-b_c.d/e", "x" * 200, "/".join(["abc"] * 250), "a..b"],
)
def test_valid_keys(key: str) -> None:
    assert keys.validate_key(key) == key


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
def test_invalid_keys(key: str) -> None:
    with pytest.raises(InvalidKey):
        keys.validate_key(key)


def test_invalid_key_is_a_value_error_with_a_reason() -> None:
    with pytest.raises(ValueError, match=r"starts with '\.'") as caught:
        keys.validate_key("a/../b")
    assert caught.value.key == "a/../b"


def test_key_length_limits_are_in_bytes() -> None:
    assert keys.validate_key("/".join(["a" * 200] * 5) + "/" + "b" * 19)  # exactly 1024 bytes
    with pytest.raises(InvalidKey, match="1024"):
        keys.validate_key("/".join(["a" * 200] * 5) + "/" + "b" * 20)
    with pytest.raises(InvalidKey, match="segment longer"):
        keys.validate_key("a" * (keys.MAX_SEGMENT_BYTES + 1))


def test_prefixes_are_directories() -> None:
    assert keys.validate_prefix("") == ""
    assert keys.validate_prefix("prep/a") == "prep/a/"
    assert keys.validate_prefix("prep/a/") == "prep/a/"
    for bad in ("/", "prep//", "../x", "prep/a//"):
        with pytest.raises(InvalidKey):
            keys.validate_prefix(bad)


def test_join_validates_every_part() -> None:
    assert keys.join("prep", W, "x.npz") == f"prep/{W}/x.npz"
    assert keys.join("", "a") == "a"
    assert keys.join("runs/r1/", "report.json") == "runs/r1/report.json"
    for parts in (("a/b",), ("..",), ("",), ("a\\b",), ()):
        with pytest.raises(InvalidKey):
            keys.join("prep", *parts)
    with pytest.raises(InvalidKey):
        keys.join("../prep", "x")


@pytest.mark.parametrize("seed_id", ["YA.UV05..HHZ", "XX.STA.00.BHZ", "N.S.--.C", "12345678.S.L.C", "X_Y.S-T.L.H_H_Z"])
def test_valid_seed_ids(seed_id: str) -> None:
    assert keys.validate_seed_id(seed_id) == seed_id


@pytest.mark.parametrize(
    "seed_id",
    [
        "",
        "YA.UV05.HHZ",  # three parts
        "YA.UV05...HHZ",  # five parts
        "YA..00.HHZ",  # empty station
        ".UV05..HHZ",  # empty network
        "YA.UV05..",  # empty channel
        "YA.UV/05..HHZ",
        "YA.UV05..HH Z",
        "YA.UV05..HHZ\n",
        "ABCDEFGHI.S..HHZ",  # network over 8 characters
        "YA.UV05..H__Z",  # '__' would make pair names ambiguous
        "_YA.UV05..HHZ",
        "YA.UV05..HHZ_",
        "Y\u00c4.UV05..HHZ",
    ],
)
def test_invalid_seed_ids(seed_id: str) -> None:
    with pytest.raises(InvalidKey):
        keys.validate_seed_id(seed_id)


def test_window_ids_must_be_real_instants() -> None:
    assert keys.validate_window_id(W) == W
    for bad in ("20100901T000000", "2010-09-01T00:00:00Z", "20101301T000000Z", "20100931T000000Z", "20100901T250000Z",
                "\u0662\u0660\u0661\u0660" + "0901T000000Z"):  # fmt: skip
        with pytest.raises(InvalidKey):
            keys.validate_window_id(bad)


def test_key_under_returns_the_segments_below_the_prefix() -> None:
    key = f"run1/prep/{W}/{A}.npz"
    assert keys.key_under("run1/prep/", key) == (W, f"{A}.npz")
    assert keys.key_under("run1/prep", key, segments=2) == (W, f"{A}.npz")  # the trailing '/' is optional
    assert keys.key_under("", "a") == ("a",)  # the empty prefix is the whole store


@pytest.mark.parametrize(
    "key",
    [
        f"run2/prep/{W}/{A}.npz",  # another namespace
        f"run1/prepx/{W}/{A}.npz",  # a sibling whose name starts like the prefix
        "run1/prep",  # the prefix itself
        f"run1/prep/../raw/{W}/{A}.mseed",  # climbs out
        f"run1/prep/{W}/../../raw/{A}.mseed",
        f"run1/prep//{A}.npz",
        f"/run1/prep/{W}/{A}.npz",
        f"run1/prep/{W}/.{A}.npz",  # hidden: a store's own bookkeeping
        f"run1/prep/{W}/caf\u00e9.npz",
        f"run1/prep/{W}/" + "x" * 1100,
        *[f"run1/prep/{bad}" for bad in BAD_KEYS],
    ],
    ids=repr,
)
def test_key_under_refuses_keys_outside_or_malformed(key: str) -> None:
    with pytest.raises(InvalidKey):
        keys.key_under("run1/prep/", key)


def test_key_under_refuses_other_shapes_and_types() -> None:
    with pytest.raises(InvalidKey, match="expected 2 segment"):
        keys.key_under("run1/prep/", f"run1/prep/{W}/sub/{A}.npz", segments=2)
    for not_a_key in (None, 42, [f"run1/prep/{W}/{A}.npz"], b"run1/prep/x"):
        with pytest.raises(InvalidKey, match="must be a str"):
            keys.key_under("run1/prep/", not_a_key)
    with pytest.raises(InvalidKey):
        keys.key_under("../run1/", "run1/x")


@given(st.text(max_size=60))
def test_key_under_accepts_only_keys_that_stay_inside(suffix: str) -> None:
    key = "ns/prep/" + suffix
    try:
        parts = keys.key_under("ns/prep/", key)
    except InvalidKey:
        return
    assert "/".join(parts) == suffix and all(p and not p.startswith(".") for p in parts)
    assert keys.validate_key(key) == key
