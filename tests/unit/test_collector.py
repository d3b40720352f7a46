"""The streaming export of a pipeline run: stacks written as soon as a pair is final, and only then."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import obspy

from dsp.ccf import encode_ccfs
from dsp.correlate import CcfBatch
from dsp.params import ProcessingParams
from storage import MemoryStore
from xcorrflow.collector import StackCollector

PARAMS = ProcessingParams(cc_len_s=600, step_s=300, maxlag_s=100)
N_LAGS = 2 * PARAMS.maxlag + 1
A, B, C = "XX.A..HHZ", "XX.B..HHZ", "XX.C..HHZ"


def _put(store: MemoryStore, window: str, pairs: list[tuple[str, str]], seed: int) -> tuple[str, np.ndarray]:
    ccfs = np.random.default_rng(seed).standard_normal((len(pairs), N_LAGS)).astype(np.float32)
    batch = CcfBatch(window, 20.0, PARAMS.maxlag, tuple(pairs), ccfs, np.ones(len(pairs), np.int64))
    key = f"ccf/{window}/{pairs[0][0]}.r{seed}.npz"  # the collector reads a run's namespace-scoped store
    store.put(key, encode_ccfs(batch))
    return key, ccfs


def test_pairs_are_written_when_their_last_window_is_in(tmp_path: Path) -> None:
    store = MemoryStore()
    k1, w1 = _put(store, "20240101T000000Z", [(A, B), (A, C)], 1)
    k2, w2 = _put(store, "20240101T010000Z", [(A, B)], 2)
    expected = {f"{A}__{B}": 2, f"{A}__{C}": 1, f"{B}__{C}": 1}
    collector = StackCollector(store, PARAMS, tmp_path, [A, B, C], lambda _s: None, threads=2)
    collector.offer(k1)
    collector.offer(k1)  # named by a second PairCorrelated: fetched once
    for f in list(collector._futures):
        f.result()
    assert collector.write_final(expected.__getitem__) == 1, "only A__C is complete after the first window"
    collector.offer(k2)
    assert collector.finish() == 2, "A__B completes; B__C never had a CCF and is not written"
    ab = obspy.read(str(tmp_path / f"{A}__{B}.sac"))[0]
    np.testing.assert_allclose(ab.data, (w1[0] + w2[0]) / 2, rtol=1e-6)
    assert ab.stats.sac.user0 == 2 and ab.stats.sac.b == -PARAMS.maxlag_s
    ac = obspy.read(str(tmp_path / f"{A}__{C}.sac"))[0]
    np.testing.assert_allclose(ac.data, w1[1], rtol=1e-6)
    assert not (tmp_path / f"{B}__{C}.sac").exists()
