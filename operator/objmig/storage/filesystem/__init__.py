"""A directory tree (a laptop's directory, a volume a worker pod mounts) as a store.

Source or target of a migration, beside S3 buckets and behind an interface of its own: the
S3 layer is not touched by it, and the copy reads a tree through the same `ObjectReader`
calls it makes of a bucket.

Modules: `keys` (which keys can be paths), `tree` (paths beneath a root opened
descriptor by descriptor, atomic writes, listing in S3's key order, temporaries),
`index` (what a file cannot hold: ETag, SHA-256, parts, metadata, headers, tags),
`client` (reads answered as a bucket's), `write` (an object copied into a tree, with the
free space kept), `store` (`FileStore`, the side as the engine uses it).
"""

from objmig.storage.filesystem.client import FileClient
from objmig.storage.filesystem.index import FileIndex, IndexEntry
from objmig.storage.filesystem.keys import UnsafeKeyError, key_segments
from objmig.storage.filesystem.store import FileStore, open_file_store
from objmig.storage.filesystem.tree import (
    FileExistsAtKey,
    FilesystemUnavailable,
    FileTree,
    PathConflictError,
)
from objmig.storage.filesystem.write import TargetSpaceLowError

__all__ = [
    "FileClient",
    "FileExistsAtKey",
    "FileIndex",
    "FileStore",
    "FileTree",
    "FilesystemUnavailable",
    "IndexEntry",
    "PathConflictError",
    "TargetSpaceLowError",
    "UnsafeKeyError",
    "key_segments",
    "open_file_store",
]
