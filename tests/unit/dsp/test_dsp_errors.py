"""Every kind of bad input raises its own typed error, with a message naming the input; causes are kept."""

from __future__ import annotations

import io

import numpy as np
import obspy
import pytest

from contracts.errors import XcorrflowError
from contracts.params import ProcessingParams
from dsp.correlate import correlate
from dsp.errors import (
    CorruptMiniSEED,
    DspError,
    EmptyRecord,
    IncompatibleProducts,
    InvalidSeedId,
    MixedChannels,
    NonFiniteSamples,
    RecordTooShort,
    UnsupportedSamplingRate,
)
from dsp.mseed import decode_mseed
from dsp.preprocess import preprocess_bytes, preprocess_window
from dsp.product import StationProduct

WINDOW = "20240101T000000Z"
T0 = obspy.UTCDateTime(2024, 1, 1)


def trace(
    seconds: float = 3600, fs: float = 100.0, sta: str = "AAA", cha: str = "HHZ", dtype: type = np.float64
) -> obspy.Trace:
    rng = np.random.default_rng(1)
    tr = obspy.Trace(rng.standard_normal(int(seconds * fs)).astype(dtype))
    tr.stats.update({"network": "XX", "station": sta, "location": "00", "channel": cha, "sampling_rate": fs})
    tr.stats.starttime = T0
    return tr


def mseed_bytes(stream: obspy.Stream) -> bytes:
    buf = io.BytesIO()
    stream.write(buf, format="MSEED", reclen=512)
    return buf.getvalue()


def test_empty_bytes(params: ProcessingParams) -> None:
    with pytest.raises(EmptyRecord, match=r"f\.mseed"):
        preprocess_bytes([b""], WINDOW, params, sources=["f.mseed"])


@pytest.mark.parametrize("junk", [b"not miniseed at all" * 20, bytes(range(256)) * 8, b"\x00" * 4096])
def test_garbage_bytes(params: ProcessingParams, junk: bytes) -> None:
    with pytest.raises(CorruptMiniSEED, match=r"junk\.bin") as info:
        preprocess_bytes([junk], WINDOW, params, sources=["junk.bin"])
    assert info.value.__cause__ is not None  # the decoder's own error is kept


def test_truncated_record(params: ProcessingParams) -> None:
    data = mseed_bytes(obspy.Stream([trace(seconds=60, dtype=np.float32)]))
    with pytest.raises(CorruptMiniSEED, match="damaged"):
        decode_mseed(data[: len(data) - 100], "cut.mseed")


def test_nan_and_inf_samples(params: ProcessingParams) -> None:
    tr = trace(dtype=np.float32)
    tr.data[1000] = np.nan
    tr.data[2000] = np.inf
    with pytest.raises(NonFiniteSamples, match="2 NaN/inf"):
        preprocess_bytes([mseed_bytes(obspy.Stream([tr]))], WINDOW, params, sources=["nan.mseed"])


@pytest.mark.parametrize("fs", [2.0, 3.0, 2000.0, 99.99])
def test_unsupported_sampling_rates(params: ProcessingParams, fs: float) -> None:
    with pytest.raises(UnsupportedSamplingRate):
        preprocess_window(obspy.Stream([trace(seconds=700, fs=fs)]), WINDOW, params)


@pytest.mark.parametrize("fs", [5.0, 40.0, 50.0, 200.0, 250.0])
def test_supported_rates_are_accepted(params: ProcessingParams, fs: float) -> None:
    product = preprocess_window(obspy.Stream([trace(seconds=3600, fs=fs)]), WINDOW, params)
    assert product.valid.all()


def test_record_too_short(params: ProcessingParams) -> None:
    with pytest.raises(RecordTooShort, match="one sub-window"):
        preprocess_window(obspy.Stream([trace(seconds=params.cc_len_s - 1)]), WINDOW, params)


def test_mixed_channels_in_one_file(params: ProcessingParams) -> None:
    data = mseed_bytes(obspy.Stream([trace(cha="HHZ"), trace(cha="HHN")]))
    with pytest.raises(MixedChannels, match="2 SEED ids"):
        preprocess_bytes([data], WINDOW, params, sources=["zn.mseed"])


def test_mixed_rates_of_one_channel(params: ProcessingParams) -> None:
    second = trace(fs=50.0)
    second.stats.starttime = T0 + 3600
    with pytest.raises(MixedChannels, match="sampling rates"):
        preprocess_window(obspy.Stream([trace(), second]), WINDOW, params)


def test_invalid_seed_id_in_header(params: ProcessingParams) -> None:
    tr = trace()
    tr.stats.station = "A/../B"
    with pytest.raises(InvalidSeedId):
        preprocess_window(obspy.Stream([tr]), WINDOW, params)


def test_incompatible_products(products: list[StationProduct]) -> None:
    other = StationProduct(**{**products[1].__dict__, "nfft": products[1].nfft * 2})
    with pytest.raises(IncompatibleProducts):
        list(correlate([products[0], other], 100))
    with pytest.raises(IncompatibleProducts, match="wrap"):
        list(correlate(products[:2], products[0].nfft))


def test_every_error_is_a_dsp_and_xcorrflow_error() -> None:
    for cls in (CorruptMiniSEED, EmptyRecord, MixedChannels, NonFiniteSamples, RecordTooShort):
        err = cls("src", "detail")
        assert isinstance(err, DspError) and isinstance(err, XcorrflowError)
        assert err.source == "src" and "src" in str(err)
