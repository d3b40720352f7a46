"""The stacker's per-window plan, free of Kafka and the store: readiness, accounting and its state record."""

from __future__ import annotations

import numpy as np

from consumers.stackplan import WindowPlan
from results.layout import pair_index
from results.manifest import FAILED, TaskManifest

W = "20240101T000000Z"
STATIONS = [f"XS.S{i}..HHZ" for i in range(4)]
REGISTRY = {s: i for i, s in enumerate(STATIONS)}


def _plan(n_common: dict[int, int] | None = None) -> WindowPlan:
    """Four stations, every row task received; ``n_common`` overrides a canonical pair's count (default 3)."""
    plan = WindowPlan(W)
    plan.set_expected(STATIONS)
    slot = 0
    for i in range(1, 4):
        pairs = [pair_index(i, j) for j in range(i)]
        counts = [(n_common or {}).get(p, 3) for p in pairs]
        plan.add_task(TaskManifest(W, STATIONS[i], slot, STATIONS[:i], pairs, counts, index=REGISTRY))
        slot += 64
    return plan


def test_a_group_is_ready_once_its_pairs_are_in_and_the_window_completes_when_all_are_stacked() -> None:
    plan = _plan()
    assert plan.ready(0, 6, REGISTRY) and not plan.complete(REGISTRY)
    pairs, slots = plan.todo(0, 6)
    assert pairs.tolist() == list(range(6)) and slots.tolist() == [0, 64, 65, 128, 129, 130]
    plan.include(pairs)
    assert not plan.ready(0, 6, REGISTRY) and plan.complete(REGISTRY)
    assert plan.accounted(REGISTRY) == (6, 0, 0, 6)


def test_unreadable_pairs_are_never_stacked_and_count_as_failed() -> None:
    plan = _plan({pair_index(3, 0): 0, pair_index(2, 1): FAILED})
    plan.mark_unreadable(np.array([pair_index(3, 1), pair_index(3, 2)]))
    pairs, _ = plan.todo(0, 6)
    assert pairs.tolist() == [0, 1]  # pair 2 failed in its task, 3 skipped, 4 and 5 unreadable
    plan.include(pairs)
    assert plan.accounted(REGISTRY) == (2, 1, 3, 6)
    assert plan.complete(REGISTRY) and not plan.ready(0, 6, REGISTRY)


def test_the_state_record_round_trips_and_reads_records_written_before_unreadable_existed() -> None:
    plan = _plan()
    plan.include(np.array([0, 2]))
    plan.mark_unreadable(np.array([5]))
    back = WindowPlan.from_record(W, plan.record())
    assert back.expected == STATIONS
    assert back.is_included(np.arange(6)).tolist() == [True, False, True, False, False, False]
    assert back.is_unreadable(np.arange(6)).tolist() == [False] * 5 + [True]
    old = WindowPlan.from_record(W, b'{"expected": null, "included": "", "done": false}')
    assert old.expected is None and not old.is_unreadable(np.arange(3)).any()


def test_a_station_without_a_registry_index_holds_back_the_pairs_it_could_take() -> None:
    plan = _plan()
    plan.set_expected([*STATIONS, "XS.NEW..HHZ"])
    assert plan.known_below(REGISTRY) == 6  # its index is at least 4: pairs from 4 * 3 / 2 on
    assert plan.ready(0, 6, REGISTRY) and not plan.ready(0, 7, REGISTRY)
    assert not plan.complete(REGISTRY)
