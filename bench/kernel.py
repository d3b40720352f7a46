"""DSP kernel benchmark: ``python -m bench.kernel`` (``make bench-kernel``).

Measures, in one run so that every figure shares the machine's current load:
  * correlation pairs/s on the reference configuration (1 h at 20 Hz, 600 s sub-windows every 300 s, +-100 s)
    for N = 40 and N = 130 stations: a straightforward per-pair numpy baseline, intermediate ideas, and the
    batched kernel (one and two FFT threads), before and after allocator tuning;
  * where the kernel's time goes (cross-spectra vs inverse FFT);
  * preprocessing throughput in station-hours/s from 100 Hz input (from a Stream, and from MiniSEED bytes);
  * peak RSS.
Every timing is the median of several repeats. Results: a table on stdout and ``bench/results/kernel.json``.

Ideas measured in side experiments that did not win (us per pair, N=130, same machine, interleaved runs):
  * cross-spectra by fancy-index gathers from one block (45-100) or one row at a time (~110) vs plain row
    slices of a block product (17-24); a full N x N cross-spectral matrix per bin (18-150: memory bound);
    einsum over a row (50); a loop over sub-windows (40-100); a numba loop (15: not worth the dependency);
  * inverse FFT: polyphase split into 4 irffts of nfft/4 (105 vs 53); other 5/7-smooth sizes near 14400
    (35-48 vs 35); numpy.fft (58 vs 46); ducc0 (30 vs 37, GPL-licensed) and pyFFTW (37-51) as backends;
    an irfft along axis 0 to skip a transpose (~140 vs 54).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import obspy
import scipy.fft

from contracts.params import ProcessingParams
from dsp.correlate import (
    DEFAULT_CHUNK,
    all_pairs,
    correlate,
    correlate_row,
    cross_spectra_rows,
    row_blocks,
    spectra_to_lags,
)
from dsp.preprocess import preprocess_bytes, preprocess_window
from dsp.product import StationProduct
from xcorrflow.orchestration.tuning import tune_allocator

RESULTS = Path(__file__).parent / "results" / "kernel.json"
REFERENCE = ProcessingParams(cc_len_s=600, step_s=300, maxlag_s=100)
WINDOW = "20240101T000000Z"


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def make_trace(station: int, fs: float, seed: int) -> obspy.Trace:
    """One hour of white noise for station ``station`` at ``fs``."""
    tr = obspy.Trace(np.random.default_rng(seed + station).standard_normal(round(3600 * fs)))
    tr.stats.update({"network": "XB", "station": f"S{station:03d}", "channel": "HHZ", "sampling_rate": fs})
    tr.stats.starttime = obspy.UTCDateTime(2024, 1, 1)
    return tr


def make_products(n: int, params: ProcessingParams) -> list[StationProduct]:
    """Products of ``n`` stations from one hour of 20 Hz noise each."""
    return [preprocess_window(obspy.Stream([make_trace(i, 20.0, 0)]), WINDOW, params) for i in range(n)]


# --- correlation variants, from the straightforward baseline to the kernel ---------------------------------
def baseline_per_pair(products: Sequence[StationProduct], maxlag: int) -> np.ndarray:
    """Straightforward numpy: per pair, full-length complex64 spectra, masked mean over sub-windows, irfft."""
    first = products[0]
    full = []
    for p in products:  # per-station spectra once (fair), zero-padded to the full rfft length
        f = np.zeros((p.n_subwindows, first.nfft // 2 + 1), np.complex64)
        f[:, p.k0 : p.k0 + p.spectra.shape[1]] = p.spectra
        full.append(f)
    out = []
    for i, j in all_pairs(products):
        common = products[i].valid & products[j].valid
        cross = (np.conj(full[i][common]) * full[j][common]).mean(axis=0)
        circ = np.fft.irfft(cross, n=first.nfft)
        out.append(np.concatenate((circ[-maxlag:], circ[: maxlag + 1])))
    return np.array(out)


def band_per_pair(products: Sequence[StationProduct], maxlag: int) -> np.ndarray:
    """Idea 1: multiply only the band bins, then scipy's irfft, still one pair at a time."""
    first, out = products[0], []
    for i, j in all_pairs(products):
        common = products[i].valid & products[j].valid
        cross = (np.conj(products[i].spectra[common]) * products[j].spectra[common]).mean(axis=0)
        out.append(spectra_to_lags(cross[None, :], first.k0, first.nfft, maxlag, None)[0])
    return np.array(out)


