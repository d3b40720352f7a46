"""The dv/v monitor's work on the stores, without Kafka: elect the reference, measure a window, write the table.

:class:`DvvWork` reads a window's CCFs from the per-window arrays (:mod:`results.windows`: slots, and the slot
index the stacker writes when the window is complete), the station positions from the ``stations`` group, and
writes the table through :class:`results.dvv.DvvStore`. The science is :mod:`dsp.dvv`, the same functions the
inprocess mode runs.

**The reference is elected once and then frozen.** Its windows follow ``settings.dvv.reference``: ``first``
takes the K earliest windows among the *complete* ones once K are complete; ``range`` takes the windows of the
range once every window of its grid is complete, or once a window after the range is complete and every window
of the range that exists is (data for the missing hours are then not expected). Members of the ``monitor``
group may decide at the same time from different views of the store, so the decision is a pointer object
written with ``put_if_absent`` (``<ns>dvv/reference-<spec digest>.json``): the first writer wins, the others
read its windows. Every member then stacks the same windows into the same reference, so the stored reference
is written idempotently. A late window that would have been among the first K does not change an elected
reference; another spec (or other parameters) gives another series (:func:`results.dvv.series_name`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import zarr

from contracts.params import ProcessingParams
from dsp.correlate import lag_axis
from dsp.dvv import (
    METHODS,
    SIDES,
    DvvMeasurement,
    DvvParams,
    NetworkPoint,
    PairMonitor,
    Reason,
    Reference,
    build_reference,
    network_point,
    prepare_pair,
    reference_id,
    select_reference,
)
from dsp.windows import window_id, window_start
from results.dvv import DvvStore, series_name
from results.layout import STATIONS, WINDOWS
from results.zarrio import array, subgroup, values
from storage import ObjectStore
from storage.errors import ObjectConflict, ObjectNotFound

log = logging.getLogger(__name__)
EARTH_RADIUS_KM = 6371.0


@dataclass(frozen=True)
class Elected:
    """The reference a series is measured against: its id, windows and series name."""

    reference: str
    windows: tuple[str, ...]
    series: str

    def encode(self) -> bytes:
        """The pointer object's bytes (deterministic, so an identical decision is an idempotent write)."""
        return json.dumps({"reference": self.reference, "windows": list(self.windows), "series": self.series},
                          sort_keys=True).encode()  # fmt: skip

    @classmethod
    def decode(cls, data: bytes) -> Elected:
        """Inverse of :meth:`encode`.

        Raises:
            ValueError: not a pointer.
        """
        raw = json.loads(data)
        return cls(str(raw["reference"]), tuple(str(w) for w in raw["windows"]), str(raw["series"]))


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance on a sphere of the Earth's mean radius (the coda start needs no better)."""
    p1, p2, dl = math.radians(lat1), math.radians(lat2), math.radians(lon2 - lon1)
    h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def pair_distances(root: zarr.Group) -> dict[str, float]:
    """Distance of every pair of registered stations with a known position, by pair key ``A__B`` (A < B)."""
    group = subgroup(root, STATIONS)
    if group is None or "station" not in group:
        return {}
    names = [str(s) for s in values(group, "station")]
    lat, lon = values(group, "latitude"), values(group, "longitude")
    out = {}
    for i, a in enumerate(names):
        for j in range(i):
            if math.isfinite(lat[i] * lon[i] * lat[j] * lon[j]):
                x, y = sorted((a, names[j]))
                out[f"{x}__{y}"] = distance_km(lat[i], lon[i], lat[j], lon[j])
    return out


def complete_windows(windows_root: zarr.Group) -> list[str]:
    """Windows whose slot index is written (the stacker closed them: every pair is accounted for), in time order."""
    group = subgroup(windows_root, WINDOWS)
    if group is None:
        return []
    return sorted((name for name, g in group.groups() if "pair" in g), key=window_start)


def window_ccfs(windows_root: zarr.Group, window: str) -> dict[str, np.ndarray]:
    """The CCFs of a complete window by pair key (slots without a CCF, skipped or failed, are left out)."""
    group = subgroup(windows_root, f"{WINDOWS}/{window}")
    if group is None or "pair" not in group:
        return {}
    pairs = values(group, "pair")
    keep = np.flatnonzero((values(group, "n_common") > 0) & (pairs != ""))
    if keep.size == 0:
        return {}
    block = np.asarray(array(group, "ccf")[int(keep.min()) : int(keep.max()) + 1])
    return {str(pairs[k]): block[k - keep.min()] for k in keep}


