"""Export from the object store: CCF objects of a namespace → per-pair stacks → SAC files on disk.

The correlators write one object per row task, ``<ns>ccf/<window>/<row>.r<digest>.npz`` (a CCF batch). This
module reads those objects back, stacks each pair over the windows, and writes ``OUT/<A>__<B>.sac`` with the
header convention of :mod:`xcorrflow.sac`. Objects are fetched in parallel: on a local S3 server a GET costs
milliseconds, and a 130-station window has 129 row objects.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from dsp.ccf import CCF_EXT, decode_ccfs
from dsp.correlate import CcfBatch
from dsp.params import ProcessingParams
from dsp.product import Coordinates
from dsp.seed import parse_pair_key
from dsp.stack import StackBank
from storage import ObjectStore
from xcorrflow.sac import ccf_to_sac, write_sac

_WINDOW_DIR = re.compile(r"ccf/(\d{8}T\d{6}Z)/")


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
    """Stacks of every pair in ``batches`` (one row per pair key, sorted).

    The batches are held until every key is known, so the bank is allocated once at its final size.
    """
    held = [b for b in batches if b.pairs]
    keys = sorted({k for b in held for k in b.keys})
    bank = StackBank(keys, 2 * params.maxlag + 1, phase=params.stack == "pws")
    for batch in held:
        bank.add(batch.keys, batch.ccfs)
    return bank


def write_stacks(
    bank: StackBank,
    output_dir: Path,
    params: ProcessingParams,
    coordinates: Mapping[str, Coordinates | None] | Callable[[str], Coordinates | None] | None = None,
) -> list[Path]:
    """Write one SAC file per pair with at least one window.

    Args:
        bank: the stacks.
        output_dir: created if needed.
        params: sampling rate and stack kind.
        coordinates: station coordinates by SEED id (a mapping or a lookup function), when known.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    lookup = coordinates if callable(coordinates) else (coordinates or {}).get
    stacks = bank.pws(params.pws_power) if params.stack == "pws" else bank.linear()
    written = []
    for row, key in enumerate(bank.keys):
        if bank.count[row] == 0:
            continue
        a, b = parse_pair_key(key)
        trace = ccf_to_sac(
            stacks[row],
            params.target_fs,
            a,
            b,
            coords_a=lookup(a),
            coords_b=lookup(b),
            n_windows=int(bank.count[row]),
            kind=params.stack,
        )
        path = output_dir / f"{key}.sac"
        write_sac(path, trace)
        written.append(path)
    return written


def export_stacks(
    store: ObjectStore,
    namespace: str,
    output_dir: Path,
    params: ProcessingParams,
    *,
    windows: Iterable[str] | None = None,
    coordinates: Mapping[str, Coordinates | None] | Callable[[str], Coordinates | None] | None = None,
    threads: int = 8,
) -> ExportResult:
    """Stack every pair's CCFs of a namespace over its windows and write the SAC stacks.

    Returns:
        How many pairs and windows went into the files written.
    """
    keys = ccf_object_keys(store, namespace, windows)
    bank = stack_batches(fetch_batches(store, keys, threads), params)
    files = write_stacks(bank, output_dir, params, coordinates)
    found = {m.group(1) for k in keys if (m := _WINDOW_DIR.search(k.removeprefix(namespace)))}
    return ExportResult(pairs=len(files), windows=len(found), files=tuple(files))
