"""Codecs: products and stack states round-trip exactly and reject damaged bytes."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsp import codec
from dsp.errors import CorruptProduct
from dsp.product import Coordinates, StationProduct, decode_product, encode_product


def _same(a: StationProduct, b: StationProduct) -> None:
    for name in ("seed_id", "window", "fs", "nfft", "k0", "cc_len", "step", "coordinates", "provenance"):
        assert getattr(a, name) == getattr(b, name), name
    for name in ("spectra", "valid", "gap_fraction"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name


def test_product_round_trip_is_exact_and_deterministic(products: list[StationProduct]) -> None:
    product = products[2]
    data = encode_product(product)
    back = decode_product(data)
    _same(product, back)
    assert encode_product(back) == data  # same content, same bytes: idempotent object writes
    assert np.load(io.BytesIO(data))["spectra"].dtype == np.complex64  # plain numpy can read it


def test_product_keeps_coordinates_and_provenance(products: list[StationProduct]) -> None:
    p = products[0]
    coords = Coordinates(45.1, 7.2, 300.0)
    with_coords = StationProduct(**{**p.__dict__, "coordinates": coords})
    back = decode_product(encode_product(with_coords))
    assert back.coordinates == coords
    steps = [s["step"] for s in back.provenance["steps"]]
    assert steps[:4] == ["grid", "demean_detrend", "taper", "resample"] and "whiten" in steps
    assert back.provenance["params"]["cc_len_s"] == 600.0


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_flipped_byte_is_detected(products: list[StationProduct], data: st.DataObject) -> None:
    blob = bytearray(encode_product(products[1]))
    pos = data.draw(st.integers(0, len(blob) - 1))
    blob[pos] ^= data.draw(st.integers(1, 255))
    with pytest.raises(CorruptProduct):
        decode_product(bytes(blob), "flipped")


@pytest.mark.parametrize("cut", [0, 10, 100, -1, -30])
def test_truncated_product_is_rejected(products: list[StationProduct], cut: int) -> None:
    blob = encode_product(products[0])
    with pytest.raises(CorruptProduct):
        decode_product(blob[:cut], "truncated")


def test_other_format_or_version_is_rejected(products: list[StationProduct]) -> None:
    other = codec.pack("xcorrflow.other", 1, {}, {})
    with pytest.raises(CorruptProduct, match="format"):
        decode_product(other)
    newer = codec.pack("xcorrflow.product", 99, {}, {})
    with pytest.raises(CorruptProduct, match="version"):
        decode_product(newer)


def test_pickles_and_foreign_members_are_rejected() -> None:
    buf = io.BytesIO()
    np.savez(buf, header=np.frombuffer(b'{"format":"xcorrflow.product","version":1}', np.uint8), x=np.array([{}]))
    with pytest.raises(CorruptProduct):
        decode_product(buf.getvalue())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("evil.txt", "x")
    with pytest.raises(CorruptProduct):
        decode_product(buf.getvalue())


def test_inconsistent_product_is_rejected(products: list[StationProduct]) -> None:
    p = products[0]
    broken = StationProduct(**{**p.__dict__, "valid": p.valid[:-1]})
    with pytest.raises(CorruptProduct, match="inconsistent"):
        decode_product(encode_product(broken))
    traversal = StationProduct(**{**p.__dict__, "seed_id": "../XF.S000.00.HHZ"})
    with pytest.raises(CorruptProduct):
        decode_product(encode_product(traversal))
