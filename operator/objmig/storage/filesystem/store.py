"""`FileStore`: one side of a migration that is a directory tree (or a mounted volume)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from objmig.storage.copy.model import CopyOptions, CopyResult, SourceObject
from objmig.storage.filesystem.client import FileClient
from objmig.storage.filesystem.index import FileIndex, tombstone
from objmig.storage.filesystem.tree import FileTree
from objmig.storage.filesystem.write import SpaceKeeper, write_to_tree
from objmig.storage.reader import ObjectReader


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

    async def delete(self, key: str) -> bool:
        """Delete the file of `key` and record it in the index; False when there was none."""
        removed = await asyncio.to_thread(self.tree.unlink, key)
        if removed:
            self.index.append(tombstone(key))
            await self.index.sync()
        return removed

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
