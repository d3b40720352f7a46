"""The report of ``bench.scale``: the summary, issue 11's targets, the markdown tables and the PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.scale.figures import (
    MIB_2GIB,
    RESERVED,
    STACK_GROUPS,
    TARGET_CORE_OVER_SCIENCE,
    TARGET_PAIRS_PER_S,
    TARGET_RSS_GROWTH,
    cells,
    ratios,
    science_cells,
)

TARGET_N = 520
MODES = ("streaming", "barrier", "inprocess")


def summarise(records: list[dict[str, Any]], science: list[dict[str, Any]], config: dict[str, Any]) -> dict[str, Any]:
    """Cells, science bound, ratios and targets of a benchmark."""
    table = cells(records)
    bound = science_cells(science)
    for n, sci in bound.items():  # the most pairs/s the machine's cores allow if the framework cost nothing
        pairs = next((c.get("pairs") for c in table.get(n, {}).values() if c.get("pairs")), None)
        core = sci.get("core_s")
        sci["ceiling_pairs_per_s"] = round(pairs / (core / config["cpus"]), 1) if pairs and core else None
        floor = sci.get("floor_core_s")  # the same with the CCFs' trip through the store counted
        sci["floor_ceiling_pairs_per_s"] = round(pairs / (floor / config["cpus"]), 1) if pairs and floor else None
    ratio = ratios(records, science)
    return {"config": config, "cells": table, "science": bound, "ratios": ratio, "targets": targets(table, ratio)}


def _target(text: str, value: Any, met: bool | None) -> dict[str, Any]:
    return {"target": text, "value": value, "met": met}


def targets(table: dict[int, dict[str, dict[str, Any]]], ratio: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 11's targets at N = 520 (or at the largest N run, which the texts then name)."""
    if not table:
        return []
    n = TARGET_N if TARGET_N in table else max(table)
    row = table[n]
    status = {m: row[m]["status"] if m in row else "not run" for m in MODES}
    out = [
        _target(
            f"N = {n} completes in all three modes",
            ", ".join(f"{m} {s}" for m, s in status.items()),
            all(s == "ok" for s in status.values()),
        )
    ]
    pps = row.get("streaming", {}).get("pairs_per_s")
    out.append(_target(f"streaming ≥ {TARGET_PAIRS_PER_S:,.0f} pairs/s at N = {n}", pps,
                       None if pps is None else pps >= TARGET_PAIRS_PER_S))  # fmt: skip
    peaks = {f"{m} {s}": mib for m, c in row.items() for s, mib in (c.get("peak_rss_mb") or {}).items()}
    worst = max(peaks.items(), key=lambda kv: kv[1]) if peaks else None
    out.append(_target(f"every service ≤ 2 GiB at N = {n}", f"largest {worst[1]} MiB ({worst[0]})" if worst else None,
                       None if worst is None else worst[1] <= MIB_2GIB))  # fmt: skip
    growth = ratio.get("rss_growth") or {}
    if growth:
        ups = {f"{m} {s}": g for m, per in growth["by_mode"].items() for s, g in per.items()}
        top = max(ups.items(), key=lambda kv: kv[1]) if ups else None
        out.append(_target(
            f"every service within {TARGET_RSS_GROWTH}× between N = {growth['from']} and N = {growth['to']}",
            f"largest {top[1]}× ({top[0]})" if top else None,
            None if top is None else top[1] <= TARGET_RSS_GROWTH,
        ))  # fmt: skip
    over = ratio.get("core_over_science", {}).get(n, {})
    out.append(_target(
        f"all processes ≤ {TARGET_CORE_OVER_SCIENCE:g}× the science's core-seconds at N = {n}",
        ", ".join(f"{m} {v}×" for m, v in over.items()) or None,
        None if not over else all(v <= TARGET_CORE_OVER_SCIENCE for v in over.values()),
    ))  # fmt: skip
    return out


def _num(value: float | None, fmt: str = "{:,.1f}") -> str:
    return "–" if value is None else fmt.format(value)


def _bytes(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value / 1e9:.2f} GB" if value >= 1e9 else f"{value / 1e6:.1f} MB"


def _zarr(value: float | None) -> str:
    return f" ({_bytes(value)})" if value else ""


