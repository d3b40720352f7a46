"""The storage layout (DESIGN.md §5, a contract): the one module that builds and parses object keys.

```
<ns>raw/<window>/<NET.STA.LOC.CHA>.mseed        raw input ingested into the store
<ns>prep/<window>/<NET.STA.LOC.CHA>.npz         one station's preprocessed product for one window
<ns>tasks/<window>/<row>.s<slot>.json           a row task's manifest (results.manifest), outside the zarr tree
<ns>results.zarr/...                            the results hierarchy (its inside: results.layout)
runs/<run id>/<name>                            what a run did: report.json, config.json
```

``<ns>`` is the deployment's namespace (``Settings.key_prefix``: ``""`` or ``"<name>/"``); a pipeline run's
namespace is ``<run id>/``. Keys are built from validated SEED, window and run ids only (:mod:`storage.keys`), so
no file name can write outside its prefix. Parsers are structural: they tell a product key from any other key and
split it, and leave the id checks to whoever acts on the ids (the correlator refuses a task naming a bad id).
Services hold a :class:`Layout` and ask it for "station S's product in window W", never build a string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from storage.errors import InvalidKey
from storage.keys import join, validate_prefix, validate_seed_id, validate_window_id

RAW = "raw"
PREP = "prep"
TASKS = "tasks"
RUNS = "runs"
RESULTS_ROOT = "results.zarr"  # also the folder name of a run's results inside its output directory
PRODUCT_EXT = "npz"
RAW_EXT = "mseed"
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class ProductKey(NamedTuple):
    """A product key split: its directory (``<ns>prep/<window>/``), window and station."""

    directory: str
    window: str
    station: str


def validate_run_id(run_id: str) -> str:
    """Check a run id: starts with a letter or digit, then up to 127 of ``[A-Za-z0-9_.-]``.

    Raises:
        InvalidKey: the run id is malformed.
    """
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise InvalidKey(str(run_id), "a run id is [A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
    return run_id


def run_object(run_id: str, name: str) -> str:
    """``runs/<run id>/<name>``: what a run did (``report.json``, ``config.json``); outside every namespace.

    Raises:
        InvalidKey: the run id or the name is malformed.
    """
    return join(f"{RUNS}/{validate_run_id(run_id)}", name)


def run_prefixes(run_id: str) -> tuple[str, str]:
    """Every prefix a run's objects live under: its namespace ``<run id>/`` and ``runs/<run id>/``.

    Raises:
        InvalidKey: the run id is malformed.
    """
    validate_run_id(run_id)
    return f"{run_id}/", f"{RUNS}/{run_id}/"


@dataclass(frozen=True)
class Layout:
    """The keys of one namespace. ``namespace`` is ``""`` or ends in one ``/`` (``Settings.key_prefix``)."""

    namespace: str = ""

    def raw(self, window: str, station: str) -> str:
        """``<ns>raw/<window>/<station>.mseed``.

        Raises:
            InvalidKey: the window or station id is malformed.
        """
        return self._file(RAW, window, station, RAW_EXT)

    def product(self, window: str, station: str) -> str:
        """``<ns>prep/<window>/<station>.npz``: the station's preprocessed product for the window.

        Raises:
            InvalidKey: the window or station id is malformed.
        """
        return self._file(PREP, window, station, PRODUCT_EXT)

    def product_dir(self, window: str) -> str:
        """``<ns>prep/<window>/``: the directory the commit broker commits, one per window.

        Raises:
            InvalidKey: the window id is malformed.
        """
        return validate_prefix(f"{self.namespace}{PREP}/{validate_window_id(window)}")

    def parse_product(self, key: str, *, ext: str | None = None) -> ProductKey:
        """Split ``<ns>prep/<window>/<station>.<ext>``; with ``ext``, only that extension is a product.

        Raises:
            ValueError: the key is not a product key of this namespace.
        """
        parts = key.removeprefix(self.namespace).split("/")
        if not key.startswith(self.namespace) or len(parts) != 3 or parts[0] != PREP or "." not in parts[2]:
            raise ValueError(f"not a product key under {self.namespace or 'the bucket root'}: {key!r}")
        station, _, found = parts[2].rpartition(".")
        if not parts[1] or not station or (ext is not None and found != ext):
            raise ValueError(f"not a product key: {key!r}")
        return ProductKey(f"{self.namespace}{PREP}/{parts[1]}/", parts[1], station)

    def in_products(self, key: str) -> bool:
        """Whether ``key`` (an object or a directory) lies in this namespace's product tree ``<ns>prep/``."""
        return key.startswith(f"{self.namespace}{PREP}/")

    def parse_product_dir(self, directory: str) -> str:
        """The window of a product directory ``<ns>prep/<window>/``.

        Raises:
            ValueError: it is not a product directory of this namespace.
        """
        parts = directory.removeprefix(self.namespace).split("/")
        if not directory.startswith(self.namespace) or len(parts) != 3 or parts[0] != PREP or not parts[1] or parts[2]:
            raise ValueError(f"not a product directory under {self.namespace or 'the bucket root'}: {directory!r}")
        return parts[1]

    def manifest(self, window: str, row: str, slot: int) -> str:
        """``<ns>tasks/<window>/<row>.s<slot>.json``: the manifest of the row task at ``slot``.

        Raises:
            InvalidKey: the window or row id is malformed.
        """
        return f"{self.manifests(validate_window_id(window))}{validate_seed_id(row)}.s{int(slot)}.json"

    def manifests(self, window: str) -> str:
        """``<ns>tasks/<window>/``: the directory of a window's task manifests, to list.

        Raises:
            InvalidKey: the window is not a valid key segment.
        """
        return validate_prefix(f"{self.namespace}{TASKS}/{window}")

    def is_manifest(self, key: str) -> bool:
        """Whether ``key`` lies in this namespace's task-manifest tree."""
        return key.startswith(f"{self.namespace}{TASKS}/")

    def results_root(self) -> str:
        """``<ns>results.zarr``: the key prefix of the namespace's results hierarchy."""
        return f"{self.namespace}{RESULTS_ROOT}"

    def _file(self, stage: str, window: str, station: str, ext: str) -> str:
        name = f"{validate_seed_id(station)}.{ext}"
        return join(f"{self.namespace}{stage}", validate_window_id(window), name)
