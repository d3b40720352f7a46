"""The transport floor of ``make bench-scale`` on the real S3 server: a run's CCF layout written and read back
through the pipeline's own calls, and nothing left behind."""

from __future__ import annotations

from contracts.settings import Settings
from results.layout import slots_for
from storage import open_store


def test_the_floor_moves_the_ccf_array_of_a_run_and_cleans_up(stack: Settings) -> None:
    from bench.scale.transport import measure

    figures = measure(stations=70, group_slots=1000)  # rows of 1-69 columns: one and two chunks, groups cut chunks

    slots = sum(slots_for(row) for row in range(1, 70))
    assert figures["tasks"] == 69 and figures["slots"] == figures["slots_read"] == slots == 69 * 64 + 5 * 64
    assert figures["bytes"] == slots * (2 * stack.processing.maxlag + 1) * 4
    assert figures["put"][0] < figures["put"][1] == figures["get"][0] < figures["get"][1]
    assert not list(open_store(stack).list("bench-transport-")), "the scratch namespace is deleted"
