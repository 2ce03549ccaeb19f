"""A tree read the way the copy and verification steps read a bucket.

`FileClient` answers `head`, `get`, `get_tags`, `list_page`, `list_objects` (and the few
other reads `objmig.storage.copy` and the pipeline make of a source or a target) as
`S3HttpClient` does, so the same steps copy from a directory to S3, and prove a copy in a
directory, without a second implementation of either.

What a file says as an object: the size, and the modification time as last-modified; the
rest comes from the index (`index.py`) while the index still describes the file: ETag,
part sizes, SHA-256, user metadata, content headers, tags. A file the index does not
describe (a plain directory tree, or one changed since objmig wrote it) has the MD5 of its
bytes as its ETag, as S3 gives a single-part PUT, and a Content-Type guessed from its
name. Those hashes are computed once per file per process and remembered by the file's
identity (device, inode, size, mtime, ctime: any write changes the ctime).

Reads are refused, as S3 refuses them, with `S3ResponseError`: 404 `NoSuchKey` for a key
that has no file, 412 `PreconditionFailed` when `If-Match` does not hold, which includes a
file that changed while it was read.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import mimetypes
import os
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from objmig.storage.errors import S3ResponseError
from objmig.storage.features import StoreFeatures
from objmig.storage.filesystem.index import FileIndex, IndexEntry
from objmig.storage.filesystem.keys import UnsafeKeyError
from objmig.storage.filesystem.tree import FileTree
from objmig.storage.types import (
    STREAM_CHUNK,
    ContentHeaders,
    GetResult,
    HeadResult,
    ObjectInfo,
    normalise_etag,
)

#: Files whose hashes one process remembers (about 200 bytes each).
_HASH_CACHE_SIZE = 200_000
_READ_CHUNK = 4 * STREAM_CHUNK


class _Hashes:
    """MD5 and SHA-256 of files, by identity, for the life of the process."""

    def __init__(self) -> None:
        self._known: OrderedDict[tuple[int, ...], tuple[str, str]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def identity(found: os.stat_result) -> tuple[int, ...]:
        return (found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns)

    def get(self, found: os.stat_result) -> tuple[str, str] | None:
        with self._lock:
            return self._known.get(self.identity(found))

    def put(self, found: os.stat_result, md5: str, sha256: str) -> None:
        with self._lock:
            self._known[self.identity(found)] = (md5, sha256)
            while len(self._known) > _HASH_CACHE_SIZE:
                self._known.popitem(last=False)


HASHES = _Hashes()


def _not_found(operation: str, key: str) -> S3ResponseError:
    return S3ResponseError(operation, 404, "NoSuchKey", f"no file for key {key!r}")


def _changed(key: str, why: str) -> S3ResponseError:
    return S3ResponseError("GetObject", 412, "PreconditionFailed", f"{key!r}: {why}")


def _modified(found: os.stat_result) -> datetime:
    # Whole seconds, as HEAD reports Last-Modified (see `types.whole_seconds`).
    return datetime.fromtimestamp(found.st_mtime_ns // 1_000_000_000, UTC)


def _hash_fd(fd: int) -> tuple[str, str]:
    md5 = hashlib.md5(usedforsecurity=False)
    sha = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, _READ_CHUNK, offset):
        md5.update(chunk)
        sha.update(chunk)
        offset += len(chunk)
    return md5.hexdigest(), sha.hexdigest()


class FileClient:
    """Reads of one tree, answered as a bucket's (the bucket argument is not used: a tree
    is one place)."""

    def __init__(self, tree: FileTree, index: FileIndex) -> None:
        self.tree = tree
        self.index = index
        # A tree holds everything a copy reads (tags, part sizes, checksums: the index).
        self.features = StoreFeatures(f"directory {tree.root}")

    # -- describing files -----------------------------------------------------------------

    def entry(self, key: str, found: os.stat_result) -> IndexEntry | None:
        """The index entry describing the file of `key` as it is now, if any."""
        return self.index.lookup(key, found.st_size, found.st_mtime_ns)

    def hashes(self, key: str, found: os.stat_result) -> tuple[str, str]:
        """(MD5, SHA-256) of the file's bytes, read once per process (blocking)."""
        known = HASHES.get(found)
        if known is not None:
            return known
        fd = self.tree.open_read(key)
        try:
            md5, sha = _hash_fd(fd)
            if HASHES.identity(os.fstat(fd)) != HASHES.identity(found):
                raise _changed(key, "the file changed while it was read")
        finally:
            os.close(fd)
        HASHES.put(found, md5, sha)
        return md5, sha

    def describe(
        self, key: str, found: os.stat_result, *, checksums: bool = False, hash_bytes: bool = True
    ) -> HeadResult:
        """The file as an object (blocking). `hash_bytes` False leaves an unindexed file's
        ETag empty unless its hashes are known already (the caller hashes as it reads)."""
        entry = self.entry(key, found)
        if entry is not None:
            return HeadResult(
                etag=entry.etag,
                size=found.st_size,
                last_modified=_modified(found),
                version_id=None,
                metadata=dict(entry.metadata),
                content=entry.content,
                parts_count=len(entry.parts) if len(entry.parts) > 1 else None,
                checksums=_sha256_checksum(entry.sha256) if checksums else {},
                checksum_type="FULL_OBJECT" if checksums and entry.sha256 else None,
                tag_count=len(entry.tags),
            )
        known = self.hashes(key, found) if hash_bytes else HASHES.get(found)
        guessed, _ = mimetypes.guess_type(key, strict=False)
        return HeadResult(
            etag=known[0] if known else "",
            size=found.st_size,
            last_modified=_modified(found),
            version_id=None,
            content=ContentHeaders(content_type=guessed or "application/octet-stream"),
            checksums=_sha256_checksum(known[1]) if checksums and known else {},
            checksum_type="FULL_OBJECT" if checksums and known else None,
        )

    def _stat(self, operation: str, key: str) -> os.stat_result:
        try:
            found = self.tree.stat(key)
        except UnsafeKeyError:
            raise _not_found(operation, key) from None
        if found is None:
            raise _not_found(operation, key)
        return found

    # -- the reads of a bucket ------------------------------------------------------------

    async def head(
        self,
        bucket: str,
        key: str,
        *,
        version_id: str | None = None,
        part_number: int | None = None,
        sse_c: bytes | None = None,
        checksums: bool = False,
    ) -> HeadResult:
        """HEAD: the file as an object; with `part_number`, that part's size (from the
        index) and the part count, as S3 answers it."""

        def describe() -> HeadResult:
            head = self.describe(key, self._stat("HeadObject", key), checksums=checksums)
            if part_number is None:
                return head
            entry = self.entry(key, self._stat("HeadObject", key))
            parts = entry.parts if entry is not None and len(entry.parts) > 1 else ()
            if not parts:
                if part_number != 1:
                    raise S3ResponseError("HeadObject", 416, "InvalidPartNumber", key)
                return head
            if not 1 <= part_number <= len(parts):
                raise S3ResponseError("HeadObject", 416, "InvalidPartNumber", key)
            # As S3 answers it: the object's headers and metadata, the part's length.
            return replace(head, size=parts[part_number - 1], parts_count=len(parts))

        return await asyncio.to_thread(describe)

    @asynccontextmanager
    async def get(
        self,
        bucket: str,
        key: str,
        *,
        version_id: str | None = None,
        if_match: str | None = None,
        byte_range: tuple[int, int] | None = None,
        sse_c: bytes | None = None,
    ) -> AsyncIterator[GetResult]:
        """GET: the file's bytes (or an inclusive range of them), streamed.

        `if_match` is checked before the first byte when the ETag is known (indexed, or
        hashed before); otherwise the bytes are hashed as they are read, and the read
        fails with 412 at its end if they were not that ETag. A file that changes while it
        is read fails the read too.
        """
        wanted = normalise_etag(if_match) if if_match else None

        def open_file() -> tuple[int, os.stat_result, HeadResult]:
            found = self._stat("GetObject", key)
            whole = byte_range is None or (
                byte_range[0] == 0 and byte_range[1] + 1 >= found.st_size
            )
            head = self.describe(key, found, hash_bytes=not (whole and wanted))
            if wanted and head.etag and head.etag != wanted:
                raise _changed(key, f"ETag is {head.etag}, not {wanted}")
            try:
                fd = self.tree.open_read(key)
            except FileNotFoundError:
                raise _not_found("GetObject", key) from None
            return fd, found, head

        fd, found, head = await asyncio.to_thread(open_file)
        try:
            first, last = byte_range if byte_range is not None else (0, found.st_size - 1)
            last = min(last, found.st_size - 1)
            length = max(0, last - first + 1)
            verify = wanted if not head.etag else None
            if verify:
                head = HeadResult(**{**_fields(head), "etag": verify})
            yield GetResult(head, length, _FileBody(key, fd, found, first, length, verify))
        finally:
            os.close(fd)

    async def get_tags(
        self, bucket: str, key: str, version_id: str | None = None
    ) -> dict[str, str]:
        def tags() -> dict[str, str]:
            entry = self.entry(key, self._stat("GetObjectTagging", key))
            return dict(entry.tags) if entry is not None else {}

        return await asyncio.to_thread(tags)

    async def object_part_sizes(
        self, bucket: str, key: str, version_id: str | None = None, sse_c: bytes | None = None
    ) -> list[int] | None:
        def parts() -> list[int] | None:
            entry = self.entry(key, self._stat("GetObjectAttributes", key))
            return list(entry.parts) if entry is not None and len(entry.parts) > 1 else None

        return await asyncio.to_thread(parts)

    async def bucket_versioning(self, bucket: str) -> str:
        """A tree keeps no versions."""
        return ""

    async def list_page(
        self,
        bucket: str,
        prefix: str = "",
        *,
        start_after: str | None = None,
        continuation_token: str | None = None,
        max_keys: int = 1000,
    ) -> tuple[list[ObjectInfo], str | None]:
        """Up to `max_keys` files in key order after `start_after` (or the token, which is
        the last key of the page before), and the next page's token."""
        after = continuation_token or start_after

        def page() -> tuple[list[ObjectInfo], str | None]:
            found: list[ObjectInfo] = []
            walk = self.tree.walk(prefix, after)
            try:
                for key, info in walk:
                    if len(found) == max_keys:
                        return found, found[-1].key
                    found.append(self._info(key, info))
            finally:
                walk.close()
            return found, None

        return await asyncio.to_thread(page)

    async def list_objects(
        self,
        bucket: str,
        prefix: str = "",
        *,
        start_after: str | None = None,
        page_size: int = 1000,
    ) -> AsyncIterator[ObjectInfo]:
        """Every file under `prefix`, in key order (one walk, read a page at a time)."""
        walk = self.tree.walk(prefix, start_after)

        def page() -> list[ObjectInfo]:
            found: list[ObjectInfo] = []
            for key, info in walk:
                found.append(self._info(key, info))
                if len(found) == page_size:
                    break
            return found

        try:
            while batch := await asyncio.to_thread(page):
                for info in batch:
                    yield info
        finally:
            walk.close()

    def _info(self, key: str, found: os.stat_result) -> ObjectInfo:
        head = self.describe(key, found)
        return ObjectInfo(
            key=key,
            version_id=None,
            size=head.size,
            etag=head.etag,
            last_modified=head.last_modified,
        )


