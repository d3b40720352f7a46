"""Export from the object store to SAC files on disk: stacks over windows, the stacker's stacks, or per-window CCFs.

The correlators write one object per row task, ``<ns>ccf/<window>/<row>.r<digest>.npz`` (a CCF batch). This
module reads those objects back and writes, with the header convention of :mod:`xcorrflow.sac`:

- :func:`export_stacks`: every pair stacked over its windows, ``OUT/<A>__<B>.sac`` (what ``xcorrflow run`` ends
  with);
- :func:`export_ccfs`: every pair of every window, ``OUT/ccf/<window>/<A>__<B>.sac``;
- :func:`export_from_stacks`: a copy of the stacker's ``<ns>stacks/<A>__<B>.sac``.

Station coordinates come from the products' headers (:func:`station_coordinates`, one product per station),
so SAC headers carry stla/stlo/evla/evlo and the distance. Objects are fetched in parallel: on a local S3 server
a GET costs milliseconds, and a 130-station window has 129 row objects.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from obspy.io.sac import SACTrace

from dsp.ccf import CCF_EXT, decode_ccfs
from dsp.correlate import CcfBatch
from dsp.errors import CorruptProduct
from dsp.params import ProcessingParams
from dsp.product import PRODUCT_EXT, Coordinates, decode_product
from dsp.seed import parse_pair_key
from dsp.stack import StackBank
from storage import ObjectStore
from storage.errors import ObjectNotFound
from xcorrflow.sac import ccf_sac_bytes, write_sac

_WINDOW_DIR = re.compile(r"ccf/(\d{8}T\d{6}Z)/")
_PRODUCT = re.compile(r"prep/(\d{8}T\d{6}Z)/([^/]+)" + re.escape(PRODUCT_EXT) + "$")
_STACK = re.compile(r"stacks/([^/]+__[^/]+)\.sac$")
CoordinateSource = Mapping[str, Coordinates | None] | Callable[[str], Coordinates | None]


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote."""

    pairs: int
    windows: int
    files: tuple[Path, ...]


def ccf_object_keys(store: ObjectStore, namespace: str, windows: Iterable[str] | None = None) -> list[str]:
    """Keys of every CCF object of a namespace (optionally of some windows only), sorted."""
    if windows is None:
        return sorted(o.key for o in store.list(f"{namespace}ccf/") if o.key.endswith(CCF_EXT))
    return sorted(o.key for w in windows for o in store.list(f"{namespace}ccf/{w}/") if o.key.endswith(CCF_EXT))


def fetch_batches(store: ObjectStore, keys: list[str], threads: int = 8) -> Iterable[CcfBatch]:
    """Fetch and decode CCF objects, ``threads`` at a time, in key order.

    Raises:
        ObjectNotFound, StorageUnavailable, CorruptProduct: an object cannot be read.
    """
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        yield from pool.map(lambda k: decode_ccfs(store.get(k), k), keys)


def stack_batches(batches: Iterable[CcfBatch], params: ProcessingParams) -> StackBank:
    """Running stacks of every pair in ``batches`` (one row per pair key, in first-seen order).

    Batches are added as they arrive and dropped, so memory holds the bank only (holding every batch until all
    keys are known would hold every window's CCFs: 268 MB per 130-station window; the bank grows geometrically).
    """
    bank = StackBank([], 2 * params.maxlag + 1, phase=params.stack == "pws")
    for batch in batches:
        if batch.pairs:
            bank.add(batch.keys, batch.ccfs)
    return bank


def product_coordinates(store: ObjectStore, key: str) -> Coordinates | None:
    """Station coordinates from the header of the product at ``key`` (None when absent or unreadable)."""
    try:
        return decode_product(store.get(key), key).coordinates
    except (ObjectNotFound, CorruptProduct):
        return None


def station_coordinates(
    store: ObjectStore,
    namespace: str,
    stations: Iterable[str] | None = None,
    *,
    windows: Iterable[str] | None = None,
    threads: int = 8,
) -> dict[str, Coordinates | None]:
    """Coordinates of stations, read from one product per station under ``<ns>prep/``.

    Args:
        store: the object store.
        namespace: key prefix ('' or ``<ns>/``).
        stations: SEED ids wanted; every station with a product when None.
        windows: look only in these windows' product folders.
        threads: parallel GETs.

    Returns:
        SEED id → coordinates, or None for a station whose product has none (or was not found).
    """
    prefixes = [f"{namespace}prep/{w}/" for w in windows] if windows is not None else [f"{namespace}prep/"]
    wanted = set(stations) if stations is not None else None
    first: dict[str, str] = {}
    for prefix in prefixes:
        for info in store.list(prefix):
            match = _PRODUCT.search(info.key.removeprefix(namespace))
            if match and (wanted is None or match.group(2) in wanted):
                first.setdefault(match.group(2), info.key)
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        found = dict(zip(first, pool.map(lambda k: product_coordinates(store, k), first.values()), strict=True))
    return {s: found.get(s) for s in (wanted if wanted is not None else found)}