class DvvWork:
    """Measure windows against the elected reference and write the table; one per monitor process."""

    def __init__(
        self,
        windows_root: zarr.Group,
        root: zarr.Group,
        store: ObjectStore,
        processing: ProcessingParams,
        params: DvvParams,
        namespace: str = "",
    ) -> None:
        """Args: the hierarchy of the per-window CCFs, the one that holds ``stations/`` and gets ``dvv/``, the
        object store (the reference pointer), the processing and dv/v parameters and the key namespace."""
        self.windows_root, self.root, self.store = windows_root, root, store
        self.processing, self.params, self.ns = processing, params, namespace
        self.table = DvvStore(root)
        self.elected: Elected | None = None
        self.monitors: dict[str, PairMonitor] = {}
        self.references: dict[str, Reference] = {}
        self.distances: dict[str, float] = {}
        self.fs = processing.target_fs
        self.n_lags = 2 * processing.maxlag + 1

    @property
    def pointer_key(self) -> str:
        """Where the elected reference of this spec is recorded."""
        spec = self.params.reference.model_dump_json()
        return f"{self.ns}dvv/reference-{hashlib.blake2b(spec.encode(), digest_size=6).hexdigest()}.json"

    # --- the reference -------------------------------------------------------------------------------------
    def reference(self) -> Elected | None:
        """The elected reference (electing it when the store allows), or None while it cannot exist yet."""
        if self.elected is not None:
            return self.elected
        try:
            elected = Elected.decode(self.store.get(self.pointer_key))
        except ObjectNotFound:
            proposal = self._proposal()
            if proposal is None:
                return None
            try:
                self.store.put_if_absent(self.pointer_key, proposal.encode(), content_type="application/json")
                elected = proposal
            except ObjectConflict:  # another member elected other windows first: theirs is the reference
                elected = Elected.decode(self.store.get(self.pointer_key))
        self._load(elected)
        return self.elected

    def _proposal(self) -> Elected | None:
        complete = complete_windows(self.windows_root)
        spec = self.params.reference
        if spec.kind == "first":
            if len(complete) < spec.first_k:
                return None
        elif not self._range_ready(complete):
            return None
        selected = select_reference(spec, complete)
        if not selected:
            return None
        ref_id = reference_id(spec, selected)
        return Elected(ref_id, selected, series_name(ref_id, self.params))

    def _range_ready(self, complete: list[str]) -> bool:
        spec, step = self.params.reference, self.processing.window_s
        lo, hi = window_start(spec.start or ""), window_start(spec.end or "")
        grid = {window_id(t, step) for t in np.arange(lo, hi + step / 2, step)}
        done = set(complete)
        if grid <= done:
            return True
        group = subgroup(self.windows_root, WINDOWS)
        existing = {name for name, _ in group.groups()} if group is not None else set()
        past = any(window_start(w) > hi for w in done)
        return past and {w for w in existing if lo <= window_start(w) <= hi} <= done

    def _load(self, elected: Elected) -> None:
        """Stack (or read back) the reference of every pair and store it with its series."""
        stored = self.table.read_reference(elected.series)
        if stored:
            refs = {p: _frozen(Reference(elected.reference, elected.windows, c)) for p, c in stored.items()}
        else:
            by_pair: dict[str, dict[str, np.ndarray]] = {}
            for w in elected.windows:
                for pair, ccf in window_ccfs(self.windows_root, w).items():
                    by_pair.setdefault(pair, {})[w] = ccf
            refs = {}
            for pair, ccfs in by_pair.items():
                ref = build_reference(ccfs, elected.windows, elected.reference, self.n_lags)
                if ref is not None:  # at the stored precision, so a restarted monitor measures the same values
                    stored_ccf = ref.ccf.astype(np.float32).astype(np.float64)
                    refs[pair] = _frozen(Reference(ref.id, ref.windows, stored_ccf))
            attrs = {
                "reference": elected.reference,
                "windows": list(elected.windows),
                "spec": self.params.reference.model_dump(mode="json"),
                "params": self.params.model_dump(mode="json", exclude={"reference"}),
                "elected_at": time.time(),
            }
            self.table.write_reference(elected.series, refs, lag_axis(self.fs, self.processing.maxlag), attrs)
        self.references, self.monitors, self.elected = refs, {}, elected
        log.info("dv/v reference %s: %d pairs, series %s", elected.reference, len(refs), elected.series)

    def _monitor(self, pair: str) -> PairMonitor:
        found = self.monitors.get(pair)
        if found is None:
            if pair not in self.distances:
                self.distances = pair_distances(self.root)
            assert self.elected is not None
            ref = self.references.get(pair)
            found = prepare_pair(
                pair, ref, self.distances.get(pair), self.fs, self.n_lags, self.params, self.elected.reference
            )
            if pair in self.distances or not (found.problem or "").startswith(Reason.NO_DISTANCE.value):
                self.monitors[pair] = found  # a pair without a position yet is prepared again next window
        return found

    # --- windows -------------------------------------------------------------------------------------------
    def pending(self) -> list[str]:
        """Complete windows not measured yet in the elected series (all complete windows before an election)."""
        done = self.table.measured(self.elected.series) if self.elected is not None else set()
        return [w for w in complete_windows(self.windows_root) if w not in done]

    def measure(self, window: str) -> tuple[list[DvvMeasurement], list[NetworkPoint]] | None:
        """Measure every pair of a complete window, aggregate the network and write both to the table.

        Returns:
            The rows and network points, or None when no reference can be elected yet (the window waits in
            the store and :meth:`pending` lists it).
        """
        elected = self.reference()
        if elected is None:
            return None
        rows: list[DvvMeasurement] = []
        for pair, ccf in sorted(window_ccfs(self.windows_root, window).items()):
            rows.extend(self._monitor(pair).measure(window, ccf))
        network = [network_point(rows, window, m, s) for m in METHODS for s in SIDES]
        self.table.write_window(elected.series, window, rows, network)
        return rows, network


def _frozen(ref: Reference) -> Reference:
    ref.ccf.setflags(write=False)
    return ref