def _columns(table: dict[int, dict[str, dict[str, Any]]], key: str) -> list[str]:
    """Group names in a readable order: the run, the workers as first seen, the stack's services."""
    names = dict.fromkeys(g for row in table.values() for c in row.values() for g in (c.get(key) or {}))
    first = [g for g in ("run",) if g in names]
    stack = [g for g in STACK_GROUPS if g in names]
    workers = [g for g in names if g not in (*first, *stack, *RESERVED)]
    return first + workers + stack


def markdown(summary: dict[str, Any]) -> str:
    """Every table and ratio of the report."""
    c, table, sci = summary["config"], summary["cells"], summary["science"]
    lines = [
        f"Synthetic stations x 1 h at {c['rate_hz']} Hz; modes interleaved within each round, N ascending; "
        f"{c['rounds']} round(s), medians; {c['cpus']} CPUs; P = {c['P']}, C = {c['C']}; output format "
        f"{c['format']}; memory cap {c['cap_gib']} GiB per run. Core-seconds are counted over each run's makespan.",
        "",
        "| N | pairs | mode | status | makespan s | first result s | pairs/s | core-s (× science) "
        "| largest peak RSS MiB | bytes written: S3 (of it results.zarr) / Kafka / OUT |",
        "|" + "---|" * 10,
    ]
    over = summary["ratios"]["core_over_science"]
    for n, row in table.items():
        for mode, f in row.items():
            if f["status"] == "failed":
                lines.append(f"| {n} | {n * (n - 1) // 2:,} | {mode} | failed: {'; '.join(f['reasons'])[:200]} |"
                             + " – |" * 6)  # fmt: skip
                continue
            rss = f.get("peak_rss_mb") or {}
            big = max(rss.items(), key=lambda kv: kv[1]) if rss else ("", None)
            b = f.get("bytes") or {}
            ratio = over.get(n, {}).get(mode)
            lines.append(
                f"| {n} | {_num(f.get('pairs'), '{:,.0f}')} | {mode} | {f['status']} | {_num(f.get('makespan_s'))} "
                f"| {_num(f.get('first_result_s'), '{:.2f}')} | {_num(f.get('pairs_per_s'), '{:,.0f}')} "
                f"| {_num((f.get('core_s') or {}).get('total'))} ({_num(ratio, '{:.1f}')}×) "
                f"| {_num(big[1], '{:,.0f}')} ({big[0]}) "
                f"| {_bytes(b.get('s3'))}{_zarr(b.get('s3_zarr'))} / {_bytes(b.get('kafka'))} "
                f"/ {_bytes(b.get('out'))} |"
            )
    lines += ["", "**Core-seconds by process group** over the makespan (`machine`: every process on the machine, "
              "other agents' too); the science bound below each N.", ""]  # fmt: skip
    groups = _columns(table, "core_s")
    lines += _row(["N", "mode", *groups, "total", "machine"], header=True)
    for n, row in table.items():
        for mode, f in row.items():
            cs = f.get("core_s") or {}
            lines += _row([n, mode, *(_num(cs.get(g)) for g in (*groups, "total", "machine"))])
        if n in sci:
            s = sci[n]
            what = f"preprocess {_num(s.get('preprocess_core_s'))} + kernel {_num(s.get('kernel_core_s'))}"
            lines += _row([n, "science bound", what, *[""] * (len(groups) - 1), _num(s.get("core_s")), ""])
            if s.get("floor_core_s") is not None:
                put, get = (f"{_num(s.get(f'transport_{p}_client_core_s'))} + server "
                            f"{_num(s.get(f'transport_{p}_server_core_s'))}" for p in ("put", "get"))  # fmt: skip
                moved = f"science + CCFs to S3 and back ({_bytes(s.get('transport_bytes'))}): put {put}, get {get}"
                lines += _row([n, "transport floor", moved, *[""] * (len(groups) - 1), _num(s["floor_core_s"]), ""])
    services = _columns(table, "peak_rss_mb")
    lines += ["", "**Peak RSS (MiB) by service** (workers: the largest instance).", ""]
    lines += _row(["N", "mode", *services], header=True)
    for n, row in table.items():
        for mode, f in row.items():
            rss = f.get("peak_rss_mb") or {}
            lines += _row([n, mode, *(_num(rss.get(s), "{:,.0f}") for s in services)])
    lines += ["", *_ratio_lines(summary), "", "**Targets of issue 11:**", ""]
    for t in summary["targets"]:
        mark = {True: "met", False: "**not met**", None: "not measured"}[t["met"]]
        lines.append(f"- {t['target']}: {t['value'] if t['value'] is not None else '–'} → {mark}")
    return "\n".join(lines)


