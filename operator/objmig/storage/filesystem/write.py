"""Copying an object into a tree: one GET, streamed into a temporary, hashed as it is
written, put in place whole, and recorded in the index.

The part boundaries of the source are kept where it matters: the file's ETag is computed
from its bytes cut at the source's parts (the MD5 of a single-part object, the MD5 of the
parts' MD5s for a multipart one), so verification compares it with the source's ETag like
any copy's, and a later copy back to S3 cuts the object the same way and gets the same
ETag. The SHA-256 of the bytes written is kept in the index too.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from objmig.storage.copy.model import CopyOptions, CopyResult, SourceObject, TargetExistsError
from objmig.storage.copy.planning import (
    Plan,
    check_source,
    copy_result,
    plan_copy,
    plan_for,
    single_part_by_listing,
)
from objmig.storage.errors import (
    ErrorKind,
    IntegrityError,
    S3ResponseError,
    SourceChangedError,
    StorageError,
)
from objmig.storage.filesystem.index import FileIndex, IndexEntry
from objmig.storage.filesystem.tree import FileExistsAtKey, FileTree, PendingFile
from objmig.storage.parts import resolve_part_layout
from objmig.storage.reader import ObjectReader
from objmig.storage.streaming import PartStream
from objmig.storage.types import (
    MIGRATION_METADATA_KEY,
    Body,
    ContentHeaders,
    PartLayout,
    WriteResult,
)

#: The lock a tree's writers take to measure and take free space one at a time.
SPACE_LOCK = "space.lock"


class TargetSpaceLowError(StorageError):
    """Writing the object would leave less free space than the spec keeps free.

    Not a failure of the object: it waits (and the migration pauses) until there is room.
    """

    kind: ErrorKind = "retryable"
    code = "TargetSpaceLow"

    def __init__(self, message: str, free: int, total: int, needed: int = 0) -> None:
        super().__init__(message)
        self.free = free
        self.total = total
        self.needed = needed


@dataclass
class SpaceKeeper:
    """Keeps `min_free` bytes free on the tree's filesystem, whoever else writes to it.

    Several workers (threads of one process, or pods mounting one volume) may write to a
    tree at once; each measuring the free space and then writing would let them all take
    the same room. So the measurement and the taking happen under one lock on the tree
    (`.objmig/space.lock`), and the taking is real: the object's temporary is allocated
    at its full size (`posix_fallocate`) before the lock is let go, so the next writer's
    measurement already sees it gone. A filesystem that cannot allocate ahead is only
    measured.
    """

    tree: FileTree
    min_free: int

    def claim(self, key: str, size: int) -> PendingFile:
        """The key's temporary with `size` bytes taken for it, or `TargetSpaceLowError`
        (blocking)."""
        with self._locked():
            free, total = self.tree.space()
            needed = self.tree.space_needed(size)
            if free - needed < self.min_free:
                raise TargetSpaceLowError(
                    f"{key!r} needs {needed} bytes on disk; {free} are free on "
                    f"{self.tree.root} and {self.min_free} must stay free (minFreeSpace)",
                    free,
                    total,
                    needed,
                )
            pending = self.tree.begin(key)
            try:
                self.tree.allocate(pending, size)
            except OSError as error:
                FileTree.abandon(pending)
                if error.errno == errno.ENOSPC:
                    raise TargetSpaceLowError(
                        f"no space left on {self.tree.root}", *self.tree.space(), needed
                    ) from None
                raise
            return pending

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # A descriptor of its own per claim: flock excludes other descriptors, so threads
        # of this process wait for each other as other processes do.
        fd = os.open(
            os.path.join(self.tree.index_directory, SPACE_LOCK),
            os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
            0o664,
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


class _PartHasher:
    """The ETag of bytes cut at given part sizes, and their SHA-256, as they pass."""

    def __init__(self, sizes: tuple[int, ...]) -> None:
        self._sizes = sizes
        self._index = 0
        self._left = sizes[0] if sizes else 0
        self._part = hashlib.md5(usedforsecurity=False)
        self._digests: list[bytes] = []
        self.sha256 = hashlib.sha256()

    def update(self, data: bytes) -> None:
        self.sha256.update(data)
        view = memoryview(data)
        while view:
            take = min(len(view), self._left) if self._index < len(self._sizes) - 1 else len(view)
            self._part.update(view[:take])
            view = view[take:]
            self._left -= take
            if self._left == 0 and self._index < len(self._sizes) - 1:
                self._digests.append(self._part.digest())
                self._part = hashlib.md5(usedforsecurity=False)
                self._index += 1
                self._left = self._sizes[self._index]

    def etag(self) -> str:
        if len(self._sizes) <= 1:
            return self._part.hexdigest()
        digests = [*self._digests, self._part.digest()]
        return f"{hashlib.md5(b''.join(digests), usedforsecurity=False).hexdigest()}-{len(digests)}"


def etag_of_file(fd: int, sizes: tuple[int, ...]) -> str:
    """The ETag of a file's bytes cut at `sizes` (blocking)."""
    hasher = _PartHasher(sizes)
    offset = 0
    while chunk := os.pread(fd, 4 * 1024 * 1024, offset):
        hasher.update(chunk)
        offset += len(chunk)
    return hasher.etag()