def stack_sac(
    bank: StackBank, row: int, data: np.ndarray, params: ProcessingParams, lookup: Callable[[str], Coordinates | None]
) -> bytes:
    """The SAC file of one bank row whose stack is ``data``."""
    a, b = parse_pair_key(bank.keys[row])
    return ccf_sac_bytes(
        data,
        params.target_fs,
        a,
        b,
        coords_a=lookup(a),
        coords_b=lookup(b),
        n_windows=int(bank.count[row]),
        kind=params.stack,
    )


def write_stacks(
    bank: StackBank,
    output_dir: Path,
    params: ProcessingParams,
    coordinates: CoordinateSource | None = None,
) -> list[Path]:
    """Write one SAC file per pair with at least one window.

    Args:
        bank: the stacks.
        output_dir: created if needed.
        params: sampling rate and stack kind.
        coordinates: station coordinates by SEED id (a mapping or a lookup function), when known.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    lookup = _lookup(coordinates)
    stacks = bank.stacks(params.stack, params.pws_power)
    written = []
    for row, key in enumerate(bank.keys):
        if bank.count[row] == 0:
            continue
        path = output_dir / f"{key}.sac"
        write_sac(path, stack_sac(bank, row, stacks[row], params, lookup))
        written.append(path)
    return written


def export_stacks(
    store: ObjectStore,
    namespace: str,
    output_dir: Path,
    params: ProcessingParams,
    *,
    windows: Iterable[str] | None = None,
    coordinates: CoordinateSource | None = None,
    threads: int = 8,
) -> ExportResult:
    """Stack every pair's CCFs of a namespace over its windows and write the SAC stacks.

    Args:
        store, namespace: where the CCF objects are (``<namespace>ccf/<window>/``).
        output_dir: receives ``<A>__<B>.sac``.
        params: sampling rate and stack kind.
        windows: only these windows (all when None).
        coordinates: station coordinates; when None they are read from the products' headers.
        threads: parallel GETs.

    Returns:
        How many pairs and windows went into the files written.
    """
    keys = ccf_object_keys(store, namespace, windows)
    bank = stack_batches(fetch_batches(store, keys, threads), params)
    if coordinates is None:
        stations = {s for key in bank.keys for s in parse_pair_key(key)}
        coordinates = station_coordinates(store, namespace, stations, windows=windows, threads=threads)
    files = write_stacks(bank, output_dir, params, coordinates)
    return ExportResult(pairs=len(files), windows=len(_windows_of(keys, namespace)), files=tuple(files))


def export_ccfs(
    store: ObjectStore,
    namespace: str,
    output_dir: Path,
    *,
    windows: Iterable[str] | None = None,
    coordinates: CoordinateSource | None = None,
    threads: int = 8,
) -> ExportResult:
    """Write every pair's CCF of every window as ``OUT/ccf/<window>/<A>__<B>.sac`` (kind ``ccf``).

    Args:
        store, namespace, windows, threads: as for :func:`export_stacks`.
        output_dir: receives ``ccf/<window>/``.
        coordinates: station coordinates; when None they are read from the products' headers.

    Returns:
        Pairs counts distinct pairs; files lists one file per (window, pair).
    """
    keys = ccf_object_keys(store, namespace, windows)
    if coordinates is None:
        coordinates = station_coordinates(store, namespace, windows=windows, threads=threads)
    lookup = _lookup(coordinates)
    files: list[Path] = []
    pairs: set[str] = set()
    for batch in fetch_batches(store, keys, threads):
        folder = output_dir / "ccf" / batch.window
        folder.mkdir(parents=True, exist_ok=True)
        for (a, b), key, ccf in zip(batch.pairs, batch.keys, batch.ccfs, strict=True):
            path = folder / f"{key}.sac"
            write_sac(path, ccf_sac_bytes(ccf, batch.fs, a, b, coords_a=lookup(a), coords_b=lookup(b), kind="ccf"))
            files.append(path)
            pairs.add(key)
    return ExportResult(pairs=len(pairs), windows=len(_windows_of(keys, namespace)), files=tuple(files))


def export_from_stacks(store: ObjectStore, namespace: str, output_dir: Path, *, threads: int = 8) -> ExportResult:
    """Copy the stacker's SAC stacks ``<ns>stacks/<A>__<B>.sac`` to ``OUT/<A>__<B>.sac``.

    Their headers already carry coordinates and the window count (``user0``) of the stacker's last flush.

    Returns:
        The files written; ``windows`` is the largest window count in the headers.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    keys = [o.key for o in store.list(f"{namespace}stacks/", recursive=False)]
    names = {k: m.group(1) for k in keys if (m := _STACK.search(k.removeprefix(namespace)))}

    def copy(key: str) -> tuple[Path, int]:
        path = output_dir / f"{names[key]}.sac"
        store.get_file(key, path)
        return path, int(SACTrace.read(str(path), headonly=True).user0 or 0)

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        copied = list(pool.map(copy, names))
    return ExportResult(
        pairs=len(copied), windows=max((n for _, n in copied), default=0), files=tuple(p for p, _ in copied)
    )


def _lookup(coordinates: CoordinateSource | None) -> Callable[[str], Coordinates | None]:
    if callable(coordinates):
        return coordinates
    return (coordinates or {}).get


def _windows_of(keys: Iterable[str], namespace: str) -> set[str]:
    return {m.group(1) for k in keys if (m := _WINDOW_DIR.search(k.removeprefix(namespace)))}
