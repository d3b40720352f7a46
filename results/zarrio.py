"""Opening a result hierarchy: a zarr group in the S3 bucket, a local directory or memory.

Every service and command gets its zarr root from here, so the store a hierarchy lives in (and how zarr talks to
S3) is decided in one place.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import numpy as np
import zarr
from zarr.abc.store import Store
from zarr.errors import ContainsGroupError
from zarr.storage import LocalStore, MemoryStore

from results.errors import ResultsError
from storage.layout import Layout

if TYPE_CHECKING:
    from contracts.settings import Settings


def open_root(target: str | Path, settings: Settings | None = None, *, read_only: bool = False) -> zarr.Group:
    """The zarr group at ``target``, created when missing (unless ``read_only``).

    Args:
        target: ``s3://<bucket>/<prefix>.zarr`` (the settings' endpoint), ``file:///<dir>.zarr`` or a local path,
            or ``memory://`` (a new, empty hierarchy, for tests).
        settings: endpoint and credentials for ``s3://``.

    Raises:
        ResultsError: an unknown scheme, or a read-only open of a hierarchy that does not exist.
    """
    text = str(target)
    parts = urlsplit(text)
    store: Store
    if parts.scheme == "memory":
        return zarr.open_group(MemoryStore(), mode="a", zarr_format=3)
    if parts.scheme == "s3":
        from results.s3 import s3_store

        store = s3_store(settings, parts.netloc, unquote(parts.path).strip("/"), read_only=read_only)
    elif parts.scheme in ("", "file"):
        path = Path(unquote(parts.path) if parts.scheme == "file" else text)
        store = LocalStore(path, read_only=read_only)
    else:
        raise ResultsError(f"result store {text!r}: scheme must be s3, file or memory")
    try:
        return zarr.open_group(store, mode="r" if read_only else "a", zarr_format=3)
    except FileNotFoundError as exc:
        raise ResultsError(f"no result hierarchy at {text}") from exc
    except ContainsGroupError:  # another process created the root between zarr's look and its write
        return zarr.open_group(store, mode="r+", zarr_format=3)


def bucket_root(settings: Settings, namespace: str | None = None) -> str:
    """The URL of a deployment's hierarchy in the settings' bucket: ``s3://<bucket>/<ns>results.zarr``."""
    ns = settings.key_prefix if namespace is None else namespace
    return f"s3://{settings.s3_bucket}/{Layout(ns).results_root()}"


def require(group: zarr.Group, name: str, *, shape: tuple[int, ...], **create: Any) -> zarr.Array:
    """The array ``name`` of ``group`` whatever its current shape, created with ``shape`` and ``create`` if missing.

    zarr's ``require_array`` insists on the shape, but the arrays here grow (windows gain slots, stacks gain pairs).
    """
    found = group.get(name)
    if isinstance(found, zarr.Array):
        return write_whole(found)
    return write_whole(group.create_array(name, shape=shape, **create))


def write_whole(array: zarr.Array) -> zarr.Array:
    """``array``, writing every chunk as given: zarr otherwise compares each chunk with the fill value first
    (0.5 ms per 4 MB, 0.12 core-s per GB written) only to skip all-fill chunks, which a stack never is and a
    task's CCFs rarely are (a chunk left out or written as fill reads the same)."""
    return array.with_config({"write_empty_chunks": True})


def array(group: zarr.Group, name: str) -> zarr.Array:
    """The array ``name`` of ``group``.

    Raises:
        ResultsError: there is no such array.
    """
    found = group.get(name)
    if not isinstance(found, zarr.Array):
        raise ResultsError(f"{group.path or 'the root'} has no array {name!r}")
    return found


def subgroup(group: zarr.Group, name: str) -> zarr.Group | None:
    """The group ``name`` of ``group``, or None."""
    found = group.get(name)
    return found if isinstance(found, zarr.Group) else None


def values(group: zarr.Group, name: str, rows: slice | np.ndarray | None = None) -> np.ndarray:
    """The values of an array of ``group`` (all, or the given rows) as a numpy array."""
    data = array(group, name)
    return np.asarray(data[:] if rows is None else data[rows])
