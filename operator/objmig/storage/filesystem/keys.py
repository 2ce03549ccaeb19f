"""Which object keys can be files: a key becomes a path under the root, or is refused.

An S3 key is any UTF-8 string up to 1,024 bytes; a path is not. A key is refused (never
mangled, so that two keys cannot land on one file) when a segment is empty (`a//b`, a
leading or trailing `/`), `.` or `..`, when it holds NUL, when a segment or the whole path
is longer than the filesystem allows, or when it would collide with objmig's own names
(the `.objmig/` directory at the root, temporary files). Nothing here touches the disk.
"""

from __future__ import annotations

import hashlib
import os
import socket

from objmig.storage.errors import ErrorKind, StorageError

#: objmig's own directory at the root of a tree: the index, never an object.
RESERVED_DIR = ".objmig"
#: Files being written: `<TEMP_PREFIX><host>-<pid>-<random>`, renamed into place when whole.
TEMP_PREFIX = ".objmig-tmp-"
#: Linux's limits for a name and a path; the tree asks its filesystem for the real ones.
DEFAULT_NAME_MAX = 255
DEFAULT_PATH_MAX = 4096


class UnsafeKeyError(StorageError):
    """A key that cannot be a path under the root; the object fails with this reason."""

    kind: ErrorKind = "permanent"
    code = "UnsafeKey"


def key_segments(
    key: str, *, name_max: int = DEFAULT_NAME_MAX, path_max: int = DEFAULT_PATH_MAX
) -> tuple[str, ...]:
    """The path segments of `key` under a root, or `UnsafeKeyError` saying why it has none."""

    def refuse(why: str) -> UnsafeKeyError:
        return UnsafeKeyError(f"key {key!r} cannot be a file: {why}")

    if not key:
        raise refuse("it is empty")
    if "\x00" in key:
        raise refuse("it holds a NUL character")
    if key.startswith("/"):
        raise refuse("it starts with '/' (an absolute path)")
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:
        raise refuse("it is not valid UTF-8") from None
    # The root's own path comes on top; keep a margin so `root/key` stays under PATH_MAX.
    if len(encoded) >= path_max:
        raise refuse(f"it is {len(encoded)} bytes long; paths stop at {path_max - 1}")
    segments = tuple(key.split("/"))
    for segment in segments:
        if segment == "":
            raise refuse("it has an empty path segment ('//', or a trailing '/')")
        if segment in (".", ".."):
            raise refuse(f"it has a {segment!r} segment")
        if len(segment.encode("utf-8")) > name_max:
            raise refuse(f"a segment is longer than the filesystem's {name_max}-byte names")
        if segment.startswith(TEMP_PREFIX):
            raise refuse(f"names starting with {TEMP_PREFIX!r} are objmig's temporary files")
    if segments[0] == RESERVED_DIR:
        raise refuse(f"{RESERVED_DIR}/ at the root holds objmig's index")
    return segments


def is_temporary(name: str) -> bool:
    """Whether a directory entry is one of objmig's files being written."""
    return name.startswith(TEMP_PREFIX)


def _host_tag() -> str:
    # A short stand-in for the host name: names must stay within NAME_MAX.
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def temporary_name() -> str:
    """A fresh temporary name that says which process writes it (see `temporary_owner`)."""
    return f"{TEMP_PREFIX}{_host_tag()}-{os.getpid()}-{os.urandom(6).hex()}"


def temporary_owner(name: str) -> tuple[str, int] | None:
    """(host tag, pid) of the process that wrote a temporary, if its name says so."""
    parts = name[len(TEMP_PREFIX) :].split("-")
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


def written_here_by_dead_process(name: str) -> bool:
    """Whether a temporary was written on this host by a process that is gone: nobody can
    finish it, so it may go at once (others only once they are old)."""
    owner = temporary_owner(name)
    if owner is None or owner[0] != _host_tag():
        return False
    try:
        os.kill(owner[1], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
