"""The run report (DESIGN.md §7), shared by every run mode.

``report.json`` holds at least ``mode, stations, windows, pairs, first_result_s, makespan_s, dead_letters``,
plus input warnings, what was skipped and why, stage timings, the output locations and the settings used
(secrets masked). A run that could not complete still writes its report: ``complete`` is false, ``reason``
says why and ``missing`` counts (and lists, up to a cap) the planned (window, pair)s that are not in the
stacks. ``untrusted`` lists the events and dead letters the run refused to believe (see
:mod:`xcorrflow.orchestration.runstate`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Report:
    """What a run did. ``first_result_s`` counts from the run start to the first persisted pair result."""

    mode: str
    complete: bool = True
    reason: str | None = None
    stations: int = 0
    windows: int = 0
    pairs: int = 0
    first_result_s: float | None = None
    makespan_s: float = 0.0
    started_at: float | None = None  # Unix time at which the clock started (pipeline: ingest start)
    dead_letters: list[dict[str, str]] = field(default_factory=list)
    # input that was used or passed over but deserves a word: {"source", "warning"} (e.g. merged duplicates)
    warnings: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    missing: dict[str, Any] = field(default_factory=dict)
    untrusted: list[dict[str, str]] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    pair_times_s: list[float] = field(default_factory=list)  # completion time of each pair (pipeline modes)
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


def write_report(path: Path, report: Report) -> None:
    """Write ``report.json`` atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report.to_dict(), indent=1, default=str) + "\n")
    os.replace(tmp, path)
