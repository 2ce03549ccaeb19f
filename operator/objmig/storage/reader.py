"""`ObjectReader`: the reads a copy makes of its source, whatever the source is.

`S3HttpClient` is one; `objmig.storage.filesystem.FileClient` (a directory tree answered
as a bucket) is the other. The copy (`objmig.storage.copy`), part layouts and whole-object
digests take a reader, so a tree is copied to S3 by the same code as a bucket.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol

from objmig.storage.features import StoreFeatures
from objmig.storage.types import GetResult, HeadResult


class ObjectReader(Protocol):
    """The source side of a copy: HEAD, GET, tags and part sizes of one object."""

    #: What the store lacks, as learned this run (a tree lacks nothing).
    features: StoreFeatures

    async def head(
        self,
        bucket: str,
        key: str,
        *,
        version_id: str | None = None,
        part_number: int | None = None,
        sse_c: bytes | None = None,
        checksums: bool = False,
    ) -> HeadResult: ...

    def get(
        self,
        bucket: str,
        key: str,
        *,
        version_id: str | None = None,
        if_match: str | None = None,
        byte_range: tuple[int, int] | None = None,
        sse_c: bytes | None = None,
    ) -> AbstractAsyncContextManager[GetResult]: ...

    async def get_tags(
        self, bucket: str, key: str, version_id: str | None = None
    ) -> dict[str, str]: ...

    async def object_part_sizes(
        self, bucket: str, key: str, version_id: str | None = None, sse_c: bytes | None = None
    ) -> list[int] | None: ...
