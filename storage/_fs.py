"""File-descriptor-relative file-system primitives for :mod:`storage.local` (Linux/POSIX ``openat`` family).

Every function here works relative to an open directory fd and never follows a symbolic link, which is what
makes the local store unable to leave its root even when someone plants a symlink inside it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat as stat_mod
from collections.abc import Iterable, Iterator

from storage.errors import InvalidKey, KeyPathConflict, StorageBackendError

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_TMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
ATTEMPTS = 5  # a concurrent delete may prune a directory we hold open; then the writer starts over


class DirectoryVanished(Exception):
    """A directory we held open was pruned by a concurrent delete; the caller should start over."""


def vanished_error(operation: str, key: str) -> StorageBackendError:
    """The error for a directory that kept vanishing through every attempt."""
    return StorageBackendError(operation, key, "ENOENT", "its directory kept vanishing under concurrent deletes")


@contextlib.contextmanager
def open_chain(root: str, segments: list[str], *, create: bool, key: str) -> Iterator[list[int]]:
    """Open ``root`` and each directory segment below it, never following a symlink.

    Args:
        root: the store root (already resolved).
        segments: directory names below the root.
        create: create missing directories (for writes).
        key: the key concerned, for error messages.

    Yields:
        The open directory fds, root first; all closed on exit.

    Raises:
        InvalidKey: a segment is a symlink. KeyPathConflict: creating, and a segment is a regular file.
        FileNotFoundError, NotADirectoryError: not creating, and the path does not exist as directories.
    """
    fds = [os.open(root, DIR_FLAGS)]
    try:
        for segment in segments:
            fds.append(_open_child_dir(fds[-1], segment, create, key))
        yield fds
    finally:
        for fd in fds:
            os.close(fd)


def _open_child_dir(parent: int, name: str, create: bool, key: str) -> int:
    for _ in range(ATTEMPTS):
        try:
            return os.open(name, DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o755, dir_fd=parent)
        except NotADirectoryError:
            # O_DIRECTORY|O_NOFOLLOW fails the same way on a file and on a symlink: tell them apart.
            if is_symlink(parent, name):
                raise InvalidKey(key, f"path component {name!r} is a symbolic link") from None
            if create:
                raise KeyPathConflict(key, f"parent {name!r} is an object") from None
            raise
    raise vanished_error("put", key)


def prune_empty(fds: list[int], dirs: list[str]) -> None:
    """Remove directories left empty, deepest first, so the tree mirrors what S3 would list.

    Args:
        fds: directory fds as yielded by :func:`open_chain` (``fds[i]`` holds ``dirs[i]``).
        dirs: the directory names below the root.
    """
    for depth in range(len(dirs), 0, -1):
        try:
            os.rmdir(dirs[depth - 1], dir_fd=fds[depth - 1])
        except OSError:
            return  # not empty, or already gone: stop climbing


def is_symlink(fd: int, name: str) -> bool:
    """True if ``name`` in directory ``fd`` is a symbolic link."""
    try:
        return stat_mod.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def open_file(fd: int, name: str, key: str) -> int:
    """Open ``name`` for reading without following a symlink.

    Raises:
        InvalidKey: ``name`` is a symlink. OSError: as ``os.open``.
    """
    try:
        return os.open(name, READ_FLAGS, dir_fd=fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InvalidKey(key, "the object path is a symbolic link") from exc
        raise


def unlink_quietly(fd: int, name: str) -> None:
    """Remove ``name`` from directory ``fd`` if it is there."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=fd)


def write_tmp(fd: int, chunks: Iterable[bytes], *, durable: bool) -> tuple[str, os.stat_result, str]:
    """Write chunks to a new hidden temporary file in directory ``fd``.

    Returns:
        The temporary name, its stat after writing, and the hex MD5 of what was written.

    Raises:
        DirectoryVanished: the directory was removed under us. OSError: the write failed (file removed).
    """
    tmp = f".tmp-{os.getpid()}-{os.urandom(8).hex()}"
    try:
        out = os.open(tmp, _TMP_FLAGS, 0o644, dir_fd=fd)
    except FileNotFoundError as exc:
        raise DirectoryVanished from exc
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with os.fdopen(out, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
                digest.update(chunk)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
            st = os.fstat(handle.fileno())
    except BaseException:
        unlink_quietly(fd, tmp)
        raise
    return tmp, st, digest.hexdigest()


def sidecar_name(name: str) -> str:
    """Hidden side-car file holding an object's ETag, content type and metadata."""
    return f".meta-{name}.json"


def write_sidecar(fd: int, name: str, record: dict[str, object], *, durable: bool) -> None:
    """Atomically replace the side-car of ``name`` with ``record``."""
    tmp, _, _ = write_tmp(fd, [json.dumps(record).encode()], durable=durable)
    try:
        os.replace(tmp, sidecar_name(name), src_dir_fd=fd, dst_dir_fd=fd)
    finally:
        unlink_quietly(fd, tmp)


def read_sidecar(fd: int, name: str, st: os.stat_result) -> dict[str, object] | None:
    """The side-car of ``name`` if it describes exactly the file ``st`` (same inode, size and mtime)."""
    try:
        with os.fdopen(os.open(sidecar_name(name), READ_FLAGS, dir_fd=fd), "rb") as handle:
            record = json.loads(handle.read())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    fresh = (record.get("ino"), record.get("size"), record.get("mtime_ns"))
    return record if fresh == (st.st_ino, st.st_size, st.st_mtime_ns) else None
