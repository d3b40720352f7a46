"""Settings of the dv/v measurements: coda window, stretching grid, MWCS windows, and the reference.

In contracts, beside :mod:`contracts.params`, because the settings model holds them (the layer contract keeps
contracts free of dsp); :mod:`dsp.dvv` reads them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts.ids import window_id_problem


class ReferenceSpec(BaseModel):
    """Which windows make the reference stack a series is measured against.

    ``first``: the first ``first_k`` windows of the run (by window id, so a late window cannot change them
    once they exist); ``range``: every window with ``start <= id <= end``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["first", "range"] = Field("first", description="first K windows, or a window-id range")
    first_k: int = Field(24, ge=1, description="windows in the reference when kind is 'first'")
    start: str | None = Field(None, description="first window id of the range (kind 'range')")
    end: str | None = Field(None, description="last window id of the range, inclusive (kind 'range')")

    @model_validator(mode="after")
    def _check(self) -> ReferenceSpec:
        if self.kind == "range":
            if self.start is None or self.end is None:
                raise ValueError("a 'range' reference needs start and end window ids")
            for wid in (self.start, self.end):
                problem = window_id_problem(wid)
                if problem:
                    raise ValueError(f"reference range {wid!r}: {problem}")
            if self.start > self.end:  # fixed-width UTC ids: their order is time order
                raise ValueError("the reference range ends before it starts")
        return self


class DvvParams(BaseModel):
    """Every parameter of the dv/v measurement (stretching and MWCS) of one CCF against its reference."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_lag_s: float = Field(5.0, ge=0, description="the coda window never starts before this lag, s")
    start_velocity_km_s: float | None = Field(
        1.0,
        gt=0,
        description="the coda window starts at distance / this velocity when later than min_lag_s (issue 14's "
        "v_max); below the direct wave's speed, the window starts after the direct arrival. None: a static "
        "window from min_lag_s",
    )
    end_lag_s: float = Field(60.0, gt=0, description="the coda window ends at this lag, s (both sides)")
    min_window_s: float = Field(5.0, gt=0, description="a coda window shorter than this is too short to measure")
    freqmin: float = Field(0.05, gt=0, description="low corner of the CCFs' band, Hz (stretching error)")
    freqmax: float = Field(2.0, gt=0, description="high corner of the CCFs' band, Hz (stretching error)")
    stretch_max_percent: float = Field(1.0, gt=0, lt=50, description="stretching searches dv/v in +-this, %")
    stretch_step_percent: float = Field(0.01, gt=0, description="stretching grid step before refinement, %")
    mwcs_window_s: float = Field(20.0, gt=0, description="MWCS moving-window length, s")
    mwcs_step_s: float = Field(10.0, gt=0, description="MWCS moving-window step, s")
    mwcs_freqmin: float = Field(0.1, gt=0, description="low end of the MWCS phase-regression band, Hz")
    mwcs_freqmax: float = Field(2.0, gt=0, description="high end of the MWCS phase-regression band, Hz")
    mwcs_smooth_hz: float = Field(
        0.3,
        gt=0,
        description="half-width of the spectral smoothing behind the MWCS coherence, Hz; it must span several "
        "independent bins (1 / window length apart), or noise alone looks coherent",
    )
    mwcs_min_coherence: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="MWCS windows below this mean coherence drop; incoherent windows do not bias the iterated "
        "MWCS (they inflate its error), so 0 keeps them all",
    )
    mwcs_max_delay_s: float = Field(0.5, gt=0, description="MWCS windows with a larger |delay| drop, s")
    mwcs_min_windows: int = Field(3, ge=2, description="MWCS needs this many kept windows for a regression")
    reference: ReferenceSpec = Field(default_factory=ReferenceSpec, description="the reference windows")

    @model_validator(mode="after")
    def _check(self) -> DvvParams:
        if not self.freqmin < self.freqmax:
            raise ValueError("need freqmin < freqmax")
        if not self.mwcs_freqmin < self.mwcs_freqmax:
            raise ValueError("need mwcs_freqmin < mwcs_freqmax")
        if self.end_lag_s <= self.min_lag_s:
            raise ValueError("end_lag_s must come after min_lag_s")
        if self.stretch_step_percent * 4 > self.stretch_max_percent:
            raise ValueError("the stretching grid needs at least 9 trials: step <= max / 4")
        if self.mwcs_window_s * self.mwcs_freqmin < 1:
            raise ValueError("an MWCS window must hold at least one period of mwcs_freqmin")
        return self
