"""A small, deterministic container for a JSON header plus named numpy arrays (an ``.npz`` file).

Why npz: ``numpy.load`` opens it anywhere, zip stores a CRC-32 per member (so flipped bits are caught on
read), and with fixed member timestamps and order the same content always gives the same bytes, which keeps
object-store writes idempotent (same key, same content). Pickles are never written nor accepted.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from dsp.errors import CorruptProduct

HEADER_MEMBER = "header"
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed timestamp: identical content must give identical bytes
_ALLOWED_DTYPES = frozenset({"<c8", "<c16", "<f4", "<f8", "|b1", "<i4", "<i8", "<u4"})


def pack(kind: str, version: int, header: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> bytes:
    """Encode a JSON-able header and arrays into deterministic npz bytes.

    Args:
        kind: format name stored in the header (e.g. ``"xcorrflow.product"``), checked on decode.
        version: format version stored in the header.
        header: JSON-able metadata; keys ``format`` and ``version`` are reserved.
        arrays: named arrays, written little-endian in the given order.

    Returns:
        The encoded bytes.
    """
    full = {"format": kind, "version": version, **header}
    text = json.dumps(full, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    members: dict[str, np.ndarray] = {HEADER_MEMBER: np.frombuffer(text, dtype=np.uint8)}
    members.update({name: _little_endian(a) for name, a in arrays.items()})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, array in members.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            member = io.BytesIO()
            np.lib.format.write_array(member, array, allow_pickle=False)
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def unpack(
    data: bytes, kind: str, versions: frozenset[int], source: str
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Decode bytes made by :func:`pack`, checking integrity, format name and version.

    Args:
        data: the encoded bytes.
        kind: the expected format name.
        versions: the versions this reader understands.
        source: a name for error messages (an object key, a file name).

    Returns:
        ``(header, arrays)``; the header still holds ``format`` and ``version``.

    Raises:
        CorruptProduct: the bytes are not a valid container, fail their CRC, or have another format or
        version.
    """
    try:
        members = _read_members(data)
        header = json.loads(members.pop(HEADER_MEMBER).tobytes().decode())
    except (zipfile.BadZipFile, ValueError, KeyError, OSError, EOFError, UnicodeDecodeError) as exc:
        raise CorruptProduct(source, f"not a readable {kind} container: {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != kind:
        raise CorruptProduct(source, f"header does not declare format {kind!r}")
    if header.get("version") not in versions:
        raise CorruptProduct(source, f"unsupported {kind} version {header.get('version')!r}")
    # The encoding is canonical, so re-encoding must give the very same bytes. This also catches damage that
    # zip's CRCs do not cover (local-header fields, padding), so no altered byte goes unnoticed.
    rest = {k: v for k, v in header.items() if k not in ("format", "version")}
    if pack(kind, header["version"], rest, members) != data:
        raise CorruptProduct(source, f"{kind} bytes are not in canonical form (altered or foreign writer)")
    return header, members


def _read_members(data: bytes) -> dict[str, np.ndarray]:
    """Read every member; zipfile verifies each CRC-32 while reading."""
    members: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for name in zf.namelist():
            if not name.endswith(".npy"):
                raise ValueError(f"unexpected member {name!r}")
            array = np.lib.format.read_array(io.BytesIO(zf.read(name)), allow_pickle=False)
            if array.dtype.str not in _ALLOWED_DTYPES and name != f"{HEADER_MEMBER}.npy":
                raise ValueError(f"member {name!r} has unexpected dtype {array.dtype.str}")
            members[name[: -len(".npy")]] = array
    return members


def _little_endian(array: np.ndarray) -> np.ndarray:
    """Contiguous little-endian copy, so the bytes do not depend on the machine."""
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
