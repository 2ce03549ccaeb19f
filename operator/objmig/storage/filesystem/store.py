"""`FileStore`: one side of a migration that is a directory tree (or a mounted volume)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from objmig.storage.copy.model import CopyOptions, CopyResult, SourceObject
from objmig.storage.errors import ErrorKind, StorageError
from objmig.storage.features import StoreFeatures
from objmig.storage.filesystem.client import FileClient
from objmig.storage.filesystem.index import FileIndex, tombstone
from objmig.storage.filesystem.tree import FileTree
from objmig.storage.filesystem.write import SpaceKeeper, write_bytes_to_tree, write_to_tree
from objmig.storage.reader import ObjectReader

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client


class FilesystemUnsupported(StorageError):
    """An S3 operation asked of a directory (a spec the API refuses never gets here)."""

    kind: ErrorKind = "permanent"
    code = "FilesystemUnsupported"
    is_config_error = True


class FileStore:
    """A tree's reads, writes and deletions.

    `http` answers the per-object reads as a bucket's client does (it is named like
    `Store.http` so that the steps that read a source or prove a copy read both alike);
    writes go through `write`, which keeps `min_free` bytes free on the filesystem.
    """

    def __init__(self, root: str, *, writable: bool, min_free: int = 0) -> None:
        self.tree = FileTree(root)
        self.writable = writable
        self.index = FileIndex(self.tree.index_directory)
        self.http = FileClient(self.tree, self.index)
        self.space = SpaceKeeper(self.tree, min_free)

    @property
    def root(self) -> str:
        return self.tree.root

    @property
    def features(self) -> StoreFeatures:
        """What a tree lacks of S3: nothing a copy needs (the index holds the rest)."""
        return self.http.features

    async def open(self) -> None:
        await asyncio.to_thread(self.tree.open, writable=self.writable)

    async def close(self) -> None:
        self.index.close()
        self.tree.close()

    async def write(
        self, src: ObjectReader, source: SourceObject, key: str, options: CopyOptions
    ) -> CopyResult:
        """Copy `source` (read through `src`) to the file of `key`."""
        return await write_to_tree(src, self.tree, self.index, self.space, source, key, options)

    async def put(
        self, key: str, data: bytes, *, content_type: str, migration_tag: str | None = None
    ) -> str:
        """Write a small document of objmig's own (a manifest) to the file of `key`."""
        return await write_bytes_to_tree(
            self.tree,
            self.index,
            self.space,
            key,
            data,
            content_type=content_type,
            migration_tag=migration_tag,
        )

    async def keys(self, prefix: str = "") -> AsyncIterator[list[str]]:
        """The keys of every file under `prefix` in key order, a page at a time, without
        describing them (the audit compares names only)."""
        walk = self.tree.walk(prefix)

        def page() -> list[str]:
            found = []
            for key, _ in walk:
                found.append(key)
                if len(found) == 1000:
                    break
            return found

        try:
            while batch := await asyncio.to_thread(page):
                yield batch
        finally:
            walk.close()

    async def delete(self, key: str) -> bool:
        """Delete the file of `key` and record it in the index; False when there was none."""
        removed = await asyncio.to_thread(self.tree.unlink, key)
        if removed:
            self.index.append(tombstone(key))
            await self.index.sync()
        return removed

    async def sdk(self) -> S3Client:
        """A tree has no S3 API (restores, versioned listings, bucket listings)."""
        raise FilesystemUnsupported(f"{self.root} is a directory, not a bucket")

    @property
    def sdk_opened(self) -> bool:
        return False

    async def free_space(self) -> tuple[int, int]:
        """(free, total) bytes of the tree's filesystem."""
        return await asyncio.to_thread(self.tree.space)

    async def sweep(self) -> int:
        """Remove temporaries whose writers are gone, in the whole tree."""
        return await asyncio.to_thread(self.tree.sweep)


@asynccontextmanager
async def open_file_store(
    root: str, *, writable: bool, min_free: int = 0
) -> AsyncIterator[FileStore]:
    """A tree opened as a store; a writable one is created when missing."""
    store = FileStore(root, writable=writable, min_free=min_free)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
