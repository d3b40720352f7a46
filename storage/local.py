"""Local-directory object store: keys are paths under a root directory, and nothing ever leaves that root.

Safety: key validation already rules out ``..``, absolute paths and hidden names, but a symbolic link planted
inside the root could still point outside. So the store never resolves a path string: it walks from the root
one directory file descriptor at a time with ``O_NOFOLLOW`` (``openat``), and refuses any symlink it meets.

Atomicity: data goes to a hidden temporary file in the target directory, is flushed, then published with
``os.replace`` (``put``) or ``os.link`` (``put_if_absent``: linking fails if the name exists, so exactly one
concurrent creator wins). Readers never see a partial object.

Metadata and the cached ETag live in a hidden side-car ``.meta-<name>.json`` written just *after* the data.
The side-car records the data file's inode, size and mtime; if they do not match (a crash in between, a
concurrent overwrite, a file copied in by hand), the ETag is recomputed from the content and the metadata
reads as empty: never wrong, at worst missing.

Unexpected file-system failures (disk full, permissions) surface as :class:`StorageBackendError` with the
errno name as ``code``; errors reading ``put_file``'s source or writing ``get_file``'s target stay
``OSError``, as with every backend.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import stat as stat_mod
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import BinaryIO, ParamSpec, TypeVar

from storage import _fs
from storage.base import ObjectStore
from storage.errors import (
    InvalidKey,
    InvalidMetadata,
    KeyPathConflict,
    ObjectConflict,
    ObjectNotFound,
    StorageBackendError,
    StorageConfigError,
)
from storage.keys import MAX_KEY_BYTES, validate_key, validate_prefix, validate_segment
from storage.objects import (
    DEFAULT_CONTENT_TYPE,
    ObjectInfo,
    PutOutcome,
    check_content_type,
    check_metadata,
    check_range,
    md5_hex,
    md5_of_stream,
    write_file_atomically,
)

_CHUNK = 1024 * 1024
_P = ParamSpec("_P")
_R = TypeVar("_R")


def _os_errors_as(operation: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Turn stray ``OSError`` into :class:`StorageBackendError`: one error family for every backend."""

    def decorate(func: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(func)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return func(*args, **kwargs)
            except OSError as exc:
                key = next((arg for arg in args if isinstance(arg, str)), "")  # methods and bound methods
                code = errno.errorcode.get(exc.errno or 0, "OSError")
                raise StorageBackendError(operation, key, code, str(exc)) from exc

        return wrapper

    return decorate


class LocalDirStore(ObjectStore):
    """Objects as plain files under ``root`` (``root/prep/<window>/<id>.npz`` ...), readable by any tool."""

    def __init__(self, root: str | os.PathLike[str], *, create: bool = True, durable: bool = True) -> None:
        """Open (and by default create) the store directory.

        Args:
            root: the directory; a symlink here is resolved once, below it nothing is followed.
            create: create ``root`` if missing.
            durable: fsync data and directories before a write returns (survives power loss; slower).

        Raises:
            StorageConfigError: ``root`` is not a directory.
        """
        path = os.path.realpath(os.fspath(root))
        if create and not os.path.exists(path):
            os.makedirs(path, exist_ok=True)
        if not os.path.isdir(path):
            raise StorageConfigError(f"local store root {path!r} is not a directory")
        self.root = path
        self.durable = durable

    def __repr__(self) -> str:
        return f"LocalDirStore({self.root!r})"

    def path_for(self, key: str) -> str:
        """The file path an object lives at (for tools and tests; the store itself never opens by path).

        Raises:
            InvalidKey: bad key.
        """
        return os.path.join(self.root, *validate_key(key).split("/"))

    # --- writes ---------------------------------------------------------------------------------------------

    @_os_errors_as("put")
    def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Write ``data`` atomically under ``key``; see :meth:`ObjectStore.put`."""
        return self._put_chunks(key, [bytes(data)], content_type, metadata)

    def put_file(
        self,
        key: str,
        path: str | os.PathLike[str],
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Copy a file into the store in 1 MiB chunks; see :meth:`ObjectStore.put_file`."""
        with open(path, "rb") as source:
            chunks = iter(lambda: source.read(_CHUNK), b"")
            return _os_errors_as("put_file")(self._put_chunks)(key, chunks, content_type, metadata)

    @_os_errors_as("put_if_absent")
    def put_if_absent(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> PutOutcome:
        """Create ``key`` with ``data`` unless it exists; see :meth:`ObjectStore.put_if_absent`.

        Commit order: data to a temporary file, ``fsync``, ``link`` to the final name (the atomic "if
        absent"), then the side-car. A reader may briefly see the object without its metadata, never a partial
        object.
        """
        validate_key(key)
        ctype, meta = check_content_type(content_type), check_metadata(metadata)
        blob, etag = bytes(data), md5_hex(data)
        for _ in range(_fs.ATTEMPTS):
            with contextlib.suppress(_fs.DirectoryVanished), self._parent(key, create=True) as (fd, name):
                if not _entry_exists(fd, name, key):  # cheap check first: redelivery is the common case
                    tmp, st, _ = _fs.write_tmp(fd, [blob], durable=self.durable)
                    try:
                        os.link(tmp, name, src_dir_fd=fd, dst_dir_fd=fd, follow_symlinks=False)
                    except FileExistsError:
                        pass  # lost the race to a concurrent creator: compare with what it wrote
                    else:
                        return PutOutcome(True, self._finish(fd, key, name, st, etag, ctype, meta))
                    finally:
                        _fs.unlink_quietly(fd, tmp)
                existing = self._stat_at(fd, name, key)
                if existing.etag != etag:
                    raise ObjectConflict(key, existing.etag, etag)
                return PutOutcome(False, existing)
        raise _fs.vanished_error("put_if_absent", key)

    @_os_errors_as("delete")
    def delete(self, key: str) -> None:
        """Remove ``key`` and prune directories left empty; see :meth:`ObjectStore.delete`."""
        *dirs, name = validate_key(key).split("/")
        try:
            with _fs.open_chain(self.root, dirs, create=False, key=key) as fds:
                if _entry_exists(fds[-1], name, key):
                    _fs.unlink_quietly(fds[-1], name)
                    _fs.unlink_quietly(fds[-1], _fs.sidecar_name(name))
                    _fs.prune_empty(fds, dirs)
        except (FileNotFoundError, NotADirectoryError, KeyPathConflict):
            return  # nothing there (or only a directory): deleting is idempotent

    # --- reads ----------------------------------------------------------------------------------------------

    @_os_errors_as("get")
    def get(self, key: str) -> bytes:
        """Read the whole object; see :meth:`ObjectStore.get`."""
        handle, _ = self._open_object(key, describe=False)
        with handle:
            return handle.read()

    def get_file(self, key: str, path: str | os.PathLike[str]) -> ObjectInfo:
        """Copy an object to ``path`` in 1 MiB chunks, atomically; see :meth:`ObjectStore.get_file`."""
        handle, info = _os_errors_as("get_file")(self._open_object)(key, describe=True)
        with handle:
            write_file_atomically(path, iter(lambda: handle.read(_CHUNK), b""))
        assert info is not None  # describe=True always describes
        return info

    @_os_errors_as("get_range")
    def get_range(self, key: str, offset: int, length: int | None = None) -> bytes:
        """Read part of an object with one seek and read; see :meth:`ObjectStore.get_range`."""
        check_range(offset, length)
        handle, _ = self._open_object(key, describe=False)
        with handle:
            handle.seek(offset)
            return handle.read() if length is None else handle.read(length)

    def list_dir(self, prefix: str = "") -> Iterator[str]:
        """Names directly under ``prefix``, from one directory scan; see :meth:`ObjectStore.list_dir`."""
        directory = validate_prefix(prefix)
        segments = directory.rstrip("/").split("/") if directory else []
        try:
            with _fs.open_chain(self.root, segments, create=False, key=directory) as fds, os.scandir(fds[-1]) as it:
                found = [(e.name, e.is_dir(follow_symlinks=False), e.is_file(follow_symlinks=False)) for e in it]
        except (FileNotFoundError, NotADirectoryError):
            return iter(())
        except OSError as exc:
            code = errno.errorcode.get(exc.errno or 0, "OSError")
            raise StorageBackendError("list_dir", directory, code, str(exc)) from exc
        names = (name + "/" if is_dir else name for name, is_dir, is_file in found if (is_dir or is_file))
        return iter(sorted(name for name in names if _is_key_name(name.rstrip("/"))))

    @_os_errors_as("stat")
    def stat(self, key: str) -> ObjectInfo:
        """Describe ``key``; see :meth:`ObjectStore.stat`."""
        validate_key(key)
        try:
            with self._parent(key, create=False) as (fd, name):
                return self._stat_at(fd, name, key)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise ObjectNotFound(key) from exc

    def list(self, prefix: str = "", *, recursive: bool = True) -> Iterator[ObjectInfo]:
        """Yield the objects under ``prefix`` sorted by key; see :meth:`ObjectStore.list`."""
        return self._list(validate_prefix(prefix), recursive)  # validated eagerly, listed lazily

    def _list(self, directory: str, recursive: bool) -> Iterator[ObjectInfo]:
        segments = directory.rstrip("/").split("/") if directory else []
        try:
            with _fs.open_chain(self.root, segments, create=False, key=directory) as fds:
                yield from self._walk(fds[-1], directory, recursive)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            code = errno.errorcode.get(exc.errno or 0, "OSError")
            raise StorageBackendError("list", directory, code, str(exc)) from exc

    # --- internals ------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _parent(self, key: str, *, create: bool) -> Iterator[tuple[int, str]]:
        """Yield the fd of the directory holding ``key`` and the object's file name in it."""
        *dirs, name = key.split("/")
        with _fs.open_chain(self.root, dirs, create=create, key=key) as fds:
            yield fds[-1], name

    def _walk(self, fd: int, base: str, recursive: bool) -> Iterator[ObjectInfo]:
        with os.scandir(fd) as entries:
            found = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries if _is_key_name(e.name)]
        # Sorting each directory with "/" appended to sub-directory names yields global key order, because
        # '-' and '.' sort before '/' ("a-b" < "a.b" < "a/x" < "a0").
        for name, is_dir in sorted(found, key=lambda item: item[0] + "/" if item[1] else item[0]):
            if is_dir and recursive:
                with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                    child = os.open(name, _fs.DIR_FLAGS, dir_fd=fd)
                    try:
                        yield from self._walk(child, f"{base}{name}/", recursive)
                    finally:
                        os.close(child)
            elif not is_dir and len((base + name).encode()) <= MAX_KEY_BYTES:
                # Objects deleted while we list, and symlinks (never objects), are skipped.
                with contextlib.suppress(FileNotFoundError, ObjectNotFound, InvalidKey):
                    info = self._stat_at(fd, name, base + name)
                    yield ObjectInfo(info.key, info.size, info.etag, info.last_modified)

    def _put_chunks(
        self, key: str, chunks: Iterable[bytes], content_type: str | None, metadata: Mapping[str, str] | None
    ) -> ObjectInfo:
        """Commit order: temporary file, ``fsync``, ``os.replace`` onto the name, then the side-car."""
        validate_key(key)
        ctype, meta = check_content_type(content_type), check_metadata(metadata)
        for _ in range(_fs.ATTEMPTS):
            with contextlib.suppress(_fs.DirectoryVanished), self._parent(key, create=True) as (fd, name):
                tmp, st, etag = _fs.write_tmp(fd, chunks, durable=self.durable)  # vanishes before reading
                try:
                    os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
                except IsADirectoryError:
                    raise KeyPathConflict(key, "objects exist below this key") from None
                finally:
                    _fs.unlink_quietly(fd, tmp)
                return self._finish(fd, key, name, st, etag, ctype, meta)
        raise _fs.vanished_error("put", key)

    def _finish(
        self, fd: int, key: str, name: str, st: os.stat_result, etag: str, ctype: str, meta: Mapping[str, str]
    ) -> ObjectInfo:
        """Write the side-car of a just-published object, make the directory durable, describe the object."""
        record: dict[str, object] = {"ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        record |= {"etag": etag, "content_type": ctype, "metadata": dict(meta)}
        _fs.write_sidecar(fd, name, record, durable=self.durable)
        if self.durable:
            os.fsync(fd)
        return _info(key, st, record)

    def _stat_at(self, fd: int, name: str, key: str) -> ObjectInfo:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        if stat_mod.S_ISLNK(st.st_mode):
            raise InvalidKey(key, "the object path is a symbolic link")
        if not stat_mod.S_ISREG(st.st_mode):
            raise ObjectNotFound(key)  # a directory is not an object
        record = _fs.read_sidecar(fd, name, st)
        if record is not None:
            return _info(key, st, record)
        with os.fdopen(_fs.open_file(fd, name, key), "rb") as handle:
            return _describe(fd, name, key, handle)

    def _open_object(self, key: str, *, describe: bool) -> tuple[BinaryIO, ObjectInfo | None]:
        """Open an object for reading; the handle stays valid after the directory fds are closed."""
        validate_key(key)
        try:
            with self._parent(key, create=False) as (fd, name):
                raw = _fs.open_file(fd, name, key)
                if not stat_mod.S_ISREG(os.fstat(raw).st_mode):
                    os.close(raw)
                    raise ObjectNotFound(key)  # a directory is not an object
                handle = os.fdopen(raw, "rb")
                try:
                    return handle, _describe(fd, name, key, handle) if describe else None
                except BaseException:
                    handle.close()
                    raise
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise ObjectNotFound(key) from exc


def _entry_exists(fd: int, name: str, key: str) -> bool:
    """True if an object file ``name`` exists; refuses symlinks and directories in its place."""
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if stat_mod.S_ISLNK(st.st_mode):
        raise InvalidKey(key, "the object path is a symbolic link")
    if stat_mod.S_ISDIR(st.st_mode):
        raise KeyPathConflict(key, "objects exist below this key")
    return True


def _describe(fd: int, name: str, key: str, handle: BinaryIO) -> ObjectInfo:
    """Info of an open object file: from its side-car when fresh, else by hashing the content."""
    st = os.fstat(handle.fileno())
    record = _fs.read_sidecar(fd, name, st)
    if record is None:
        record = {"etag": md5_of_stream(handle)[0]}
        handle.seek(0)
    return _info(key, st, record)


def _info(key: str, st: os.stat_result, record: Mapping[str, object]) -> ObjectInfo:
    raw = record.get("metadata")
    try:
        meta = check_metadata(raw if isinstance(raw, Mapping) else {})
    except InvalidMetadata:
        meta = check_metadata({})  # a hand-edited side-car: metadata missing beats metadata wrong
    return ObjectInfo(
        key=key,
        size=st.st_size,
        etag=str(record["etag"]),
        last_modified=datetime.fromtimestamp(st.st_mtime_ns / 1e9, UTC),
        content_type=str(record.get("content_type") or DEFAULT_CONTENT_TYPE),
        metadata=meta,
    )


def _is_key_name(name: str) -> bool:
    try:
        validate_segment(name)
    except InvalidKey:
        return False  # hidden bookkeeping files, or files dropped in by hand that no key could name
    return True
