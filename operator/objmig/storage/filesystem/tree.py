"""A directory tree as a store of objects: paths beneath a root, atomic writes, key order.

Every path is opened relative to a descriptor of its parent, component by component, with
`O_NOFOLLOW`: a key can only ever reach a file beneath the root, whatever symlinks the tree
holds (a symlink on the way is refused, not followed). Writes go to a temporary file in the
target directory, are fsynced with the object's last-modified time as their mtime, and are
renamed into place (or linked, for a write that must not replace anything), so a file at
its final path is always whole. Temporaries of a writer that died are removed by whoever
writes into that directory next, and by the audit of the whole tree.

The methods block: the async layer (`client`, `write`) runs them on threads.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass

from objmig.storage.errors import ErrorKind, StorageError
from objmig.storage.filesystem.keys import (
    DEFAULT_NAME_MAX,
    DEFAULT_PATH_MAX,
    RESERVED_DIR,
    UnsafeKeyError,
    is_temporary,
    key_segments,
    temporary_name,
    written_here_by_dead_process,
)

#: A temporary nobody has written to for this long belongs to a writer that is gone (a
#: live writer touches it with every chunk): the next writer into its directory removes it.
STALE_TEMPORARY_SECONDS = 600.0
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class PathConflictError(StorageError):
    """A key needs a directory where a file is (or a file where a directory is): S3 allows
    `a` and `a/b` together, a filesystem does not."""

    kind: ErrorKind = "permanent"
    code = "KeyPathConflict"


class FileExistsAtKey(StorageError):
    """A write that must not replace anything found the key taken."""

    kind: ErrorKind = "retryable"
    code = "TargetExists"


class FilesystemUnavailable(StorageError):
    """The root is missing, not a directory, or not readable / writable: no object can move."""

    kind: ErrorKind = "permanent"
    code = "FilesystemUnavailable"
    is_config_error = True


@dataclass
class PendingFile:
    """A temporary being written, and where it goes when whole."""

    dir_fd: int
    temporary: str
    final: str
    fd: int


class FileTree:
    """The files beneath one root directory."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self._fd: int | None = None
        self.name_max = DEFAULT_NAME_MAX
        self.path_max = DEFAULT_PATH_MAX
        self.block_size = 4096
        self._swept: set[tuple[int, int]] = set()

    # -- opening --------------------------------------------------------------------------

    def open(self, *, writable: bool) -> None:
        """Open the root; a writable tree creates it (and `.objmig/`) when missing."""
        try:
            if writable:
                os.makedirs(self.root, exist_ok=True)
            self._fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            if writable:
                os.makedirs(os.path.join(self.root, RESERVED_DIR), exist_ok=True)
                probe = os.path.join(self.root, RESERVED_DIR, temporary_name())
                os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                os.unlink(probe)
        except OSError as error:
            self.close()
            what = "writable directory" if writable else "readable directory"
            raise FilesystemUnavailable(
                f"{self.root} is not a {what}: {error.strerror or error}"
            ) from None
        self.name_max = int(os.fpathconf(self._fd, "PC_NAME_MAX"))
        # The key is appended to the root: what the root takes is not left for keys.
        self.path_max = int(os.fpathconf(self._fd, "PC_PATH_MAX")) - len(self.root.encode()) - 1
        self.block_size = os.fstatvfs(self._fd).f_frsize or self.block_size

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def fd(self) -> int:
        if self._fd is None:
            raise RuntimeError(f"the tree at {self.root} is not open")
        return self._fd

    @property
    def index_directory(self) -> str:
        return os.path.join(self.root, RESERVED_DIR)

    def segments(self, key: str) -> tuple[str, ...]:
        """The key's path segments, or `UnsafeKeyError`."""
        return key_segments(key, name_max=self.name_max, path_max=self.path_max)

    # -- directories ----------------------------------------------------------------------

    def _open_dir(self, key: str, segments: tuple[str, ...], *, create: bool) -> int:
        """A descriptor of the directory `segments` beneath the root (the caller closes it).

        `create` makes missing directories. A symlink on the way is refused; a file on
        the way is a path conflict; with `create` False a missing one raises
        FileNotFoundError.
        """
        fd = os.dup(self.fd)
        try:
            for name in segments:
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    # A concurrent writer may have made it meanwhile.
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, 0o755, dir_fd=fd)
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError as error:
                    raise self._path_error(key, fd, name, error) from None
                os.close(fd)
                fd = child
            return fd
        except BaseException:
            os.close(fd)
            raise

    @staticmethod
    def _path_error(key: str, dir_fd: int, name: str, error: OSError) -> StorageError:
        # O_DIRECTORY | O_NOFOLLOW on a symlink says ENOTDIR (or ELOOP): look at what it is.
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            with contextlib.suppress(OSError):
                if stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                    return UnsafeKeyError(f"key {key!r}: {name!r} on its path is a symlink")
        if error.errno == errno.ENOTDIR:
            return PathConflictError(
                f"key {key!r}: {name!r} on its path is a file, not a directory (another key)"
            )
        raise error

    # -- reading --------------------------------------------------------------------------

    def stat(self, key: str) -> os.stat_result | None:
        """The file of `key` (a regular file, not followed through a symlink), or None."""
        segments = self.segments(key)
        try:
            dir_fd = self._open_dir(key, segments[:-1], create=False)
        except (FileNotFoundError, PathConflictError, UnsafeKeyError):
            return None  # nothing beneath the root is at that key
        try:
            found = os.stat(segments[-1], dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        finally:
            os.close(dir_fd)
        return found if stat.S_ISREG(found.st_mode) else None

    def open_read(self, key: str) -> int:
        """A read-only descriptor of the file of `key`; FileNotFoundError when there is none."""
        segments = self.segments(key)
        try:
            dir_fd = self._open_dir(key, segments[:-1], create=False)
        except (PathConflictError, UnsafeKeyError):
            raise FileNotFoundError(key) from None
        try:
            fd = os.open(segments[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.EISDIR):
                raise FileNotFoundError(key) from None
            raise
        finally:
            os.close(dir_fd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise FileNotFoundError(key)
        return fd

    def walk(
        self, prefix: str = "", start_after: str | None = None
    ) -> Generator[tuple[str, os.stat_result], None, None]:
        """Every file beneath the root whose key starts with `prefix` and sorts after
        `start_after`, in S3's order (UTF-8 bytes of the whole key), with its stat.

        Directories are visited where their keys fall in that order (`a.txt` comes before
        `a/b`, since `.` < `/`), and skipped whole when no key in them can qualify. The
        `.objmig/` directory, temporaries, symlinks and special files are not objects.
        """
        after = start_after.encode("utf-8", "surrogateescape") if start_after else None
        yield from self._walk(self.fd, "", prefix.encode("utf-8", "surrogateescape"), after)

    def _walk(
        self, fd: int, base: str, prefix: bytes, after: bytes | None
    ) -> Iterator[tuple[str, os.stat_result]]:
        entries: list[tuple[bytes, str, bool, os.DirEntry[str]]] = []
        with os.scandir(fd) as listing:
            for entry in listing:
                name = entry.name
                if (not base and name == RESERVED_DIR) or is_temporary(name):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    entries.append(
                        ((base + name + "/").encode("utf-8", "surrogateescape"), name, True, entry)
                    )
                elif entry.is_file(follow_symlinks=False):
                    entries.append(
                        ((base + name).encode("utf-8", "surrogateescape"), name, False, entry)
                    )
        entries.sort(key=lambda e: e[0])
        for sort_key, name, is_dir, entry in entries:
            if is_dir:
                if not (sort_key.startswith(prefix) or prefix.startswith(sort_key)):
                    continue
                # Every key in the directory starts with sort_key: all of them sort before
                # `after` unless `after` lies inside it or sort_key is beyond it.
                if after is not None and sort_key < after and not after.startswith(sort_key):
                    continue
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError:
                    continue  # gone meanwhile, or unreadable: not ours to list
                try:
                    yield from self._walk(child, base + name + "/", prefix, after)
                finally:
                    os.close(child)
            else:
                if not sort_key.startswith(prefix) or (after is not None and sort_key <= after):
                    continue
                try:
                    found = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                yield base + name, found

    # -- writing --------------------------------------------------------------------------

    def begin(self, key: str) -> PendingFile:
        """Make the key's directories and a temporary in the last of them."""
        segments = self.segments(key)
        dir_fd = self._open_dir(key, segments[:-1], create=True)
        try:
            self._sweep_once(dir_fd)
            temporary = temporary_name()
            fd = os.open(
                temporary,
                # Readable too: a wrongly guessed part layout is hashed again from it.
                os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o644,
                dir_fd=dir_fd,
            )
        except BaseException:
            os.close(dir_fd)
            raise
        return PendingFile(dir_fd, temporary, segments[-1], fd)

    @staticmethod
    def write_chunk(pending: PendingFile, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            written = os.write(pending.fd, view)
            view = view[written:]

    def finish(self, pending: PendingFile, *, mtime_ns: int, replace: bool) -> None:
        """Durably put the temporary in place with `mtime_ns` as its modification time.

        `replace` False links instead of renaming, so an existing file is never
        replaced (`FileExistsAtKey`).
        """
        try:
            os.utime(pending.fd, ns=(mtime_ns, mtime_ns))
            os.fsync(pending.fd)
        finally:
            os.close(pending.fd)
            pending.fd = -1
        try:
            if replace:
                os.rename(
                    pending.temporary,
                    pending.final,
                    src_dir_fd=pending.dir_fd,
                    dst_dir_fd=pending.dir_fd,
                )
            else:
                os.link(
                    pending.temporary,
                    pending.final,
                    src_dir_fd=pending.dir_fd,
                    dst_dir_fd=pending.dir_fd,
                    follow_symlinks=False,
                )
                os.unlink(pending.temporary, dir_fd=pending.dir_fd)
        except FileExistsError:
            self._conflict_or_taken(pending)
        except IsADirectoryError:
            raise PathConflictError(
                f"{pending.final!r} is a directory (other keys are beneath it)"
            ) from None
        os.fsync(pending.dir_fd)
        os.close(pending.dir_fd)
        pending.dir_fd = -1

    def _conflict_or_taken(self, pending: PendingFile) -> None:
        found = os.stat(pending.final, dir_fd=pending.dir_fd, follow_symlinks=False)
        if stat.S_ISDIR(found.st_mode):
            raise PathConflictError(f"{pending.final!r} is a directory (other keys are beneath it)")
        raise FileExistsAtKey(f"{pending.final!r} exists")

    @staticmethod
    def abandon(pending: PendingFile) -> None:
        """Remove a temporary that will not be finished (an error, a cancellation)."""
        if pending.fd >= 0:
            os.close(pending.fd)
            pending.fd = -1
        if pending.dir_fd >= 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(pending.temporary, dir_fd=pending.dir_fd)
            os.close(pending.dir_fd)
            pending.dir_fd = -1

    def unlink(self, key: str) -> bool:
        """Delete the file of `key`; False when there was none."""
        segments = self.segments(key)
        try:
            dir_fd = self._open_dir(key, segments[:-1], create=False)
        except (FileNotFoundError, PathConflictError, UnsafeKeyError):
            return False
        try:
            found = os.stat(segments[-1], dir_fd=dir_fd, follow_symlinks=False)
            if not stat.S_ISREG(found.st_mode):
                return False
            os.unlink(segments[-1], dir_fd=dir_fd)
            os.fsync(dir_fd)
            return True
        except FileNotFoundError:
            return False
        finally:
            os.close(dir_fd)

    # -- space and temporaries ------------------------------------------------------------

    def space(self) -> tuple[int, int]:
        """(free bytes an unprivileged writer may use, total bytes) of the root's filesystem."""
        info = os.fstatvfs(self.fd)
        return info.f_bavail * info.f_frsize, info.f_blocks * info.f_frsize

    def space_needed(self, size: int) -> int:
        """What writing a file of `size` bytes takes from the filesystem: its blocks, and
        one more for what comes with it (its line in the index, its directory entry)."""
        block = self.block_size
        return -(-size // block) * block + block

    @staticmethod
    def allocate(pending: PendingFile, size: int) -> None:
        """Take `size` bytes of the filesystem for the temporary now (the file is `size`
        long afterwards); ENOSPC when they are not there. A filesystem that cannot
        allocate ahead is left to fill as the bytes come."""
        if size <= 0:
            return
        try:
            os.posix_fallocate(pending.fd, 0, size)
        except OSError as error:
            if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise

    def _sweep_once(self, dir_fd: int) -> None:
        found = os.fstat(dir_fd)
        identity = (found.st_dev, found.st_ino)
        if identity in self._swept:
            return
        self._swept.add(identity)
        self.sweep_directory(dir_fd)

    @staticmethod
    def sweep_directory(dir_fd: int, now: float | None = None) -> int:
        """Remove the temporaries in one directory that nobody is writing; returns how many."""
        moment = time.time() if now is None else now
        removed = 0
        with os.scandir(dir_fd) as listing:
            names = [
                (entry.name, entry.stat(follow_symlinks=False).st_mtime)
                for entry in listing
                if is_temporary(entry.name) and entry.is_file(follow_symlinks=False)
            ]
        for name, mtime in names:
            if written_here_by_dead_process(name) or moment - mtime > STALE_TEMPORARY_SECONDS:
                try:
                    os.unlink(name, dir_fd=dir_fd)
                    removed += 1
                except FileNotFoundError:
                    pass
        return removed

    def sweep(self) -> int:
        """Remove abandoned temporaries in the whole tree; returns how many."""
        return self._sweep_tree(self.fd, top=True)

    def _sweep_tree(self, fd: int, *, top: bool) -> int:
        removed = self.sweep_directory(fd)
        with os.scandir(fd) as listing:
            subdirs = [
                e.name
                for e in listing
                if e.is_dir(follow_symlinks=False) and not (top and e.name == RESERVED_DIR)
            ]
        for name in subdirs:
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError:
                continue
            try:
                removed += self._sweep_tree(child, top=False)
            finally:
                os.close(child)
        return removed
