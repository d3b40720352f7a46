"""Task manifests: what a row task wrote into its window's slots, as an object next to the arrays.

A correlator writes the CCFs of a task, then its manifest, then announces both with one RowCorrelated. The
manifest, not the event, is what the stacker believes: which pair each slot holds, how many sub-windows it
averaged (0: skipped for want of common data), and which columns failed (their product was missing or
unreadable). Events can be forged by anyone who reaches the topic; objects only by the store's writers.

Manifests live outside the zarr hierarchy, so zarr tools never see them; their keys are
:meth:`storage.layout.Layout.manifest`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields

from contracts.boundedjson import load_bounded_json
from results.layout import MAX_STATIONS, pair_index

FAILED = -1  # n_common of a pair whose task could not correlate it
_MAX_BYTES = 4 * 1024 * 1024
_MAX_DEPTH = 4


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class TaskManifest:
    """One row task's output: ``columns[k]`` is in slot ``slot + k``; ``pair_index[k]`` is its canonical pair."""

    window: str
    row: str
    slot: int
    columns: list[str]
    pair_index: list[int]
    n_common: list[int]  # > 0: stacked; 0: skipped (see ``skipped``); FAILED: see ``failed``
    index: dict[str, int] = field(default_factory=dict)  # registry index of the row and of every column
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    worker: str = ""
    # positions of the row and the columns it read (those whose products give one): the stacker labels the
    # stacks with them without reading any product again
    coordinates: dict[str, dict[str, float]] = field(default_factory=dict)

    def encode(self) -> bytes:
        """Compact JSON. The fields hold JSON values already, so no ``asdict`` (its deep copy of every list and
        dict took 7% of a correlator's busy time at N = 260)."""
        return json.dumps({f.name: getattr(self, f.name) for f in fields(self)}, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> TaskManifest:
        """Inverse of :meth:`encode`.

        Raises:
            ValueError: not a manifest, or an inconsistent one.
        """
        raw = load_bounded_json(data, max_bytes=_MAX_BYTES, max_depth=_MAX_DEPTH)
        if not isinstance(raw, dict):
            raise ValueError("a task manifest is a JSON object")
        try:
            manifest = cls(**raw)
        except TypeError as exc:
            raise ValueError(f"not a task manifest: {exc}") from exc
        n = len(manifest.columns)
        if len(manifest.pair_index) != n or len(manifest.n_common) != n or manifest.slot < 0:
            raise ValueError("a task manifest's columns, pair indices and counts disagree")
        if not all(_count(p) and p >= 0 for p in manifest.pair_index) or not all(map(_count, manifest.n_common)):
            raise ValueError("a task manifest's pair indices must be whole numbers >= 0, its counts whole numbers")
        if manifest.index:  # the stacker sizes its plan by pair index: each must be the one the registry gives
            if not all(_count(i) and 0 <= i < MAX_STATIONS for i in manifest.index.values()):
                raise ValueError(f"a task manifest's registry indices must be whole numbers in [0, {MAX_STATIONS})")
            try:
                canonical = [pair_index(manifest.index[manifest.row], manifest.index[c]) for c in manifest.columns]
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"a task manifest's registry indices are incomplete or invalid: {exc}") from exc
            if canonical != manifest.pair_index:
                raise ValueError("a task manifest's pair indices are not those of its registry indices")
        for station, position in manifest.coordinates.items():
            if not (
                isinstance(position, dict)
                and {"latitude", "longitude"} <= position.keys()
                and all(isinstance(v, int | float) and not isinstance(v, bool) for v in position.values())
            ):
                raise ValueError(f"a task manifest gives {station} no numeric latitude and longitude")
        return manifest
