"""Pure arithmetic of ``bench.scale``: process groups, per-cell medians over rounds, ratios and the targets.

A *record* is one run's figures (see :func:`bench.scale.runner.run_pipeline_once`): ``n``, ``mode``, ``round``,
``status`` (``ok``, ``failed``, ``skipped``), ``reason``, ``makespan_s``, ``first_result_s``, ``pairs``,
``pairs_per_s``, ``core_s`` (core-seconds by group over the makespan, plus ``total`` and ``machine``),
``peak_rss_mb`` (MiB by service) and ``bytes``. A *science* record is the bound of one N in one round.
A *cell* is one (N, mode): the medians of its successful rounds, or the reason none succeeded.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

STACK_GROUPS = ("kafka", "s3", "prometheus")
RESERVED = ("total", "machine")
MIB_2GIB = 2048.0
TARGET_PAIRS_PER_S = 5000.0
TARGET_RSS_GROWTH = 1.3
TARGET_CORE_OVER_SCIENCE = 2.0


def emit(figures: dict[str, Any], output: Path | None) -> None:
    """A probe's figures as one JSON line, into ``output`` or on stdout (how the runner reads them back)."""
    text = json.dumps(figures)
    if output is None:
        print(text)
    else:
        output.write_text(text + "\n")


def group_core_s(raw: dict[str, float]) -> dict[str, float]:
    """Core-seconds by group with ``total`` (every followed group) and ``machine`` (all processes, others too)."""
    groups = {k: round(v, 2) for k, v in raw.items() if k != "machine"}
    return {**groups, "total": round(sum(groups.values()), 2), "machine": round(raw.get("machine", 0.0), 2)}


def role(label: str) -> str:
    """A worker instance's service: ``preprocess-0`` → ``preprocess``."""
    return re.sub(r"-\d+$", "", label)


def service_rss(sampled: dict[str, float], reported: dict[str, float | None]) -> dict[str, float]:
    """Peak MiB by service: the sampler's, raised by the run's own reading of its workers.

    The run names a worker by its log file (``scheduler``, ``preprocess-0``), the sampler by the role on its
    command line (``schedule``, ``preprocess``): a name that starts with the other's is the same service.
    """
    out = dict(sampled)
    for label, mib in reported.items():
        if mib is None:
            continue
        name = role(label)
        name = next((s for s in sampled if name.startswith(s) or s.startswith(name)), name)
        out[name] = max(out.get(name, 0.0), mib)
    return out


def median(values: Iterable[float | None]) -> float | None:
    """Median of the values present (None when there are none)."""
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def _median_dict(dicts: list[dict[str, Any]]) -> dict[str, float | None]:
    keys = dict.fromkeys(k for d in dicts for k in d)
    return {k: median(d.get(k) for d in dicts) for k in keys}


