"""A small, deterministic container for a JSON header plus named numpy arrays (an ``.npz`` file).

Why npz: ``numpy.load`` opens it anywhere, zip stores a CRC-32 per member, and with fixed member timestamps
and order the same content always gives the same bytes, which keeps object-store writes idempotent (same key,
same content). The zip's archive comment holds a CRC-32 of every byte before it, so any altered byte (also
in headers that the members' CRCs do not cover) is caught on read in one fast pass, and members are then read
as views of the bytes, without a copy or a second CRC. Pickles are never written nor accepted.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from dsp.errors import CorruptProduct

HEADER_MEMBER = "header"
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed timestamp: identical content must give identical bytes
_DIGEST_HEX = 8  # CRC-32 as hex: the archive comment, the last bytes of the container
_LOCAL_HEADER = struct.Struct("<IHHHHHIIIHH")  # a zip local file header (30 bytes)
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


def _digest(body: bytes | memoryview) -> bytes:
    # CRC-32 detects every single-byte error and any burst up to 32 bits; zlib computes it at GB/s.
    return f"{zlib.crc32(body):08x}".encode()


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
    except (zipfile.BadZipFile, ValueError, KeyError, OSError, EOFError, UnicodeDecodeError, struct.error) as exc:
        raise CorruptProduct(source, f"not a readable {kind} container: {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != kind:
        raise CorruptProduct(source, f"header does not declare format {kind!r}")
    if header.get("version") not in versions:
        raise CorruptProduct(source, f"unsupported {kind} version {header.get('version')!r}")
    return header, members


def _read_members(data: bytes) -> dict[str, np.ndarray]:
    """Every member as an array view of ``data`` (the container's digest was checked before)."""
    members: dict[str, np.ndarray] = {}
    view = memoryview(data)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist():
            name = info.filename
            if not name.endswith(".npy") or info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"unexpected member {name!r}")
            fields = _LOCAL_HEADER.unpack_from(data, info.header_offset)
            start = info.header_offset + _LOCAL_HEADER.size + fields[9] + fields[10]
            array = _npy_view(view[start : start + info.file_size])
            if array.dtype.str not in _ALLOWED_DTYPES and name != f"{HEADER_MEMBER}.npy":
                raise ValueError(f"member {name!r} has unexpected dtype {array.dtype.str}")
            members[name[: -len(".npy")]] = array
    return members


def _npy_view(raw: memoryview) -> np.ndarray:
    """A read-only array over the bytes of one ``.npy`` member (no copy of the data)."""
    stream = io.BytesIO(raw[:4096])  # the .npy header is short; only it is copied
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
