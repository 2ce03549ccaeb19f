"""One side of a migration, connected: the two clients that talk to its store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from objmig.storage.endpoint import ClientTimeouts, Endpoint, open_client
from objmig.storage.s3http import S3HttpClient, open_http_client

# The aiobotocore stubs are a development dependency: import them for type checking only.
if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client


@dataclass(frozen=True)
class Store:
    """`api` (aioboto3) for listings, restores, deletes and other bucket-level calls;
    `objects` (`s3http`) for the requests made once per object or part."""

    api: S3Client
    objects: S3HttpClient


@asynccontextmanager
async def open_store(
    endpoint: Endpoint, max_connections: int = 10, timeouts: ClientTimeouts | None = None
) -> AsyncIterator[Store]:
    """Both clients of `endpoint`; `max_connections` sizes the per-object pool."""
    async with AsyncExitStack() as stack:
        # Bucket-level calls are few and sequential per task; a small pool is plenty.
        api = await stack.enter_async_context(open_client(endpoint, 8, timeouts))
        objects = await stack.enter_async_context(
            open_http_client(endpoint, max_connections, timeouts)
        )
        yield Store(api, objects)
