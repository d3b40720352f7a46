"""Processing parameters of the DSP chain (DESIGN.md §6); nested in the settings model as ``processing``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ProcessingParams(BaseModel):
    """Every parameter of preprocessing, correlation and stacking. Frozen, so it can travel as provenance."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window_s: float = Field(3600.0, gt=0, description="length of one processing window (one directory), s")
    target_fs: float = Field(20.0, gt=0, description="sampling rate after resampling, Hz")
    freqmin: float = Field(0.05, gt=0, description="band-pass low corner, Hz")
    freqmax: float = Field(2.0, gt=0, description="band-pass high corner, Hz")
    corners: int = Field(4, ge=1, le=10, description="Butterworth poles (applied forward and backward)")
    taper_fraction: float = Field(0.05, ge=0, le=0.5, description="cosine taper fraction at each end")
    normalization: Literal["onebit", "ram", "none"] = Field(
        "ram", description="time-domain normalisation: one-bit, running-absolute-mean, or none"
    )
    ram_window_s: float = Field(
        20.0, gt=0, description="running-absolute-mean window, s (about half the longest period in the band)"
    )
    whiten: bool = Field(True, description="spectral whitening in [freqmin, freqmax]")
    whiten_ramp_fraction: float = Field(
        0.25,
        gt=0,
        lt=1,
        description="cosine ramps outside the band: [freqmin*(1-r), freqmin] and [freqmax, freqmax*(1+r)] "
        "(capped at Nyquist); only these bins are kept in the product",
    )
    cc_len_s: float = Field(1800.0, gt=0, description="sub-window length, s")
    step_s: float = Field(450.0, gt=0, description="sub-window step, s")
    maxlag_s: float = Field(200.0, gt=0, description="largest lag kept, s")
    max_gap_fraction: float = Field(
        0.1, ge=0, lt=1, description="sub-windows with more gap than this fraction are skipped"
    )
    min_common_subwindows: int = Field(
        1,
        ge=1,
        description="a pair needs at least this many sub-windows valid in both stations, else skipped",
    )
    min_fs: float = Field(1.0, gt=0, description="lowest accepted input sampling rate, Hz")
    max_fs: float = Field(1000.0, gt=0, description="highest accepted input sampling rate, Hz")
    stack: Literal["linear", "pws"] = Field("linear", description="stack written to stacks/ and exported")
    pws_power: float = Field(2.0, gt=0, description="phase-weighted stack exponent (nu)")

    @model_validator(mode="after")
    def _check_consistency(self) -> ProcessingParams:
        nyquist = self.target_fs / 2
        if not self.freqmin < self.freqmax < nyquist:
            raise ValueError(f"need freqmin < freqmax < target_fs/2 = {nyquist} Hz")
        if self.cc_len_s > self.window_s:
            raise ValueError("cc_len_s must not exceed window_s")
        if self.maxlag_s * 2 >= self.cc_len_s:
            raise ValueError("maxlag_s must be less than half of cc_len_s")
        if self.window_s != int(self.window_s):
            raise ValueError("window_s must be a whole number of seconds (window ids are whole seconds)")
        for name in ("window_s", "cc_len_s", "step_s", "maxlag_s"):
            # every length must be a whole number of target samples, so sub-windows and lags sit on the grid
            samples = getattr(self, name) * self.target_fs
            if abs(samples - round(samples)) > 1e-9:
                raise ValueError(f"{name} must be a whole number of samples at target_fs")
        return self

    # --- derived sizes (samples at target_fs) ------------------------------------------------------------
    @property
    def cc_len(self) -> int:
        """Sub-window length in samples."""
        return round(self.cc_len_s * self.target_fs)

    @property
    def step(self) -> int:
        """Sub-window step in samples."""
        return round(self.step_s * self.target_fs)

    @property
    def maxlag(self) -> int:
        """Largest kept lag in samples; a CCF has ``2*maxlag + 1`` samples."""
        return round(self.maxlag_s * self.target_fs)

    @property
    def window(self) -> int:
        """Processing window length in samples."""
        return round(self.window_s * self.target_fs)

    @property
    def n_subwindows(self) -> int:
        """Number of sub-windows per processing window."""
        return (self.window - self.cc_len) // self.step + 1
