"""The batched kernel against the literal reference, the sign/lag contract, masks and time reversal."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsp.correlate import DEFAULT_CHUNK, all_pairs, correlate, correlate_pair_reference, correlate_row, lag_axis
from dsp.product import StationProduct

NFFT, K0, NBINS, NSUB, CC_LEN = 720, 20, 200, 5, 500
MAXLAG = 100  # NFFT >= CC_LEN + MAXLAG + margin


def fake_product(seed_id: str, spectra: np.ndarray, valid: np.ndarray | None = None) -> StationProduct:
    """A product with given spectra (no preprocessing), for exact kernel properties."""
    n_sub = spectra.shape[0]
    mask = np.ones(n_sub, bool) if valid is None else valid
    spectra = np.where(mask[:, None], spectra, 0).astype(np.complex64)
    return StationProduct(
        seed_id, "20240101T000000Z", 20.0, NFFT, K0, CC_LEN, 250, spectra, mask, np.zeros(n_sub, np.float32)
    )


def random_spectra(rng: np.random.Generator, n_sub: int = NSUB) -> np.ndarray:
    return np.exp(2j * np.pi * rng.random((n_sub, NBINS)))  # unit modulus, like whitened spectra


def delayed(spectra: np.ndarray, shift: int) -> np.ndarray:
    """Spectra of the same records delayed by ``shift`` samples (B(t) = A(t - shift))."""
    k = np.arange(K0, K0 + NBINS)
    return spectra * np.exp(-2j * np.pi * k * shift / NFFT)


def test_batched_kernel_equals_reference_on_real_products(products: list[StationProduct], params) -> None:
    batches = list(correlate(products, params.maxlag, chunk=4))
    got = {p: c for b in batches for p, c in zip(b.pairs, b.ccfs, strict=True)}
    by_id = {p.seed_id: p for p in products}
    assert len(got) == len(products) * (len(products) - 1) // 2
    for (a, b), ccf in got.items():
        ref = correlate_pair_reference(by_id[a], by_id[b], params.maxlag)
        assert ccf.dtype == np.float32
        np.testing.assert_allclose(ccf, ref, atol=2e-5 * np.abs(ref).max())


def test_kernel_equals_reference_with_different_masks() -> None:
    rng = np.random.default_rng(3)
    masks = [
        np.array([1, 1, 0, 1, 1], bool),
        np.array([0, 1, 1, 1, 0], bool),
        np.array([1, 1, 1, 1, 1], bool),
    ]
    prods = [fake_product(f"XX.S{i}.00.HHZ", random_spectra(rng), m) for i, m in enumerate(masks)]
    batch = next(correlate(prods, MAXLAG))
    assert list(batch.n_common) == [2, 4, 3]  # only sub-windows valid in both stations count
    for (a, b), ccf in zip(batch.pairs, batch.ccfs, strict=True):
        pa, pb = (next(p for p in prods if p.seed_id == s) for s in (a, b))
        np.testing.assert_allclose(ccf, correlate_pair_reference(pa, pb, MAXLAG), atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(st.integers(-MAXLAG, MAXLAG), st.integers(0, 2**32 - 1))
def test_peak_sits_at_arrival_b_minus_arrival_a(shift: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    base = random_spectra(rng)
    a = fake_product("XX.A.00.HHZ", base)
    b = fake_product("XX.B.00.HHZ", delayed(base, shift))  # B arrives `shift` samples after A
    batch = next(correlate([b, a], MAXLAG))  # input order must not matter: A < B by SEED id
    assert batch.pairs == (("XX.A.00.HHZ", "XX.B.00.HHZ"),)
    assert int(np.argmax(batch.ccfs[0])) - MAXLAG == shift
    assert lag_axis(20.0, MAXLAG)[MAXLAG] == 0.0


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_time_reversal(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = fake_product("XX.A.00.HHZ", random_spectra(rng), rng.random(NSUB) > 0.3)
    b = fake_product("XX.B.00.HHZ", random_spectra(rng), rng.random(NSUB) > 0.3)
    np.testing.assert_allclose(
        correlate_pair_reference(b, a, MAXLAG), correlate_pair_reference(a, b, MAXLAG)[::-1], atol=1e-12
    )


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 7), st.integers(1, 9))
def test_chunking_and_pair_subsets_do_not_change_results(seed: int, n: int, chunk: int) -> None:
    rng = np.random.default_rng(seed)
    prods = [fake_product(f"XX.S{i}.00.HHZ", random_spectra(rng)) for i in rng.permutation(n)]
    whole = next(correlate(prods, MAXLAG, chunk=10_000))
    parts = list(correlate(prods, MAXLAG, chunk=chunk))
    assert tuple(p for b in parts for p in b.pairs) == whole.pairs
    np.testing.assert_allclose(np.concatenate([b.ccfs for b in parts]), whole.ccfs, atol=1e-6)
    pairs = all_pairs(prods)[::2]
    subset = next(correlate(prods, MAXLAG, pairs=[(j, i) for i, j in pairs], chunk=10_000))
    rows = [whole.pairs.index(p) for p in subset.pairs]
    np.testing.assert_allclose(subset.ccfs, whole.ccfs[rows], atol=1e-6)


def test_pairs_with_too_few_common_subwindows_are_skipped() -> None:
    rng = np.random.default_rng(5)
    a = fake_product("XX.A.00.HHZ", random_spectra(rng), np.array([1, 1, 0, 0, 0], bool))
    b = fake_product("XX.B.00.HHZ", random_spectra(rng), np.array([0, 0, 1, 1, 1], bool))
    c = fake_product("XX.C.00.HHZ", random_spectra(rng))
    batch = next(correlate([a, b, c], MAXLAG, min_common=2))
    assert batch.pairs == (("XX.A.00.HHZ", "XX.C.00.HHZ"), ("XX.B.00.HHZ", "XX.C.00.HHZ"))
    assert [(s.a, s.b) for s in batch.skipped] == [("XX.A.00.HHZ", "XX.B.00.HHZ")]
    assert "0 common" in batch.skipped[0].reason


def test_synthetic_pairs_peak_exactly_at_true_lag(products: list[StationProduct], truth, params) -> None:
    for batch in correlate(products, params.maxlag):
        for key, ccf in zip(batch.keys, batch.ccfs, strict=True):
            assert int(np.argmax(ccf)) - params.maxlag == truth["pairs"][key]["lag_samples"], key


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_do_not_change_results(products: list[StationProduct], params, workers: int) -> None:
    one = next(correlate(products, params.maxlag, workers=1)).ccfs
    np.testing.assert_allclose(next(correlate(products, params.maxlag, workers=workers)).ccfs, one, atol=1e-6)


def test_row_kernel_orients_pairs_and_matches_all_pairs(products: list[StationProduct], params) -> None:
    whole = next(correlate(products, params.maxlag, chunk=10_000))
    new = products[3]  # some ids sort before it, some after
    batch = correlate_row(new, products[:3] + products[4:], params.maxlag)
    assert len(batch.pairs) == len(products) - 1
    for pair, ccf in zip(batch.pairs, batch.ccfs, strict=True):
        assert pair[0] < pair[1] and new.seed_id in pair
        np.testing.assert_allclose(ccf, whole.ccfs[whole.pairs.index(pair)], atol=1e-6)


def test_a_row_longer_than_one_inverse_fft_block_is_correlated_whole() -> None:
    rng = np.random.default_rng(7)
    n = DEFAULT_CHUNK + 45  # two blocks, the second partial
    ids = [f"XX.S{i:03d}.00.HHZ" for i in range(n + 1)]
    masks = [rng.random(NSUB) < 0.8 for _ in ids]
    prods = [fake_product(i, random_spectra(rng), m) for i, m in zip(ids, masks, strict=True)]
    batch = correlate_row(prods[100], prods[:100] + prods[101:], MAXLAG)
    assert len(batch.pairs) == n - len(batch.skipped) > DEFAULT_CHUNK
    for k in (0, DEFAULT_CHUNK - 1, DEFAULT_CHUNK, len(batch.pairs) - 1):  # each side of the block edge
        pa, pb = (next(p for p in prods if p.seed_id == x) for x in batch.pairs[k])
        np.testing.assert_allclose(batch.ccfs[k], correlate_pair_reference(pa, pb, MAXLAG), atol=1e-5)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), position=st.integers(0, 4))
def test_row_kernel_equals_reference_with_masks_and_skips(seed: int, position: int) -> None:
    rng = np.random.default_rng(seed)
    ids = [f"XX.S{i}.00.HHZ" for i in range(5)]
    masks = [rng.random(NSUB) < 0.7 for _ in ids]
    prods = [fake_product(i, random_spectra(rng), m) for i, m in zip(ids, masks, strict=True)]
    row, others = prods[position], prods[:position] + prods[position + 1 :]
    batch = correlate_row(row, others, MAXLAG, min_common=2)
    for (a, b), ccf, n in zip(batch.pairs, batch.ccfs, batch.n_common, strict=True):
        pa, pb = (next(p for p in prods if p.seed_id == x) for x in (a, b))
        assert n == (pa.valid & pb.valid).sum() >= 2
        np.testing.assert_allclose(ccf, correlate_pair_reference(pa, pb, MAXLAG), atol=1e-5)
    for skip in batch.skipped:
        pa, pb = (next(p for p in prods if p.seed_id == x) for x in (skip.a, skip.b))
        assert (pa.valid & pb.valid).sum() < 2 and skip.a < skip.b
    assert len(batch.pairs) + len(batch.skipped) == len(others)


def test_the_row_kernel_normalises_bit_for_bit_as_conjugate_then_divide() -> None:
    from dsp.correlate import _row_cross_spectra, spectra_to_lags

    rng = np.random.default_rng(11)
    ids = [f"XX.S{i}.00.HHZ" for i in range(9)]
    prods = [fake_product(i, random_spectra(rng), rng.random(NSUB) < 0.7) for i in ids]
    row, others = prods[4], prods[:4] + prods[5:]  # four columns flipped, four not
    batch = correlate_row(row, others, MAXLAG)
    kept = [o for o in others if (o.valid & row.valid).sum() >= 1]
    cross = _row_cross_spectra(row, kept)
    flip = np.array([o.seed_id < row.seed_id for o in kept])
    cross[flip] = cross[flip].conj()
    cross /= np.array([(o.valid & row.valid).sum() for o in kept], dtype=np.float32)[:, None]
    np.testing.assert_array_equal(batch.ccfs, spectra_to_lags(cross, row.k0, row.nfft, MAXLAG, None))