def _sha256_checksum(hex_digest: str) -> dict[str, str]:
    if not hex_digest:
        return {}
    return {"SHA256": base64.b64encode(bytes.fromhex(hex_digest)).decode()}


def _fields(head: HeadResult) -> dict[str, Any]:
    return {name: getattr(head, name) for name in head.__dataclass_fields__}


class _FileBody:
    """The bytes of one file (range), read on a thread a chunk at a time."""

    def __init__(
        self,
        key: str,
        fd: int,
        found: os.stat_result,
        offset: int,
        length: int,
        verify_etag: str | None,
    ) -> None:
        self._key = key
        self._fd = fd
        self._found = found
        self._offset = offset
        self._left = length
        self._verify = verify_etag
        self._md5 = hashlib.md5(usedforsecurity=False) if verify_etag else None
        self._sha = hashlib.sha256() if verify_etag else None
        self._finished = False

    async def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            if not self._finished:  # an empty range: nothing read, still checked
                await asyncio.to_thread(self._finish)
            return b""
        size = self._left if n < 0 else min(n, self._left)
        chunk = await asyncio.to_thread(self._read, size)
        if not chunk:
            raise _changed(self._key, "the file became shorter while it was read")
        return chunk

    def _read(self, size: int) -> bytes:
        chunk = os.pread(self._fd, size, self._offset)
        self._offset += len(chunk)
        self._left -= len(chunk)
        if self._md5 is not None and self._sha is not None:
            self._md5.update(chunk)
            self._sha.update(chunk)
        if self._left <= 0:
            self._finish()
        return chunk

    def _finish(self) -> None:
        self._finished = True
        if HASHES.identity(os.fstat(self._fd)) != HASHES.identity(self._found):
            raise _changed(self._key, "the file changed while it was read")
        if self._md5 is None or self._sha is None:
            return
        md5 = self._md5.hexdigest()
        if md5 != self._verify:
            raise _changed(self._key, f"ETag is {md5}, not {self._verify}")
        HASHES.put(self._found, md5, self._sha.hexdigest())