def row_wise(products: Sequence[StationProduct], maxlag: int) -> np.ndarray:
    """Idea 2: one station against all later ones at once (broadcast multiply + sum), batched irfft."""
    first, out = products[0], []
    order = sorted(range(len(products)), key=lambda k: products[k].seed_id)
    spec = np.stack([products[k].spectra for k in order])  # [n, n_sub, n_bins], invalid rows are zero
    valid = np.stack([products[k].valid for k in order]).astype(np.float32)
    for r in range(len(order) - 1):
        cross = np.einsum("sk,bsk->bk", np.conj(spec[r]), spec[r + 1 :])
        cross /= (valid[r + 1 :] @ valid[r])[:, None]
        out.append(spectra_to_lags(cross, first.k0, first.nfft, maxlag, None))
    return np.concatenate(out)


def kernel(products: Sequence[StationProduct], maxlag: int, workers: int | None) -> np.ndarray:
    """The batched kernel (:func:`dsp.correlate.correlate`)."""
    return np.concatenate([b.ccfs for b in correlate(products, maxlag, workers=workers)])


def row_tasks(products: Sequence[StationProduct], maxlag: int) -> np.ndarray:
    """The correlator's row tasks (:func:`dsp.correlate.correlate_row`): each station against every later one
    (by SEED id), one FFT thread, in :func:`all_pairs` order."""
    order = sorted(range(len(products)), key=lambda k: products[k].seed_id)
    ranked = [products[k] for k in order]
    return np.concatenate(
        [correlate_row(r, ranked[i + 1 :], maxlag, workers=1).ccfs for i, r in enumerate(ranked[:-1])]
    )


def kernel_profile(products: Sequence[StationProduct], maxlag: int, repeats: int) -> dict[str, float]:
    """Microseconds per pair in the kernel's two stages (single thread, the kernel's row blocks)."""
    ranked = sorted(products, key=lambda p: p.seed_id)
    by_bin = np.ascontiguousarray(np.stack([p.spectra for p in ranked]).transpose(2, 0, 1))
    blocks = [t.rows for t in row_blocks(len(ranked), DEFAULT_CHUNK) if t.rows is not None]
    crosses = [cross_spectra_rows(by_bin, r0, r1) for r0, r1 in blocks]
    n_pairs, first = sum(c.shape[0] for c in crosses), products[0]
    t_cross = median_time(lambda: [cross_spectra_rows(by_bin, r0, r1) for r0, r1 in blocks], repeats)
    t_fft = median_time(lambda: [spectra_to_lags(c, first.k0, first.nfft, maxlag, 1) for c in crosses], repeats)
    return {"cross_spectra_us_per_pair": 1e6 * t_cross / n_pairs, "irfft_us_per_pair": 1e6 * t_fft / n_pairs}


def kernel_rss_probe(n: int) -> float:
    """Peak RSS (MiB) of a fresh process that builds ``n`` products and correlates all pairs (2 threads)."""
    code = (
        "from bench.kernel import make_products, kernel, REFERENCE;"
        f"p = make_products({n}, REFERENCE); kernel(p, REFERENCE.maxlag, 2);"
        "print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])"
    )  # VmHWM, not ru_maxrss: a child inherits its parent's ru_maxrss across fork
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    return round(int(done.stdout.split()[-1]) / 1024, 1)