def _row(cells: list[Any], header: bool = False) -> list[str]:
    """A markdown table row (and the rule under it for a header)."""
    line = "| " + " | ".join(str(c) for c in cells) + " |"
    return [line, "|" + "---|" * len(cells)] if header else [line]


def _ratio_lines(summary: dict[str, Any]) -> list[str]:
    r, sci = summary["ratios"], summary["science"]
    out = ["**In-run ratios** (medians of each round's own ratio):", ""]
    for n in summary["cells"]:
        parts = []
        if n in r["streaming_over_barrier"]:
            parts.append(f"streaming/barrier makespan {r['streaming_over_barrier'][n]}")
        if n in r["streaming_over_inprocess"]:
            parts.append(f"streaming/inprocess {r['streaming_over_inprocess'][n]}")
        if n in r["core_over_science"]:
            parts.append("total core-s / science core-s: "
                         + ", ".join(f"{m} {v}" for m, v in r["core_over_science"][n].items()))  # fmt: skip
        if n in sci and sci[n].get("ceiling_pairs_per_s"):
            parts.append(f"science ceiling {sci[n]['ceiling_pairs_per_s']:,.0f} pairs/s "
                         f"(pairs / science core-s × {summary['config']['cpus']} cores)")  # fmt: skip
        if n in sci and sci[n].get("floor_ceiling_pairs_per_s"):
            parts.append(f"transport-floor ceiling {sci[n]['floor_ceiling_pairs_per_s']:,.0f} pairs/s (pairs / "
                         f"(science + transport floor) core-s × {summary['config']['cpus']} cores)")  # fmt: skip
        if parts:
            out.append(f"- N = {n}: " + "; ".join(parts) + ".")
    g = r.get("rss_growth") or {}
    for mode, per in (g.get("by_mode") or {}).items():
        items = ", ".join(f"{s} {v}" for s, v in per.items())
        out.append(f"- peak RSS N = {g['to']} / N = {g['from']}, {mode}: {items}.")
    return out


def plot(summary: dict[str, Any], path: Path) -> None:
    """pairs/s and the largest service's peak RSS against N, one line per mode, with the targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table, sci = summary["cells"], summary["science"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6))
    ns = list(table)
    for mode in dict.fromkeys(m for row in table.values() for m in row):
        xs = [n for n in ns if table[n].get(mode, {}).get("pairs_per_s")]
        line = left.plot(xs, [table[n][mode]["pairs_per_s"] for n in xs], "o-", label=mode)[0]
        rs = [n for n in ns if table[n].get(mode, {}).get("peak_rss_mb")]
        right.plot(rs, [max(table[n][mode]["peak_rss_mb"].values()) for n in rs], "o-", color=line.get_color(),
                   label=mode)  # fmt: skip
        for n in ns:
            if table[n].get(mode, {}).get("status") == "failed":
                for ax in (left, right):
                    ax.annotate(f"{mode}: failed", (n, 0.04), xycoords=("data", "axes fraction"), rotation=90,
                                color=line.get_color(), fontsize=8, ha="center")  # fmt: skip
    xs = [n for n in ns if sci.get(n, {}).get("ceiling_pairs_per_s")]
    if xs:
        left.plot(xs, [sci[n]["ceiling_pairs_per_s"] for n in xs], "k:", label="science ceiling")
    xs = [n for n in ns if sci.get(n, {}).get("floor_ceiling_pairs_per_s")]
    if xs:
        left.plot(xs, [sci[n]["floor_ceiling_pairs_per_s"] for n in xs], "k-.", label="transport-floor ceiling")
    left.axhline(TARGET_PAIRS_PER_S, color="grey", ls="--", lw=1, label="target (N = 520)")
    right.axhline(MIB_2GIB, color="grey", ls="--", lw=1, label="target: 2 GiB")
    for ax, title, unit in ((left, "throughput", "pairs/s"), (right, "peak RSS of the largest service", "MiB")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.set_xlim(min(ns) / 1.25, max(ns) * 1.25)
        ax.set_xlabel("stations (1 h at 100 Hz each)")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