def cell(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of one (N, mode) over its rounds: medians of the successful runs, peak RSS the largest."""
    ok = [r for r in records if r.get("status") == "ok"]
    out: dict[str, Any] = {
        "runs": len(records),
        "ok": len(ok),
        "status": "ok" if len(ok) == len(records) else ("failed" if not ok else "partly failed"),
        "reasons": sorted({str(r.get("reason")) for r in records if r.get("status") != "ok"}),
    }
    if not ok:
        return out
    for key in ("makespan_s", "first_result_s", "pairs", "pairs_per_s"):
        out[key] = median(r.get(key) for r in ok)
    out["core_s"] = _median_dict([r.get("core_s") or {} for r in ok])
    out["bytes"] = _median_dict([r.get("bytes") or {} for r in ok])
    rss: dict[str, float] = {}
    for r in ok:
        for name, mib in (r.get("peak_rss_mb") or {}).items():
            rss[name] = max(rss.get(name, 0.0), mib)
    out["peak_rss_mb"] = rss
    return out


def cells(records: list[dict[str, Any]]) -> dict[int, dict[str, dict[str, Any]]]:
    """Every (N, mode) cell, N ascending and modes in the order first run."""
    out: dict[int, dict[str, dict[str, Any]]] = {}
    for n in sorted({r["n"] for r in records}):
        modes = dict.fromkeys(r["mode"] for r in records if r["n"] == n)
        out[n] = {m: cell([r for r in records if r["n"] == n and r["mode"] == m]) for m in modes}
    return out


def science_cells(science: list[dict[str, Any]]) -> dict[int, dict[str, float | None]]:
    """Medians of the science bound per N."""
    keys = ("preprocess_core_s", "kernel_core_s", "core_s", "preprocess_wall_s", "kernel_wall_s", "wall_s")
    floor = tuple(f"transport_{p}_{side}_core_s" for p in ("put", "get") for side in ("client", "server"))
    out = {}
    for n in sorted({s["n"] for s in science}):
        ok = [s for s in science if s["n"] == n and s.get("status") == "ok"]
        out[n] = {k: median(s.get(k) for s in ok) for k in keys} | {"rounds": len(ok)}
        moved = [s for s in ok if s.get("transport_status") == "ok"]
        if moved:  # science plus the CCFs through the store and back, per round, then the median
            out[n] |= {k: median(s.get(k) for s in moved) for k in (*floor, "transport_core_s", "transport_bytes")}
            out[n]["floor_core_s"] = median(s["core_s"] + s["transport_core_s"] for s in moved)
    return out


def _per_round(records: list[dict[str, Any]], n: int, mode: str) -> dict[int, dict[str, Any]]:
    return {r["round"]: r for r in records if r["n"] == n and r["mode"] == mode and r.get("status") == "ok"}


def _round_ratio(num: dict[int, float], den: dict[int, float]) -> float | None:
    """Median over rounds of num/den, each round against itself."""
    return median(num[k] / den[k] for k in num if den.get(k))


def ratios(records: list[dict[str, Any]], science: list[dict[str, Any]]) -> dict[str, Any]:
    """In-run ratios: streaming/barrier and streaming/inprocess makespans, total core-s over science core-s
    (each per N, medians of per-round ratios), and each service's peak RSS at the largest N over the next."""
    out: dict[str, Any] = {"streaming_over_barrier": {}, "streaming_over_inprocess": {}, "core_over_science": {}}
    for n in sorted({r["n"] for r in records}):
        span = {m: {k: r["makespan_s"] for k, r in _per_round(records, n, m).items()} for m in _modes(records)}
        if "streaming" in span:
            for other, key in (("barrier", "streaming_over_barrier"), ("inprocess", "streaming_over_inprocess")):
                if other in span and (value := _round_ratio(span["streaming"], span[other])) is not None:
                    out[key][n] = value
        sci = {s["round"]: s["core_s"] for s in science if s["n"] == n and s.get("status") == "ok"}
        per_mode = {}
        for mode in _modes(records):
            total = {k: r["core_s"]["total"] for k, r in _per_round(records, n, mode).items() if r.get("core_s")}
            if (value := _round_ratio(total, sci)) is not None:
                per_mode[mode] = value
        if per_mode:
            out["core_over_science"][n] = per_mode
    out["rss_growth"] = rss_growth(cells(records))
    return out


def _modes(records: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["mode"] for r in records))


def rss_growth(table: dict[int, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Peak RSS of each service at the largest N over the same at the next smaller N, per mode."""
    ns = sorted(table)
    if len(ns) < 2:
        return {}
    lo, hi = ns[-2], ns[-1]
    per_mode = {}
    for mode, big in table[hi].items():
        small = table[lo].get(mode, {})
        a, b = small.get("peak_rss_mb") or {}, big.get("peak_rss_mb") or {}
        per_mode[mode] = {s: round(b[s] / a[s], 2) for s in b if a.get(s)}
    return {"from": lo, "to": hi, "by_mode": per_mode}
