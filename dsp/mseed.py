"""Decode and validate raw MiniSEED records in memory (bytes in, ObsPy ``Stream`` out; no file paths)."""

from __future__ import annotations

import io
import warnings
from fractions import Fraction

import numpy as np
import obspy
from obspy.io.mseed import InternalMSEEDWarning
from obspy.io.mseed.util import get_record_information

from contracts.params import ProcessingParams
from dsp.errors import (
    CorruptMiniSEED,
    EmptyRecord,
    MixedChannels,
    NonFiniteSamples,
    UnsupportedSamplingRate,
)
from dsp.seed import validate_seed_id

MAX_RATIO_TERM = 1000  # largest up/down factor accepted for rational resampling


def decode_mseed(data: bytes, source: str, *, headonly: bool = False) -> obspy.Stream:
    """Decode MiniSEED bytes into a Stream.

    Args:
        data: the raw bytes of one file or object.
        source: a name for error messages.
        headonly: read headers only (fast; no samples).

    Returns:
        The decoded stream, with at least one trace.

    Raises:
        EmptyRecord: no bytes, or no trace inside.
        CorruptMiniSEED: the bytes are not MiniSEED, or libmseed reported damage (e.g. a truncated record).
    """
    if not data:
        raise EmptyRecord(source, "no bytes")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InternalMSEEDWarning)
        try:
            stream = obspy.read(io.BytesIO(data), format="MSEED", headonly=headonly)
        # ObsPy raises bare Exception, ValueError, struct errors... for junk; all mean "not MiniSEED" here.
        except Exception as exc:
            raise CorruptMiniSEED(source, f"not decodable MiniSEED: {exc}") from exc
    damage = [str(w.message) for w in caught if issubclass(w.category, InternalMSEEDWarning)]
    if damage:
        raise CorruptMiniSEED(source, f"damaged MiniSEED: {damage[0]}")
    if len(stream) == 0 or all(tr.stats.npts == 0 for tr in stream):
        raise EmptyRecord(source, "no samples")
    _check_complete(data, source)
    return stream


def _check_complete(data: bytes, source: str) -> None:
    """Reject a file whose last record is cut short (libmseed drops such a record without a word).

    Fast path: records of one length tile the file exactly. Otherwise walk the record headers, which also
    accepts files that mix record lengths.
    """
    if get_record_information(io.BytesIO(data), 0)["excess_bytes"] == 0:
        return
    offset = 0
    while offset < len(data):
        try:
            offset += int(get_record_information(io.BytesIO(data), offset)["record_length"])
        except Exception as exc:  # ObsPy raises bare exceptions for a damaged header
            raise CorruptMiniSEED(source, f"damaged record header at byte {offset}: {exc}") from exc
    if offset != len(data):
        raise CorruptMiniSEED(source, f"damaged MiniSEED: last record truncated ({len(data)} bytes)")


def check_stream(stream: obspy.Stream, source: str, params: ProcessingParams, *, data: bool = True) -> str:
    """Validate that a stream is one channel at one supported rate with finite samples.

    Args:
        stream: traces of one station channel (possibly several segments).
        source: a name for error messages.
        params: the processing parameters (accepted rate range, band).
        data: also check the samples (set False for header-only streams).

    Returns:
        The stream's validated SEED id.

    Raises:
        EmptyRecord, MixedChannels, InvalidSeedId, UnsupportedSamplingRate, NonFiniteSamples.
    """
    if len(stream) == 0:
        raise EmptyRecord(source, "no traces")
    ids = sorted({tr.id for tr in stream})
    if len(ids) > 1:
        raise MixedChannels(source, f"{len(ids)} SEED ids in one input: {', '.join(ids[:4])}")
    rates = sorted({float(tr.stats.sampling_rate) for tr in stream})
    if len(rates) > 1:
        raise MixedChannels(source, f"{ids[0]} has several sampling rates {rates}")
    resample_ratio(rates[0], params, source)
    if data:
        for tr in stream:
            if not np.all(np.isfinite(tr.data)):
                bad = int(np.count_nonzero(~np.isfinite(tr.data)))
                raise NonFiniteSamples(source, f"{bad} NaN/inf samples in {tr.id} from {tr.stats.starttime}")
    return validate_seed_id(ids[0])


def resample_ratio(fs: float, params: ProcessingParams, source: str) -> tuple[int, int]:
    """The exact ``(up, down)`` ratio that takes ``fs`` to ``params.target_fs``.

    Raises:
        UnsupportedSamplingRate: ``fs`` is outside [min_fs, max_fs], cannot carry the band (Nyquist <=
        freqmax),
            or is no ratio of integers up to 1000 away from the target rate.
    """
    if not (params.min_fs <= fs <= params.max_fs):
        raise UnsupportedSamplingRate(source, f"{fs} Hz is outside [{params.min_fs}, {params.max_fs}] Hz")
    if fs / 2 <= params.freqmax:
        raise UnsupportedSamplingRate(source, f"{fs} Hz cannot carry the band up to {params.freqmax} Hz")
    ratio = Fraction(params.target_fs / fs).limit_denominator(MAX_RATIO_TERM)
    if ratio.numerator > MAX_RATIO_TERM or abs(float(ratio) * fs - params.target_fs) > 1e-9 * params.target_fs:
        raise UnsupportedSamplingRate(source, f"{fs} Hz has no exact rational ratio to {params.target_fs} Hz")
    return ratio.numerator, ratio.denominator
