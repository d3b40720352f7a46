"""The stacker's per-window plan, free of Kafka and the store: readiness, accounting and its state record."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

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


def test_the_slot_index_says_what_each_slot_holds_from_the_plan_alone() -> None:
    plan = _plan({pair_index(3, 0): 0, pair_index(2, 1): FAILED})
    plan.mark_unreadable(np.array([pair_index(3, 1)]))
    shuffled = dict(reversed(list(REGISTRY.items())))  # the registry's order is not its indices'
    index = plan.slot_index(shuffled)
    assert len(index.pair_index) == 128 + 3  # the last task's slots, not its padding
    held = {slot: (int(p), a, b, int(n)) for slot, (p, a, b, n) in enumerate(
        zip(index.pair_index, index.a, index.b, index.n_common, strict=True)) if p >= 0}  # fmt: skip
    s = STATIONS
    assert held == {
        0: (0, s[0], s[1], 3),
        64: (1, s[0], s[2], 3),
        65: (2, s[1], s[2], FAILED),  # failed in its task
        128: (3, s[0], s[3], 0),  # skipped
        129: (4, s[1], s[3], FAILED),  # announced, but its chunk could not be read back
        130: (5, s[2], s[3], 3),
    }
    assert all(a == b == "" for p, a, b in zip(index.pair_index, index.a, index.b, strict=True) if p < 0)


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


def _reference(
    tasks: list[TaskManifest], expected: list[str], registry: dict[str, int], included: set[int], bad: set[int]
) -> tuple[dict[tuple[int, int], list[int]], tuple[int, int, int, int]]:
    """What a plan should answer, from plain sets: the todo of every group of 4 pairs, and the accounting."""
    received: dict[int, tuple[int, int]] = {}  # pair -> (slot, n_common); the first task to name a pair wins
    for m in tasks:
        for k, p in enumerate(m.pair_index):
            received.setdefault(p, (m.slot + k, m.n_common[k]))
    known = [registry[s] for s in expected if s in registry]
    want = {pair_index(i, j) for i in known for j in known if i > j}
    todo: dict[tuple[int, int], list[int]] = {}
    for start in range(0, 28, 4):
        todo[(start, start + 4)] = sorted(
            p for p in received if start <= p < start + 4 and received[p][1] > 0 and p not in included | bad
        )
    mine = {p: received[p] for p in received if p in want}
    stacked = len([p for p in mine if p in included])
    skipped = len([p for p, (_, n) in mine.items() if n == 0])
    failed = len([p for p, (_, n) in mine.items() if n == FAILED or (n > 0 and p not in included and p in bad)])
    return todo, (stacked, skipped, failed, len(want))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_the_dense_plan_answers_as_plain_sets_do(data: st.DataObject) -> None:
    names = [f"XS.R{i}..HHZ" for i in range(8)]
    registry = {s: i for i, s in enumerate(names) if data.draw(st.booleans(), label=f"known {s}")}
    expected = data.draw(st.lists(st.sampled_from(names), unique=True), label="expected")
    plan = WindowPlan(W)
    plan.set_expected(expected)
    tasks, slot = [], 0
    for row in data.draw(st.lists(st.integers(1, 7), max_size=10), label="rows"):
        columns = data.draw(st.lists(st.integers(0, row - 1), min_size=1, unique=True), label="columns")
        counts = data.draw(st.lists(st.sampled_from([FAILED, 0, 1, 3]), min_size=len(columns), max_size=len(columns)))
        task = TaskManifest(W, names[row], slot, [names[c] for c in columns], [pair_index(row, c) for c in columns],
                            counts)  # fmt: skip
        slot += 64
        tasks.append(task)
        assert plan.add_task(task) and not plan.add_task(task)
    included = set(data.draw(st.lists(st.integers(0, 27)), label="included"))
    bad = set(data.draw(st.lists(st.integers(0, 27)), label="unreadable"))
    plan.include(np.array(sorted(included), dtype=np.int64))
    plan.mark_unreadable(np.array(sorted(bad), dtype=np.int64))
    todo, accounted = _reference(tasks, expected, registry, included, bad)
    for (start, stop), pairs in todo.items():
        got_pairs, got_slots = plan.todo(start, stop)
        assert got_pairs.tolist() == pairs
        first: dict[int, int] = {}
        for m in tasks:
            for k, p in enumerate(m.pair_index):
                first.setdefault(p, m.slot + k)
        assert got_slots.tolist() == [first[p] for p in pairs]
    assert plan.accounted(registry) == accounted
    free = min(set(range(9)) - set(registry.values()))
    below = math.inf if all(s in registry for s in expected) else free * (free - 1) // 2
    known = [registry[s] for s in expected if s in registry]
    for (start, stop), pairs in todo.items():
        complete = all(first.get(pair_index(i, j)) is not None for i in known for j in known
                       if i > j and start <= pair_index(i, j) < stop)  # fmt: skip
        assert plan.ready(start, stop, registry) == (stop <= below and complete and bool(pairs))