async def write_to_tree(
    src: ObjectReader,
    tree: FileTree,
    index: FileIndex,
    space: SpaceKeeper,
    source: SourceObject,
    key: str,
    options: CopyOptions,
) -> CopyResult:
    """Copy `source` to the file of `key` (see the module docstring).

    Raises like `copy_object`: `SourceChangedError`, `ObjectArchivedError`,
    `TargetExistsError` for a `create_only` copy onto a taken key, plus
    `TargetSpaceLowError` when the object does not fit, `UnsafeKeyError` and
    `PathConflictError` for keys that cannot be files.
    """
    plan: Plan | None = None
    listed = source.listed() if source.head is None else None
    if listed is None or not single_part_by_listing(listed, options):
        head = source.head
        if head is None or head.listed_only:
            # The index keeps the object's metadata and headers, which no listing tells.
            head = await src.head(
                source.bucket, source.key, version_id=source.version_id, sse_c=source.sse_c_key
            )
        plan = await plan_copy(src, source, options, head)
    version = plan.version_id if plan else source.version_id
    etag = plan.head.etag if plan else source.etag
    size = plan.head.size if plan else (source.size or 0)
    tree.segments(key)  # an unsafe key fails before anything is read
    pending = await asyncio.to_thread(space.claim, key, size)
    try:
        try:
            async with src.get(
                source.bucket,
                source.key,
                version_id=version,
                if_match=etag,
                byte_range=(0, size - 1) if plan is not None and plan.layout.multipart else None,
                sse_c=source.sse_c_key,
            ) as got:
                if plan is None:
                    check_source(source, got.head)
                    layout = PartLayout((got.head.size,), "single", multipart=False)
                    plan = plan_for(source, options, got.head, layout, None)
                if options.preserve_tags and plan.tags is None and got.head.tag_count:
                    plan = replace(
                        plan,
                        tags=await src.get_tags(source.bucket, source.key, plan.version_id),
                    )
                hasher = await _stream(got.body, pending, plan, options, source)
                written_etag = hasher.etag()
                layout = await _exact_layout(src, source, plan, pending, written_etag)
                if layout is not plan.layout:
                    plan = replace(plan, layout=layout)
                    written_etag = await asyncio.to_thread(etag_of_file, pending.fd, layout.sizes)
                mtime = int(plan.head.last_modified.timestamp()) * 1_000_000_000
                await asyncio.to_thread(
                    tree.finish, pending, mtime_ns=mtime, replace=not options.create_only
                )
        except BaseException:
            await asyncio.to_thread(FileTree.abandon, pending)
            raise
    except S3ResponseError as exc:
        if exc.operation == "GetObject" and exc.status == 412:
            raise SourceChangedError(f"{source.key}: ETag is no longer {etag}") from None
        raise
    except FileExistsAtKey:
        assert plan is not None
        raise TargetExistsError(f"{tree.root}/{key} exists", plan.head) from None
    except OSError as error:
        if error.errno == errno.ENOSPC:  # allocated ahead, yet a filesystem may still say so
            free, total = tree.space()
            raise TargetSpaceLowError(f"no space left on {tree.root}", free, total, size) from None
        raise
    sha256 = hasher.sha256.hexdigest()
    index.append(
        IndexEntry(
            key=key,
            size=plan.head.size,
            mtime_ns=mtime,
            etag=written_etag,
            sha256=sha256,
            last_modified=plan.head.last_modified,
            parts=plan.layout.sizes if plan.layout.multipart else (),
            metadata={k: v for k, v in plan.metadata.items() if k != MIGRATION_METADATA_KEY},
            content=plan.head.content,
            tags=dict(plan.tags or {}),
            storage_class=plan.head.storage_class,
            version_id=plan.version_id,
            migration=options.migration_tag,
        )
    )
    await index.sync()
    return copy_result(
        written=WriteResult(etag=written_etag),
        plan=plan,
        options=options,
        server_side=False,
        sha256=sha256,
        # The tree computed it of the bytes it wrote: its word on them, as a store's is.
        checksum_algorithm="SHA256",
    )


