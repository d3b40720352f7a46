"""A small, deterministic container for a JSON header plus named numpy arrays (an ``.npz`` file).

Why npz: ``numpy.load`` opens it anywhere, zip stores a CRC-32 per member, and with fixed member timestamps
and order the same content always gives the same bytes, which keeps object-store writes idempotent (same key,
same content). The zip's archive comment holds a BLAKE2b digest of every byte before it, so any altered byte
(also in headers that CRCs do not cover) is caught on read at hashing speed, without re-encoding. Pickles are
never written nor accepted.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from dsp.errors import CorruptProduct

HEADER_MEMBER = "header"
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed timestamp: identical content must give identical bytes
_DIGEST_HEX = 64  # BLAKE2b-256 as hex: the archive comment, the last bytes of the container
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
        zf.comment = b"0" * _DIGEST_HEX  # placeholder of the right length: the EOCD records it
    body = buf.getvalue()[:-_DIGEST_HEX]
    return body + _digest(body)


def _digest(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=_DIGEST_HEX // 2).hexdigest().encode()


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
    if len(data) <= _DIGEST_HEX or _digest(data[:-_DIGEST_HEX]) != data[-_DIGEST_HEX:]:
        raise CorruptProduct(source, f"not an intact {kind} container (digest mismatch: altered or truncated)")
    try:
        members = _read_members(data)
        header = json.loads(members.pop(HEADER_MEMBER).tobytes().decode())
    except (zipfile.BadZipFile, ValueError, KeyError, OSError, EOFError, UnicodeDecodeError) as exc:
        raise CorruptProduct(source, f"not a readable {kind} container: {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != kind:
        raise CorruptProduct(source, f"header does not declare format {kind!r}")
    if header.get("version") not in versions:
        raise CorruptProduct(source, f"unsupported {kind} version {header.get('version')!r}")
    return header, members


def _read_members(data: bytes) -> dict[str, np.ndarray]:
    """Read every member; zipfile verifies each CRC-32 while reading."""
    members: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for name in zf.namelist():
            if not name.endswith(".npy"):
                raise ValueError(f"unexpected member {name!r}")
            array = _npy_view(zf.read(name))
            if array.dtype.str not in _ALLOWED_DTYPES and name != f"{HEADER_MEMBER}.npy":
                raise ValueError(f"member {name!r} has unexpected dtype {array.dtype.str}")
            members[name[: -len(".npy")]] = array
    return members


def _npy_view(raw: bytes) -> np.ndarray:
    """A read-only array over the bytes of one ``.npy`` member (no second copy of the data)."""
    stream = io.BytesIO(raw)
    major, _minor = np.lib.format.read_magic(stream)
    read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read_header(stream)
    if dtype.hasobject:
        raise ValueError("object arrays are never accepted")
    count = int(np.prod(shape, dtype=np.int64))
    array = np.frombuffer(raw, dtype=dtype, count=count, offset=stream.tell())
    return array.reshape(shape, order="F" if fortran else "C")


def _little_endian(array: np.ndarray) -> np.ndarray:
    """Contiguous little-endian copy, so the bytes do not depend on the machine."""
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