def bench_correlation(n: int, repeats: int, variants: bool) -> dict[str, Any]:
    """All correlation figures for ``n`` stations."""
    products = make_products(n, REFERENCE)
    maxlag, n_pairs = REFERENCE.maxlag, n * (n - 1) // 2
    reference = baseline_per_pair(products, maxlag)
    runs: dict[str, Callable[[], np.ndarray]] = {"baseline_per_pair_numpy": lambda: baseline_per_pair(products, maxlag)}
    if variants:
        runs["band_bins_per_pair"] = lambda: band_per_pair(products, maxlag)
        runs["row_wise_einsum"] = lambda: row_wise(products, maxlag)
    runs["row_tasks_workers1"] = lambda: row_tasks(products, maxlag)
    runs["kernel_workers1"] = lambda: kernel(products, maxlag, 1)
    runs["kernel_workers2"] = lambda: kernel(products, maxlag, 2)
    out: dict[str, Any] = {
        "stations": n,
        "pairs": n_pairs,
        "pairs_per_s": {},
        "max_rel_error_vs_baseline": {},
    }
    for name, fn in runs.items():
        seconds = median_time(fn, repeats if name != "baseline_per_pair_numpy" else max(2, repeats // 2))
        out["pairs_per_s"][name] = round(n_pairs / seconds, 1)
        err = np.abs(fn() - reference).max() / np.abs(reference).max()
        out["max_rel_error_vs_baseline"][name] = float(f"{err:.2e}")
    out["profile"] = {k: round(v, 2) for k, v in kernel_profile(products, maxlag, repeats).items()}
    best = max((k for k in out["pairs_per_s"] if k.startswith("kernel")), key=lambda k: out["pairs_per_s"][k])
    out["best_kernel"] = best
    out["speedup_vs_baseline"] = round(out["pairs_per_s"][best] / out["pairs_per_s"]["baseline_per_pair_numpy"], 2)
    return out


def bench_preprocessing(stations: int, repeats: int) -> dict[str, Any]:
    """Station-hours/s from 100 Hz input, from in-memory Streams and from MiniSEED bytes."""
    traces = [make_trace(i, 100.0, 1) for i in range(stations)]
    blobs = []
    for tr in traces:
        buf = io.BytesIO()
        tr_int = tr.copy()
        tr_int.data = np.round(tr.data * 1000).astype(np.int32)
        tr_int.write(buf, format="MSEED", encoding="STEIM2", reclen=4096)
        blobs.append(buf.getvalue())
    t_stream = median_time(lambda: [preprocess_window(obspy.Stream([tr]), WINDOW, REFERENCE) for tr in traces], repeats)
    t_bytes = median_time(lambda: [preprocess_bytes([b], WINDOW, REFERENCE) for b in blobs], repeats)
    return {
        "input_fs": 100.0,
        "station_hours": stations,
        "station_hours_per_s_from_stream": round(stations / t_stream, 1),
        "station_hours_per_s_from_mseed_bytes": round(stations / t_bytes, 1),
        "ms_per_station_hour_from_stream": round(1e3 * t_stream / stations, 2),
    }


def table(results: dict[str, Any]) -> str:
    """Human-readable summary."""
    corr = results["correlation"]
    lines = [f"{'variant':34s} " + " ".join(f"{'N=' + str(r['stations']):>12s}" for r in corr)]
    phases = ("default_allocator", "tuned_allocator")
    names = list(dict.fromkeys(n for ph in phases for r in results[ph] for n in r["pairs_per_s"]))
    for phase in phases:
        for name in names:
            row = [r["pairs_per_s"].get(name) for r in results[phase]]
            if any(v is not None for v in row):
                cells = " ".join(f"{v:12,.0f}" if v is not None else f"{'-':>12s}" for v in row)
                lines.append(f"{name + ' [' + phase.split('_')[0] + ']':34s} {cells}  pairs/s")
    for r in corr:
        best, gain = r["best_kernel"], r["speedup_vs_baseline"]
        lines.append(f"N={r['stations']}: {best} is x{gain} the baseline; profile {r['profile']}")
    pre, pre0 = results["preprocessing"], results["preprocessing_default_allocator"]
    lines.append(
        f"preprocessing from 100 Hz: {pre['station_hours_per_s_from_stream']} station-h/s (Stream), "
        f"{pre['station_hours_per_s_from_mseed_bytes']} (MiniSEED bytes); "
        f"default allocator: {pre0['station_hours_per_s_from_stream']} (Stream)"
    )
    lines.append(
        f"peak RSS: bench process {results['peak_rss_mib']} MiB; kernel alone (fresh process, products + "
        f"all pairs): {results['kernel_peak_rss_mib']} MiB"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table and write the JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.kernel", description=__doc__.splitlines()[0])
    parser.add_argument("--stations", default="40,130", help="station counts (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats per timing (median; default %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON output (default %(default)s)")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.stations.split(",")]
    t0 = time.perf_counter()
    load = os.getloadavg()
    default = [bench_correlation(n, args.repeats, variants=True) for n in counts]
    pre_default = bench_preprocessing(8, max(2, args.repeats // 2))
    tuned_ok = tune_allocator()
    tuned = [bench_correlation(n, args.repeats, variants=False) for n in counts]
    pre_tuned = bench_preprocessing(8, max(2, args.repeats // 2))
    results: dict[str, Any] = {
        "config": {
            "window_s": 3600,
            "fs": 20.0,
            **{k: REFERENCE.model_dump()[k] for k in ("cc_len_s", "step_s", "maxlag_s")},
        },
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_at_start": load,
            "load_avg_at_end": None,
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
        },
        "default_allocator": default,
        "tuned_allocator": tuned,
        "allocator_tuning_applied": tuned_ok,
        "correlation": [
            max((d, t), key=lambda r: r["pairs_per_s"][r["best_kernel"]]) for d, t in zip(default, tuned, strict=True)
        ],
        "preprocessing_default_allocator": pre_default,
        "preprocessing": pre_tuned,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "kernel_peak_rss_mib": {str(n): kernel_rss_probe(n) for n in counts},
        "bench_seconds": None,
    }
    results["bench_seconds"] = round(time.perf_counter() - t0, 1)
    results["machine"]["load_avg_at_end"] = os.getloadavg()
    print(table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
