"""Codec of correlation results: a :class:`~dsp.correlate.CcfBatch` (one pair or many) of one window."""

from __future__ import annotations

import numpy as np

from dsp import codec
from dsp.correlate import CcfBatch, SkippedPair
from dsp.errors import CorruptProduct, DspError
from dsp.seed import validate_seed_id
from dsp.windows import window_start

CCF_FORMAT = "xcorrflow.ccf"
CCF_VERSION = 1
CCF_EXT = ".npz"


def encode_ccfs(batch: CcfBatch) -> bytes:
    """Encode CCFs of one window (float32, lags -maxlag..+maxlag) with their pairs and common counts."""
    header = {
        "window": batch.window,
        "fs": batch.fs,
        "maxlag": batch.maxlag,
        "pairs": [list(p) for p in batch.pairs],
        "skipped": [[s.a, s.b, s.reason] for s in batch.skipped],
    }
    arrays: dict[str, np.ndarray] = {
        "ccfs": batch.ccfs.astype(np.float32, copy=False),
        "n_common": batch.n_common.astype(np.int64),
    }
    return codec.pack(CCF_FORMAT, CCF_VERSION, header, arrays)


def decode_ccfs(data: bytes, source: str = "<ccf>") -> CcfBatch:
    """Inverse of :func:`encode_ccfs`.

    Raises:
        CorruptProduct: damaged, of another version, or inconsistent.
    """
    header, arrays = codec.unpack(data, CCF_FORMAT, frozenset({CCF_VERSION}), source)
    try:
        pairs = tuple((validate_seed_id(a), validate_seed_id(b)) for a, b in header["pairs"])
        ccfs, n_common, maxlag = arrays["ccfs"], arrays["n_common"], int(header["maxlag"])
        if ccfs.shape != (len(pairs), 2 * maxlag + 1) or n_common.shape != (len(pairs),):
            raise ValueError("pairs, CCFs and counts disagree")
        window_start(header["window"])
        skipped = tuple(SkippedPair(str(a), str(b), str(r)) for a, b, r in header["skipped"])
        return CcfBatch(header["window"], float(header["fs"]), maxlag, pairs, ccfs, n_common, skipped)
    except (KeyError, TypeError, ValueError, DspError) as exc:
        raise CorruptProduct(source, f"inconsistent CCF batch: {exc}") from exc
