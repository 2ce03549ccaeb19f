"""The AWS SDK's S3 client (aioboto3), for the calls that are rare per object.

Listings of versions, restores, deletes, multipart upload listings and manifests read
from S3 go through here; the requests made once per object or part go through `s3http`.
Nothing imports this module at start-up: `store.Store.sdk` opens a client on first use,
because loading botocore and aiohttp costs about a third of a second of CPU, which every
`objmig run` and every worker pod would otherwise pay for calls most migrations never make.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import aioboto3
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from botocore.loaders import Loader, create_loader

from objmig.storage.endpoint import (
    DEFAULT_REGION,
    LOOPBACK,
    ClientTimeouts,
    Endpoint,
    loopback_name,
)
from objmig.storage.tls import sdk_verify

# The aiobotocore stubs are a development dependency: import them for type checking only.
if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client


def client_config(
    endpoint: Endpoint, max_connections: int, timeouts: ClientTimeouts | None = None
) -> AioConfig:
    """The botocore configuration every objmig S3 client uses (see `open_client`)."""
    timeouts = timeouts or ClientTimeouts()
    return AioConfig(
        connector_args={"resolver": _LoopbackResolver()},
        region_name=endpoint.region or DEFAULT_REGION,
        # One pooled connection per request that can be in flight at once; more would
        # only idle, fewer would queue requests inside aiohttp where our timeouts and
        # progress accounting cannot see them.
        max_pool_connections=max(1, max_connections),
        connect_timeout=timeouts.connect,
        read_timeout=timeouts.read,
        # As `resending.RequestRetry`: a couple of quick tries absorb transient faults, what
        # persists is the engine's (attempt counts, backoff, the failure budget). Every
        # call made here is harmless to repeat after a lost answer (listings, restores
        # - RestoreAlreadyInProgress is success -, deletes, aborts).
        retries={"mode": "standard", "total_max_attempts": 3},
        # Since botocore 1.36 the SDK adds CRC32 checksums (as aws-chunked trailers) to every
        # upload and validates them on download. Many S3-compatible stores (older MinIO,
        # Ceph RGW, R2, Wasabi) and moto reject or mishandle trailers, and our integrity
        # story is ETags (MD5 per part) plus an optional SHA-256 of the whole object, so
        # checksums are sent and checked only where an operation requires them.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={
            "addressing_style": endpoint.addressing_style,
            # Copies upload through `s3http`, unsigned payloads too; the few uploads made
            # here (demo seeding) need no second pass over their body to sign it.
            "payload_signing_enabled": False,
        },
    )


class _LoopbackResolver(AbstractResolver):
    """aiohttp's resolver, except that names under `.localhost` are the loopback interface
    (RFC 6761; see `endpoint.loopback_name`), as they are for `s3http`."""

    def __init__(self) -> None:
        self._default: AbstractResolver | None = None

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if loopback_name(host):
            return [
                ResolveResult(
                    hostname=host,
                    host=LOOPBACK,
                    port=port,
                    family=socket.AF_INET,
                    proto=0,
                    flags=socket.AI_NUMERICHOST,
                )
            ]
        if self._default is None:
            # Made on first use: the default resolver binds the running event loop.
            self._default = DefaultResolver()
        return await self._default.resolve(host, port, family)

    async def close(self) -> None:
        if self._default is not None:
            await self._default.close()


@functools.cache
def _shared_loader() -> Loader:
    return create_loader()


@asynccontextmanager
async def open_client(
    endpoint: Endpoint,
    max_connections: int = 10,
    timeouts: ClientTimeouts | None = None,
) -> AsyncIterator[S3Client]:
    """Open an aioboto3 S3 client for `endpoint` whose connection pool fits `max_connections`.

    Size `max_connections` to the requests this client has in flight at once; the
    per-object requests of a copy go through `s3http.S3HttpClient` and its own pool.
    """
    creds = endpoint.credentials
    core = AioSession()
    # Every new botocore session parses the S3 model and the endpoint rules from JSON
    # again (a tenth of a second of CPU, several times per run); the parsed data is
    # shared instead. Credentials and settings stay per session.
    core.register_component("data_loader", _shared_loader())
    session = aioboto3.Session(
        botocore_session=core,
        aws_access_key_id=creds.access_key_id if creds else None,
        aws_secret_access_key=creds.secret_access_key if creds else None,
        aws_session_token=creds.session_token if creds else None,
        region_name=endpoint.region or DEFAULT_REGION,
    )
    with sdk_verify(endpoint) as verify:
        async with session.client(
            "s3",
            endpoint_url=endpoint.url or None,
            config=client_config(endpoint, max_connections, timeouts),
            verify=verify,
        ) as client:
            yield client
