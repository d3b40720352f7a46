"""SEED id validation, pair keys and window ids."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.errors import XcorrflowError
from dsp.errors import InvalidSeedId, InvalidWindowId
from dsp.seed import pair_key, parse_pair_key, split_seed_id, validate_seed_id
from dsp.windows import window_id, window_start, windows_in_span

CODE = st.text(alphabet="ABCXYZ019_-", min_size=1, max_size=8)


@pytest.mark.parametrize("sid", ["YA.UV05.00.HHZ", "XF.S000..BHZ", "a-b.c_d.--.Z"])
def test_valid_seed_ids_pass(sid: str) -> None:
    assert validate_seed_id(sid) == sid


@pytest.mark.parametrize(
    "sid",
    [
        "../../etc.passwd..Z",
        "XX.STA/..00.HHZ",
        "XX..00.HHZ",
        "XX.STA.00",
        "XX.STA.00.HHZ.EXTRA",
        "XX.STA.00.HH Z",
        "XX.STA.00.HHZ\n",
        "XX.STAT\u00c9.00.HHZ",
        "XX.TOOLONGSTA.00.HHZ",
        "",
        "XX.STA.00.HHZ/../../x",
    ],
)
def test_malformed_and_traversal_seed_ids_are_rejected(sid: str) -> None:
    with pytest.raises(InvalidSeedId) as info:
        validate_seed_id(sid)
    assert isinstance(info.value, XcorrflowError)


def test_split_seed_id_keeps_empty_location() -> None:
    assert split_seed_id("XF.S000..BHZ") == ("XF", "S000", "", "BHZ")


@given(CODE, CODE, CODE, CODE, CODE)
def test_pair_key_round_trips_or_refuses(net: str, sta: str, loc: str, cha: str, sta2: str) -> None:
    ids = sorted({f"{net}.{sta}.{loc}.{cha}", f"{net}.{sta2}.{loc}.{cha}"})
    if len(ids) < 2:
        return
    a, b = ids
    try:
        key = pair_key(a, b)
    except InvalidSeedId:
        assert "_" in a + b  # only underscores can make a key ambiguous
        return
    assert parse_pair_key(key) == (a, b)


def test_pair_key_demands_string_order() -> None:
    with pytest.raises(InvalidSeedId):
        pair_key("XF.S001.00.HHZ", "XF.S000.00.HHZ")
    with pytest.raises(InvalidSeedId):
        pair_key("XF.S000.00.HHZ", "XF.S000.00.HHZ")


def test_parse_pair_key_rejects_traversal() -> None:
    with pytest.raises(InvalidSeedId):
        parse_pair_key("../XF.S000.00.HHZ__XF.S001.00.HHZ")


def test_window_id_format_and_alignment() -> None:
    t = 1283349600.0 + 1799.5  # 2010-09-01T14:29:59.5Z
    assert window_id(t) == "20100901T140000Z"
    assert window_start("20100901T140000Z") == 1283349600.0
    assert window_id(t, 86400.0) == "20100901T000000Z"


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False), st.sampled_from([600.0, 3600.0, 86400.0]))
def test_window_id_contains_its_time(t: float, length: float) -> None:
    start = window_start(window_id(t, length), length)
    assert start <= t < start + length


@pytest.mark.parametrize("wid", ["20100901T140000", "2010-09-01T14:00:00Z", "20101301T000000Z", "../x", ""])
def test_malformed_window_ids_are_rejected(wid: str) -> None:
    with pytest.raises(InvalidWindowId):
        window_start(wid)


def test_unaligned_window_id_is_rejected() -> None:
    with pytest.raises(InvalidWindowId):
        window_start("20100901T143000Z", 3600.0)


def test_windows_in_span_day_and_boundaries() -> None:
    day = 1283299200.0  # 2010-09-01T00:00:00Z
    assert len(windows_in_span(day, day + 86400)) == 24
    assert windows_in_span(day + 10, day + 3600 + 1e-8) == ["20100901T000000Z"]
    assert windows_in_span(day + 3599, day + 3601) == ["20100901T000000Z", "20100901T010000Z"]
    assert windows_in_span(day, day) == []