async def _stream(
    body: Body, pending: PendingFile, plan: Plan, options: CopyOptions, source: SourceObject
) -> _PartHasher:
    """Write the GET's body to the temporary, hashing it at the planned part boundaries."""
    hasher = _PartHasher(plan.layout.sizes)
    stream = PartStream(
        body,
        plan.head.size,
        limiter=options.rate_limiter,
        on_progress=options.on_progress,
        md5=False,
        describe=f"GET {source.bucket}/{source.key}",
    )

    def write(chunk: bytes) -> None:
        FileTree.write_chunk(pending, chunk)
        hasher.update(chunk)

    async for chunk in stream:
        await asyncio.to_thread(write, chunk)
    if stream.sent != plan.head.size:
        raise IntegrityError(f"{source.key}: read {stream.sent} of {plan.head.size} bytes")
    return hasher


async def _exact_layout(
    src: ObjectReader, source: SourceObject, plan: Plan, pending: PendingFile, written_etag: str
) -> PartLayout:
    """The layout to describe the file with: the planned one, or, when equal parts were a
    wrong guess (the ETags differ), every part's size as the source reports it."""
    if written_etag == plan.head.etag or plan.layout.source != "uniform":
        return plan.layout
    return await resolve_part_layout(
        src, source.bucket, source.key, plan.version_id, source.sse_c_key, head=plan.head
    )


async def write_bytes_to_tree(
    tree: FileTree,
    index: FileIndex,
    space: SpaceKeeper,
    key: str,
    data: bytes,
    *,
    content_type: str,
    migration_tag: str | None = None,
) -> str:
    """Write a small document objmig makes itself (a group manifest) to the file of `key`,
    replacing what is there; returns its ETag (the MD5 of `data`)."""
    tree.segments(key)
    moment = datetime.now(UTC).replace(microsecond=0)
    mtime = int(moment.timestamp()) * 1_000_000_000
    pending = await asyncio.to_thread(space.claim, key, len(data))
    try:
        await asyncio.to_thread(FileTree.write_chunk, pending, data)
        await asyncio.to_thread(tree.finish, pending, mtime_ns=mtime, replace=True)
    except BaseException:
        await asyncio.to_thread(FileTree.abandon, pending)
        raise
    etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
    index.append(
        IndexEntry(
            key=key,
            size=len(data),
            mtime_ns=mtime,
            etag=etag,
            sha256=hashlib.sha256(data).hexdigest(),
            last_modified=moment,
            content=ContentHeaders(content_type=content_type),
            migration=migration_tag,
        )
    )
    await index.sync()
    return etag
