"""The stacker's state: stacks of some rows, and (window, pair) adds that are idempotent, across a restart."""

from __future__ import annotations

import numpy as np
import pytest

from consumers.stackstate import StackerState
from dsp.correlate import CcfBatch
from dsp.errors import CorruptProduct, DspError
from dsp.product import Coordinates
from dsp.stack import StackBank

FS, MAXLAG = 20.0, 50
STATIONS = [f"XS.S{i}..HHZ" for i in range(6)]


def row_batch(window: str, row: int, seed: int, stations: list[str] = STATIONS) -> CcfBatch:
    """The CCF batch of one correlator row task: station ``row`` against every later station."""
    pairs = tuple((stations[row], b) for b in stations[row + 1 :])
    ccfs = np.random.default_rng(seed).standard_normal((len(pairs), 2 * MAXLAG + 1)).astype(np.float32)
    return CcfBatch(window, FS, MAXLAG, pairs, ccfs, np.full(len(pairs), 3))


@pytest.mark.parametrize("phase", [False, True])
def test_stacks_of_some_rows_equal_the_whole_bank_stacks(phase: bool) -> None:
    bank = StackBank([], 2 * MAXLAG + 1, phase=phase)
    for i, w in enumerate(["20240101T000000Z", "20240101T010000Z"]):
        for r in range(5 - i):  # the second window misses a row: counts differ between pairs
            batch = row_batch(w, r, seed=10 * i + r)
            bank.add(batch.keys, batch.ccfs)
    rows = np.array([14, 0, 7])
    np.testing.assert_allclose(bank.stacks("linear", rows=rows), bank.linear()[rows])
    if phase:
        np.testing.assert_allclose(bank.stacks("pws", 3.0, rows=rows), bank.pws(3.0)[rows])
    else:
        with pytest.raises(DspError):
            bank.stacks("pws", rows=rows)


def test_a_window_is_added_once_whatever_brings_it_again() -> None:
    state = StackerState(FS, MAXLAG, phase=True)
    w = "20240101T000000Z"
    first = row_batch(w, 0, seed=1)
    assert state.add(first).size == 5
    assert state.add(first).size == 0, "the same object again"
    overlap = CcfBatch(w, FS, MAXLAG, first.pairs[:2], first.ccfs[:2] + 1, np.full(2, 3))
    assert state.add(overlap).size == 0, "the same pairs from another object"
    np.testing.assert_allclose(state.bank.linear()[:5], first.ccfs)
    assert state.add(row_batch("20240101T010000Z", 0, seed=2)).size == 5, "another window of the same pairs"
    assert state.bank.count.tolist() == [2] * 5
    assert state.included(w, first.keys[0]) and not state.included("20240101T020000Z", first.keys[0])


def test_a_window_completes_when_every_pair_is_in_or_skipped() -> None:
    state = StackerState(FS, MAXLAG, phase=False)
    w = "20240101T000000Z"
    state.expect(w, 6)  # 15 pairs
    for row in range(4):
        state.add(row_batch(w, row, seed=row))
    assert state.newly_complete() == []
    assert state.skip(w, f"{STATIONS[4]}__{STATIONS[5]}")
    assert not state.skip(w, f"{STATIONS[4]}__{STATIONS[5]}"), "a replayed skip is not new"
    assert not state.skip(w, f"{STATIONS[0]}__{STATIONS[1]}"), "a stacked pair is not skipped"
    assert state.newly_complete() == [w]
    assert state.newly_complete() == [], "reported once"


def test_state_round_trip_keeps_stacks_and_bookkeeping() -> None:
    state = StackerState(FS, MAXLAG, phase=True)
    w1, w2 = "20240101T000000Z", "20240101T010000Z"
    for row in range(5):
        state.add(row_batch(w1, row, seed=row))
    state.add(row_batch(w2, 2, seed=9))
    state.expect(w1, 6)
    state.skip(w2, f"{STATIONS[0]}__{STATIONS[1]}")
    state.newly_complete()
    state.coordinates = {STATIONS[0]: Coordinates(45.0, 7.0, 12.0), STATIONS[1]: None}
    again = StackerState.decode(state.encode())
    assert again.bank.keys == state.bank.keys
    np.testing.assert_array_equal(again.bank.count, state.bank.count)
    np.testing.assert_array_equal(again.bank.total, state.bank.total)
    assert again.bank.phasors is not None and state.bank.phasors is not None
    np.testing.assert_array_equal(again.bank.phasors, state.bank.phasors)
    assert again.coordinates == state.coordinates
    assert again.windows[w1].done and again.windows[w1].expected_pairs == 15 and not again.windows[w2].done
    assert again.add(row_batch(w2, 2, seed=9)).size == 0, "dedupe survives a restart"
    assert again.included(w2, f"{STATIONS[0]}__{STATIONS[1]}")
    assert again.add(row_batch(w2, 3, seed=4)).size == 2
    assert again.encode() != state.encode()


def test_state_rejects_foreign_ccfs_and_damaged_bytes() -> None:
    state = StackerState(FS, MAXLAG, phase=False)
    with pytest.raises(DspError):
        state.add(CcfBatch("20240101T000000Z", 10.0, MAXLAG, (), np.zeros((0, 2 * MAXLAG + 1)), np.zeros(0)))
    data = bytearray(state.encode())
    data[len(data) // 2] ^= 0xFF
    with pytest.raises(CorruptProduct):
        StackerState.decode(bytes(data))
