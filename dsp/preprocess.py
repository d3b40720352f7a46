"""Preprocessing entry points: raw MiniSEED (bytes or a Stream) of one channel → per-window products."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from importlib import metadata
from typing import Any

import obspy

from contracts.params import ProcessingParams
from dsp.conditioning import condition
from dsp.errors import DspError
from dsp.mseed import check_stream, decode_mseed
from dsp.product import Coordinates, StationProduct
from dsp.spectra import band_bins, fft_size, gap_fractions, segments, whitened_spectra
from dsp.windows import window_start, windows_in_span


def preprocess_window(
    stream: obspy.Stream,
    window: str,
    params: ProcessingParams,
    *,
    source: str = "<stream>",
    coordinates: Coordinates | None = None,
    sources: Sequence[str] = (),
) -> StationProduct:
    """Turn one channel's traces into the product of one processing window.

    Args:
        stream: traces of one SEED id (several files or segments are merged; gaps are flagged).
        window: the window id (see :mod:`dsp.windows`).
        params: processing parameters.
        source: a name for error messages.
        coordinates: station position, carried into the product when known.
        sources: names of the raw inputs, recorded in the provenance.

    Returns:
        The product; sub-windows with more gap than ``max_gap_fraction`` are marked invalid and zeroed.

    Raises:
        EmptyRecord, MixedChannels, InvalidSeedId, UnsupportedSamplingRate, NonFiniteSamples, RecordTooShort,
        InvalidWindowId.
    """
    seed_id = check_stream(stream, source, params)
    t_w0 = window_start(window, params.window_s)
    cond = condition(stream, t_w0, params, f"{source} @ {window}")
    nfft = fft_size(params)
    gaps = gap_fractions(cond, params)
    valid = gaps <= params.max_gap_fraction
    segs, frac = segments(cond, params)
    spectra = whitened_spectra(segs, frac, params, nfft)
    spectra[~valid] = 0
    steps = [*cond.steps, *_spectral_steps(params, nfft, frac, int(valid.sum()), valid.size)]
    for array in (spectra, valid, gaps):
        array.setflags(write=False)
    return StationProduct(
        seed_id=seed_id,
        window=window,
        fs=params.target_fs,
        nfft=nfft,
        k0=band_bins(params, nfft)[0],
        cc_len=params.cc_len,
        step=params.step,
        spectra=spectra,
        valid=valid,
        gap_fraction=gaps,
        coordinates=coordinates,
        provenance=provenance(params, steps, sources),
    )


def preprocess_stream(
    stream: obspy.Stream,
    params: ProcessingParams,
    *,
    source: str = "<stream>",
    coordinates: Coordinates | None = None,
    sources: Sequence[str] = (),
) -> Iterator[tuple[str, StationProduct | DspError]]:
    """Products of every window a channel's traces overlap, in time order (e.g. 24 for a day file).

    Yields:
        ``(window id, product)``, or ``(window id, error)`` for a window that cannot be processed (e.g. a
        short tail), so one bad window does not sink the others.

    Raises:
        The validation errors of :func:`dsp.mseed.check_stream` (they concern every window alike).
    """
    check_stream(stream, source, params)
    t0 = min(float(tr.stats.starttime) for tr in stream)
    t1 = max(float(tr.stats.endtime) + tr.stats.delta for tr in stream)
    for wid in windows_in_span(t0, t1, params.window_s):
        try:
            yield (
                wid,
                preprocess_window(stream, wid, params, source=source, coordinates=coordinates, sources=sources),
            )
        except DspError as exc:
            yield wid, exc


def preprocess_bytes(
    blobs: Sequence[bytes],
    window: str,
    params: ProcessingParams,
    *,
    sources: Sequence[str] = (),
    coordinates: Coordinates | None = None,
) -> StationProduct:
    """Decode raw MiniSEED objects of one channel and make the product of ``window``.

    Args:
        blobs: the raw bytes of each file or object (one SEED id in all of them).
        window: the window id.
        params: processing parameters.
        sources: one name per blob, for errors and provenance (defaults to ``#0``, ``#1``…).
        coordinates: station position when known.

    Raises:
        CorruptMiniSEED, EmptyRecord and everything :func:`preprocess_window` raises.
    """
    names = list(sources) or [f"#{i}" for i in range(len(blobs))]
    stream = obspy.Stream()
    for blob, name in zip(blobs, names, strict=True):
        stream += decode_mseed(blob, name)
    label = names[0] if len(names) == 1 else f"{names[0]} (+{len(names) - 1})"
    return preprocess_window(stream, window, params, source=label, coordinates=coordinates, sources=names)


def _spectral_steps(params: ProcessingParams, nfft: int, frac: float, n_valid: int, n: int) -> list[dict[str, Any]]:
    k0, weights = band_bins(params, nfft)
    return [
        {
            "step": "subwindows",
            "cc_len_s": params.cc_len_s,
            "step_s": params.step_s,
            "max_gap_fraction": params.max_gap_fraction,
            "valid": n_valid,
            "total": n,
        },
        {"step": "segment_demean_taper", "type": "tukey", "fraction": params.taper_fraction},
        {"step": "fft", "nfft": nfft, "align_shift_samples": round(frac, 9)},
        {
            "step": "whiten" if params.whiten else "band_window",
            "band_hz": [params.freqmin, params.freqmax],
            "ramp_fraction": params.whiten_ramp_fraction,
            "bins": [k0, k0 + weights.size - 1],
        },
    ]


def provenance(params: ProcessingParams, steps: Sequence[dict[str, Any]], sources: Sequence[str]) -> dict[str, Any]:
    """Provenance record: each step with its parameters, the full parameter set, inputs, software versions."""
    return {
        "steps": list(steps),
        "params": params.model_dump(mode="json"),
        "sources": list(sources),
        "software": {name: _version(name) for name in ("xcorrflow", "numpy", "scipy", "obspy")},
    }


@functools.lru_cache(maxsize=8)
def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"
