"""Whether a run's stacks hold its plan, judged from the objects: the stacks' counts and the windows' indexes.

For every window of the plan and every pair of its expected stations, the window's slot index (written by the
stacker from the correlators' manifests) must hold the pair, with a CCF or as skipped for want of common data;
and every pair's stack count must equal the number of windows that gave it a CCF. A pair whose task failed,
that no slot holds, or whose count differs (a window lost or added twice) is *missing*. Nothing here believes
an event.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import zarr

from results.layout import STACKS, STATIONS, pair_indices, window_group
from results.manifest import FAILED
from results.zarrio import subgroup, values
from xcorrflow.orchestration.runstate import MAX_LISTED, RunState


@dataclass
class Verdict:
    """What the objects say about a run's plan."""

    planned: int = 0  # (window, pair)s the plan expects
    missing: list[dict[str, str]] = field(default_factory=list)  # up to MAX_LISTED
    missing_count: int = 0
    windows_of: dict[tuple[str, str], int] = field(default_factory=dict)  # (a, b) -> windows with a CCF

    @property
    def complete(self) -> bool:
        """Nothing is missing."""
        return self.missing_count == 0

    def final(self, a: str, b: str, count: int) -> bool:
        """A pair's stack holds every window the plan gives it a CCF in."""
        return count == self.windows_of.get((a, b), -1)

    def _miss(self, window: str, pair: str) -> None:
        self.missing_count += 1
        if len(self.missing) < MAX_LISTED:
            self.missing.append({"window": window, "pair": pair})


def verify(stacks_root: zarr.Group, windows_root: zarr.Group, state: RunState) -> Verdict:
    """Check the stacks against the plan of ``state``."""
    verdict = Verdict()
    registry = _registry(stacks_root)
    with_ccf: dict[int, int] = {}
    labels: dict[int, tuple[str, str]] = {}
    for window in sorted(state.plan):
        stations = sorted(state.expected(window))
        if len(stations) < 2:
            continue
        i, j = np.triu_indices(len(stations), k=1)
        verdict.planned += i.size
        held = _slots(windows_root, window)
        for a_i, b_i in zip(i.tolist(), j.tolist(), strict=True):
            a, b = stations[a_i], stations[b_i]
            if a not in registry or b not in registry:
                verdict._miss(window, f"{a}__{b}")
                continue
            p = int(pair_indices(registry[a], np.array([registry[b]]))[0])
            n = held.get(p)
            if n is None or n == FAILED:
                verdict._miss(window, f"{a}__{b}")
            elif n > 0:
                with_ccf[p] = with_ccf.get(p, 0) + 1
                labels[p] = (a, b)
    counts = _counts(stacks_root)
    for p, n in with_ccf.items():
        a, b = labels[p]
        verdict.windows_of[(a, b)] = n
        if p >= counts.size or counts[p] != n:
            verdict._miss("*", f"{a}__{b} (stack holds {int(counts[p]) if p < counts.size else 0} of {n} windows)")
    return verdict


def _registry(root: zarr.Group) -> dict[str, int]:
    group = subgroup(root, STATIONS)
    if group is None:
        return {}
    return {str(s): i for i, s in enumerate(values(group, "station"))}


def _counts(root: zarr.Group) -> np.ndarray:
    stacks = subgroup(root, STACKS)
    return np.zeros(0, np.int32) if stacks is None else values(stacks, "count").astype(np.int32)


def _slots(root: zarr.Group, window: str) -> dict[int, int]:
    """Canonical pair -> common sub-windows (FAILED for a failed pair), from the window's slot index."""
    group = subgroup(root, window_group(window))
    if group is None or "pair_index" not in group:
        return {}
    pairs, counts = values(group, "pair_index"), values(group, "n_common")
    keep = pairs >= 0
    return dict(zip(pairs[keep].tolist(), counts[keep].tolist(), strict=True))
