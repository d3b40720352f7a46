"""The results of ``make chaos`` as JSON (every measurement) and as a markdown table (one row per scenario)."""

from __future__ import annotations

import json
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

COLUMNS = (
    "scenario",
    "fault",
    "result",
    "exit",
    "complete",
    "pairs expected",
    "present",
    "at true lag",
    "wrong windows",
    "twice on the wire",
    "CCFs not in store / off lag",
    "recovery s",
    "stacker recovery s",
    "makespan s (× baseline)",
    "orphans",
    "restarts",
    "dead letters (report / DLQ)",
    "notes (why it failed)",
)


def cells(row: dict[str, Any], baseline_makespan: float | None) -> list[str]:
    """The table cells of one scenario row."""
    o = row.get("outcome")
    if o is None:  # the harness itself failed on this scenario
        return [row["name"], row["fault"], "FAIL", *["–"] * (len(COLUMNS) - 4), "; ".join(row["problems"])]
    return [
        row["name"],
        row["fault"],
        "PASS" if row["passed"] else "FAIL",
        "hung" if o["exit_code"] is None else str(o["exit_code"]),
        _complete(o),
        str(o["pairs_expected"]),
        str(o["present"]),
        str(o["at_true_lag"]),
        str(o["wrong_windows"]),
        str(o["wire_duplicates"]),
        f"{o.get('ccfs_absent', '–')} / {o.get('ccfs_off_lag', '–')}",
        _num(o["recovery_s"]),
        _num(o.get("stacks_recovery_s")),
        _makespan(o["makespan_s"], baseline_makespan),
        str(len(o["orphans"]) + len((row.get("first_run") or {}).get("orphans", []))),
        str(sum((o.get("restarts") or {}).values())),
        f"{o['dead_letters']} / {o['dlq_records']}",
        _notes(row),
    ]


def _notes(row: dict[str, Any]) -> str:
    """Why a scenario failed, or what its injection noted when it passed."""
    text = "; ".join(row["problems"]) if row["problems"] else "; ".join(row["injection"]["notes"])
    return text.replace("|", "\\|")[:400]


def _complete(o: dict[str, Any]) -> str:
    if not o["report"]:
        return "no report"
    return "–" if o["complete"] is None else str(o["complete"]).lower()


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _makespan(value: float | None, baseline: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}" + (f" (×{value / baseline:.2f})" if baseline else "")


def baseline_makespan(rows: list[dict[str, Any]]) -> float | None:
    """The clean run's makespan, when the baseline ran and completed."""
    for row in rows:
        if row["name"] == "baseline" and row.get("outcome"):
            value: float | None = row["outcome"]["makespan_s"]
            return value
    return None


def table(rows: list[dict[str, Any]], skip: frozenset[str] = frozenset()) -> str:
    """The markdown table, without the columns named in ``skip`` (bench/README.md leaves out "fault")."""
    base = baseline_makespan(rows)
    keep = [i for i, name in enumerate(COLUMNS) if name not in skip]
    lines = ["| " + " | ".join(COLUMNS[i] for i in keep) + " |", "|" + "---|" * len(keep)]
    lines += ["| " + " | ".join(c for i, c in enumerate(cells(r, base)) if i in keep) + " |" for r in rows]
    return "\n".join(lines)


def line(row: dict[str, Any]) -> str:
    """One line of progress for a finished scenario."""
    o = row.get("outcome") or {}
    verdict = "PASS" if row["passed"] else "FAIL: " + "; ".join(row["problems"])[:300]
    pairs = f"{o.get('present', '?')}/{o.get('pairs_expected', '?')} pairs"
    return f"chaos: {row['name']:20} {pairs}, {o.get('wall_s', '?')} s  {verdict}"


def write(base: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    """Write ``<base>.json`` and ``<base>.md``."""
    base.parent.mkdir(parents=True, exist_ok=True)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.node(), **meta, "passed": _passed(rows)}
    base.with_suffix(".json").write_text(json.dumps({"meta": meta, "scenarios": rows}, indent=1, default=str) + "\n")
    head = (
        f"{meta['stations']} stations x {meta['hours']} h, input spread over {meta['spread_s']:g} s, "
        f"P = 2, C = 2 unless stated; {meta['passed']} scenarios passed; "
        f"`make chaos` took {meta['total_s'] / 60:.1f} min ({meta['date']})."
    )
    if meta.get("code"):
        head += f" Code: {meta['code']}."
    if meta.get("note"):
        head += f" {meta['note']}."
    base.with_suffix(".md").write_text(head + "\n\n" + table(rows) + "\n")


def _passed(rows: list[dict[str, Any]]) -> str:
    return f"{sum(r['passed'] for r in rows)}/{len(rows)}"


def code_version(repo: Path) -> str:
    """The commit under test (``git describe``-like: short hash, ``+dirty`` with local changes), or "unknown"."""
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "-uno"], capture_output=True, text=True
        )
    except OSError:
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if head.returncode == 0 else "unknown"
