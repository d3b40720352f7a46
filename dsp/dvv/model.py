"""The records of the dv/v core: a method's estimate, a measurement (a row of the pair x window table) and the
reasons a measurement can fail.

A failed measurement is a row like any other, with NaN numbers and a ``reason`` (``"<code>: <detail>"``), so a
table says why a point is missing instead of showing a silent zero.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from typing import Any

SIDES = ("causal", "acausal", "both")  # positive lags, negative lags, and both together
METHODS = ("stretching", "mwcs")


class Reason(StrEnum):
    """Why a measurement (or a network point) has no value."""

    ZERO_CCF = "zero_ccf"
    NONFINITE_CCF = "nonfinite_ccf"
    NO_REFERENCE = "no_reference"
    ZERO_REFERENCE = "zero_reference"
    SHAPE_MISMATCH = "shape_mismatch"
    NO_DISTANCE = "no_distance"
    WINDOW_OUTSIDE_LAGS = "window_outside_lags"
    TOO_FEW_POINTS = "too_few_points"
    OUT_OF_RANGE = "out_of_range"
    LOW_CC = "low_cc"
    NO_PAIRS = "no_pairs"
    MIXED_REFERENCES = "mixed_references"


def reason(code: Reason, detail: str) -> str:
    """The reason text ``"<code>: <detail>"`` (the code first, so tables can be filtered on it)."""
    return f"{code.value}: {detail}"


@dataclass(frozen=True)
class Estimate:
    """One method's answer for one side: dv/v and its 1-sigma error in percent (velocity increase = positive
    = earlier arrivals), a similarity (stretching: correlation coefficient; MWCS: mean coherence of the kept
    windows), the number of points behind it (samples or windows), and a reason when there is no value."""

    dvv_percent: float
    err_percent: float
    cc: float
    n_points: int
    reason: str | None = None

    @property
    def ok(self) -> bool:
        """True when the estimate has a value."""
        return self.reason is None

    @classmethod
    def failed(cls, why: str, n_points: int = 0) -> Estimate:
        """An estimate without a value: NaN numbers and the reason ``why``."""
        return cls(math.nan, math.nan, math.nan, n_points, why)


@dataclass(frozen=True)
class DvvMeasurement:
    """A row of the pair x window table: an :class:`Estimate` with what it measured and against what."""

    window: str
    pair: str
    method: str
    side: str
    dvv_percent: float
    err_percent: float
    cc: float
    n_points: int
    reference: str
    reason: str | None = None

    @property
    def ok(self) -> bool:
        """True when the measurement has a value."""
        return self.reason is None

    @classmethod
    def of(
        cls, estimate: Estimate, *, window: str, pair: str, method: str, side: str, reference: str
    ) -> DvvMeasurement:
        """The row of ``estimate``, measured by ``method`` on ``side`` of ``pair``'s CCF of ``window``."""
        return cls(window, pair, method, side, **asdict(estimate), reference=reference)

    def row(self) -> dict[str, Any]:
        """The measurement as a flat dict (one table row; ``reason`` is ``""`` when the value is good)."""
        out = asdict(self)
        out["reason"] = self.reason or ""
        return out


ROW_FIELDS = tuple(f.name for f in fields(DvvMeasurement))
