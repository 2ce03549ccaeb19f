"""One side of a migration, connected: the clients that talk to its store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING

from objmig.storage.endpoint import ClientTimeouts, Endpoint
from objmig.storage.features import StoreFeatures
from objmig.storage.s3http import S3HttpClient, open_http_client

# The aiobotocore stubs are a development dependency: import them for type checking only.
if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

# Calls on the SDK client are few and sequential per task; a small pool is plenty.
_SDK_CONNECTIONS = 8


class Store:
    """`http` (`s3http`) for the requests made once per object or part and for plain
    listings; `sdk()` (aioboto3) for the rest: versions, restores, deletes, multipart
    upload listings, manifests in S3. The SDK client is opened on first use (see
    `objmig.storage.sdk` for why)."""

    def __init__(
        self,
        endpoint: Endpoint,
        http: S3HttpClient,
        stack: AsyncExitStack,
        timeouts: ClientTimeouts | None,
    ) -> None:
        self.http = http
        self._endpoint = endpoint
        self._stack = stack
        self._timeouts = timeouts
        self._sdk: S3Client | None = None
        self._opening = asyncio.Lock()

    async def sdk(self) -> S3Client:
        """The SDK client of this store, opened now if this is the first call."""
        async with self._opening:
            if self._sdk is None:
                from objmig.storage.sdk import open_client

                self._sdk = await self._stack.enter_async_context(
                    open_client(self._endpoint, _SDK_CONNECTIONS, self._timeouts)
                )
        return self._sdk

    @property
    def features(self) -> StoreFeatures:
        """What this store lacks, as learned this run."""
        return self.http.features

    @property
    def sdk_opened(self) -> bool:
        """Whether `sdk()` has been called (a run that never needed the SDK has not)."""
        return self._sdk is not None


@asynccontextmanager
async def open_store(
    endpoint: Endpoint,
    max_connections: int = 10,
    timeouts: ClientTimeouts | None = None,
    features: StoreFeatures | None = None,
) -> AsyncIterator[Store]:
    """The store behind `endpoint`; `max_connections` sizes the per-object pool;
    `features` is what it is known to lack (learned by earlier clients of this run)."""
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(
            open_http_client(endpoint, max_connections, timeouts, features)
        )
        yield Store(endpoint, http, stack, timeouts)
