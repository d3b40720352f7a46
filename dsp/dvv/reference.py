"""The reference a series is measured against: which windows (a :class:`ReferenceSpec`), their id, and the
linear stack of a pair's CCFs in them.

The id names the spec and the exact windows (first, last, count and a digest of the list), so a reference
built from other windows, for example once a late window completes the first K, gets another id, and a
network value never mixes the two (see :func:`dsp.dvv.network.network_point`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from contracts.dvvparams import ReferenceSpec
from dsp.stack import stack_linear
from dsp.windows import window_start


@dataclass(frozen=True, eq=False)
class Reference:
    """A pair's reference CCF (read-only), the windows stacked into it, and the reference's id."""

    id: str
    windows: tuple[str, ...]
    ccf: np.ndarray


def select_reference(spec: ReferenceSpec, windows: Iterable[str]) -> tuple[str, ...]:
    """The windows of ``windows`` that make the reference, in time order.

    Raises:
        InvalidWindowId: a window id is malformed.
    """
    ordered = sorted(set(windows), key=window_start)
    if spec.kind == "first":
        return tuple(ordered[: spec.first_k])
    lo, hi = window_start(spec.start or ""), window_start(spec.end or "")
    return tuple(w for w in ordered if lo <= window_start(w) <= hi)


def reference_id(spec: ReferenceSpec, selected: Sequence[str]) -> str:
    """Id of the reference made of ``selected`` windows under ``spec``, e.g.
    ``first6:20240101T000000Z..20240101T050000Z/6#1a2b3c4d`` (``first6:none`` when nothing is selected)."""
    label = f"first{spec.first_k}" if spec.kind == "first" else f"range{spec.start}..{spec.end}"
    if not selected:
        return f"{label}:none"
    digest = hashlib.blake2b("\n".join(selected).encode(), digest_size=4).hexdigest()
    return f"{label}:{selected[0]}..{selected[-1]}/{len(selected)}#{digest}"


def build_reference(
    ccfs: Mapping[str, np.ndarray], windows: Sequence[str], ref_id: str, n_lags: int | None = None
) -> Reference | None:
    """Linear stack of a pair's CCFs in the reference ``windows`` it has.

    CCFs that are not finite, are all zeros or have another length are left out, so one broken window cannot
    poison every later measurement.

    Args:
        ccfs: the pair's CCFs by window id.
        windows: the reference windows.
        ref_id: the reference's id (see :func:`reference_id`).
        n_lags: the CCF length of the run; default: the length of the first usable CCF.

    Returns:
        The reference, or None when the pair has no usable CCF in those windows (no reference yet).
    """
    present = [np.asarray(ccfs[w]) for w in windows if w in ccfs]
    size = n_lags if n_lags is not None else next((c.size for c in present if _usable(c, c.size)), 0)
    used = tuple(w for w in windows if w in ccfs and _usable(ccfs[w], size))
    if not used:
        return None
    ccf = stack_linear(np.stack([np.asarray(ccfs[w], dtype=np.float64) for w in used]))
    ccf.setflags(write=False)
    return Reference(ref_id, used, ccf)


def _usable(ccf: np.ndarray, n_lags: int) -> bool:
    x = np.asarray(ccf)
    return bool(x.ndim == 1 and x.size == n_lags and np.isfinite(x).all() and x.any())
