"""dv/v monitoring core (issue 14): relative seismic velocity change of each window's CCF against a reference.

Pure functions over numpy arrays, no I/O. Modules, in the order data flows through them:

- :mod:`contracts.dvvparams`: the settings (:class:`DvvParams`, with the :class:`ReferenceSpec`).
- :mod:`dsp.dvv.reference`: which windows make the reference, its versioned id, the linear stack.
- :mod:`dsp.dvv.coda`: the coda window of a pair (from its distance) and the checks of every CCF.
- :mod:`dsp.dvv.stretching`: stretching, with an error after Weaver et al. (2011).
- :mod:`dsp.dvv.mwcs_windows`, :mod:`dsp.dvv.mwcs`: moving-window cross-spectral analysis (Clarke et al.
  2011): the delays per window, then dv/v as the root of their residual slope.
- :mod:`dsp.dvv.network`: the network's weighted median per window, its uncertainty, change detection.
- :mod:`dsp.dvv.driver`: a pair's monitor (what a streaming worker calls per CCF) and a whole run in memory.
- :mod:`dsp.dvv.model`: the records: :class:`Estimate`, :class:`DvvMeasurement` (a table row) and the
  :class:`Reason` codes of measurements that have no value.

Conventions: dv/v in percent, positive for a velocity increase (arrivals earlier); errors are 1 sigma.
Nothing here raises on a bad CCF, a missing reference or a coda window outside the lags: the result carries
a reason instead, so one bad pair never stops a monitor.
"""

from contracts.dvvparams import DvvParams, ReferenceSpec
from dsp.dvv.coda import CodaWindow, coda_window
from dsp.dvv.driver import DvvRun, PairMonitor, ccfs_by_window, measure_run, prepare_pair
from dsp.dvv.model import METHODS, SIDES, DvvMeasurement, Estimate, Reason
from dsp.dvv.mwcs import measure_mwcs
from dsp.dvv.mwcs_windows import fit_delays, mwcs_delays
from dsp.dvv.network import NetworkPoint, detect_change, network_point, network_series, weighted_median
from dsp.dvv.reference import Reference, build_reference, reference_id, select_reference
from dsp.dvv.stretching import measure_stretching, stretch_reference, stretching_error, weaver_error

__all__ = [
    "METHODS",
    "SIDES",
    "CodaWindow",
    "DvvMeasurement",
    "DvvParams",
    "DvvRun",
    "Estimate",
    "NetworkPoint",
    "PairMonitor",
    "Reason",
    "Reference",
    "ReferenceSpec",
    "build_reference",
    "ccfs_by_window",
    "coda_window",
    "detect_change",
    "fit_delays",
    "measure_mwcs",
    "measure_run",
    "measure_stretching",
    "mwcs_delays",
    "network_point",
    "network_series",
    "prepare_pair",
    "reference_id",
    "select_reference",
    "stretch_reference",
    "stretching_error",
    "weaver_error",
    "weighted_median",
]
