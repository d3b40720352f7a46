"""Which run an output folder belongs to, so that running the same command again resumes it.

``OUT/.xcorrflow-run.json`` names the run id (hence the topics, consumer groups and key namespace) of the
run that writes into OUT, with digests of its input and of the settings that shape its results. Running
``xcorrflow run`` again on the same input and output, after a crash, a kill or a failure, picks the same run
id: the workers rejoin their groups at the committed offsets, the broker and scheduler restore their state
topics, products and CCF objects already in the store are reused, so nothing durable is computed again. A
different input or other settings are refused with the reason (``--fresh`` starts a new run instead).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from contracts.settings import Settings
from producers.inventory import Inventory
from xcorrflow.errors import CommandError

MANIFEST_NAME = ".xcorrflow-run.json"


class CannotResume(CommandError):
    """The output folder holds another run that this one must not continue."""


@dataclass
class RunManifest:
    """The identity and state of the run that writes into one output folder."""

    run_id: str
    mode: str
    input: str
    input_digest: str
    settings_digest: str
    status: str = "running"  # running | complete | failed
    started_at: float = 0.0
    attempts: int = 1

    @classmethod
    def load(cls, output_dir: Path) -> RunManifest | None:
        """The manifest of ``output_dir``, or None when there is none (or it is unreadable)."""
        try:
            return cls(**json.loads((output_dir / MANIFEST_NAME).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def save(self, output_dir: Path) -> None:
        """Write the manifest atomically."""
        output_dir.mkdir(parents=True, exist_ok=True)
        path = output_dir / MANIFEST_NAME
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1) + "\n")
        os.replace(tmp, path)


def input_digest(inventory: Inventory) -> str:
    """A digest of what the run will ingest: every valid file's channel, span and rate, in order."""
    items = sorted((i.seed_id, i.start, i.end, i.sampling_rate, Path(i.source).name) for i in inventory.items)
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]


def settings_digest(settings: Settings, mode: str) -> str:
    """A digest of what shapes the results: the mode, the DSP parameters, the bucket and partition counts."""
    shaping: dict[str, Any] = {
        "mode": mode,
        "processing": settings.processing.model_dump(mode="json"),
        "bucket": settings.s3_bucket,
        "partitions": settings.partitions.model_dump(),
    }
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]


def new_run_id() -> str:
    """A fresh run id: time of day and a random suffix, valid as a topic prefix and a key segment."""
    return f"run-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"


def claim(
    output_dir: Path,
    input_dir: Path,
    inventory: Inventory,
    settings: Settings,
    mode: str,
    *,
    run_id: str = "",
    fresh: bool = False,
) -> tuple[RunManifest, str]:
    """The manifest this run writes into ``output_dir``: the run found there, or a new one.

    Args:
        run_id: an explicit run id (a new run under that id; no resume lookup).
        fresh: ignore any manifest and start a new run.

    Returns:
        ``(manifest, how)``: ``how`` is ``"new"``, ``"resumed"`` (an unfinished run: saved as running again)
        or ``"complete"`` (the run found there completed; nothing to do).

    Raises:
        CannotResume: OUT belongs to a run of another input, mode or settings.
    """
    digests = input_digest(inventory), settings_digest(settings, mode)
    found = None if (fresh or run_id) else RunManifest.load(output_dir)
    if found is not None and (found.input_digest, found.settings_digest) != digests:
        what = "input" if found.input_digest != digests[0] else "mode or processing settings"
        raise CannotResume(
            f"{output_dir} holds run {found.run_id} of another {what} (started from {found.input}); "
            "use another --output, or --fresh to start a new run there"
        )
    if found is not None and found.status == "complete":
        return found, "complete"
    if found is not None:
        found.status, found.attempts = "running", found.attempts + 1
        found.save(output_dir)
        return found, "resumed"
    manifest = RunManifest(run_id or new_run_id(), mode, str(input_dir.resolve()), *digests, started_at=time.time())
    manifest.save(output_dir)
    return manifest, "new"
