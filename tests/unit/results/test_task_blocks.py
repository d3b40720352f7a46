"""A row task correlated block by block (:func:`results.windows.task_blocks`): the same bits as one call over the
whole row, each block starting a chunk, failed and skipped columns counted, and bounded memory per block."""

from __future__ import annotations

import numpy as np
import pytest

from dsp.correlate import correlate_row
from results.layout import CHUNK_PAIRS, slots_for
from results.manifest import FAILED
from results.windows import task_blocks
from tests.unit.dsp.test_dsp_kernel import MAXLAG, NSUB, fake_product, random_spectra


def _row(n: int, seed: int = 3):
    rng = np.random.default_rng(seed)
    ids = [f"XX.S{i:03d}.00.HHZ" for i in range(n + 1)]
    prods = [fake_product(i, random_spectra(rng), rng.random(NSUB) < 0.6) for i in ids]
    return prods[n // 2], prods[: n // 2] + prods[n // 2 + 1 :]  # columns on both sides of the row's id


@pytest.mark.parametrize("block_columns", [CHUNK_PAIRS, 2 * CHUNK_PAIRS, 1024])
def test_blocks_give_the_bits_of_one_call_over_the_row(block_columns: int) -> None:
    row, columns = _row(3 * CHUNK_PAIRS + 17)
    names = [c.seed_id for c in columns]
    missing = {names[5], names[CHUNK_PAIRS + 1], names[-1]}  # products that could not be read
    products = {c.seed_id: c for c in columns if c.seed_id not in missing}
    whole = correlate_row(row, list(products.values()), MAXLAG, min_common=2)
    at = {b if a == row.seed_id else a: k for k, (a, b) in enumerate(whole.pairs)}
    skipped = {s.b if s.a == row.seed_id else s.a for s in whole.skipped}
    assert skipped and len(at) > 2 * CHUNK_PAIRS  # the row has skipped, failed and correlated columns

    blocks = list(task_blocks(row, names, products, MAXLAG, min_common=2, block_columns=block_columns))

    assert [b.offset for b in blocks] == list(range(0, len(names), block_columns))
    assert sum(len(b.n_common) for b in blocks) == len(names)
    got_skipped = set()
    for block in blocks:
        assert block.offset % CHUNK_PAIRS == 0 and block.chunks.shape == (
            slots_for(len(block.n_common)),
            2 * MAXLAG + 1,
        )
        assert np.isnan(block.chunks[len(block.n_common) :]).all()  # the padding of the last chunk
        for k, count in enumerate(block.n_common):
            name = names[block.offset + k]
            if name in missing:
                assert count == FAILED and np.isnan(block.ccfs[k]).all()
            elif name in skipped:
                assert count == 0 and np.isnan(block.ccfs[k]).all()
            else:
                assert count == whole.n_common[at[name]]
                np.testing.assert_array_equal(block.ccfs[k], whole.ccfs[at[name]])
        got_skipped |= {s.b if s.a == row.seed_id else s.a for s in block.skipped}
    assert got_skipped == skipped


def test_a_block_is_a_whole_number_of_chunks() -> None:
    row, columns = _row(4)
    with pytest.raises(ValueError, match="multiple of"):
        next(task_blocks(row, [c.seed_id for c in columns], {c.seed_id: c for c in columns}, MAXLAG, block_columns=100))
