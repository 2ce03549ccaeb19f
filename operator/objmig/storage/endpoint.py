"""Where a bucket lives and how to talk to it: endpoints, credentials and S3 clients.

The storage layer knows nothing of the CRD models; the engine maps `spec.source` /
`spec.target` onto these small frozen dataclasses.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import aioboto3
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.loaders import Loader, create_loader

# The aiobotocore stubs are a development dependency: import them for type checking only.
if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

AddressingStyle = Literal["path", "virtual"]

# Region used to sign requests for stores that do not care about regions (MinIO, Ceph,
# moto). AWS itself needs the bucket's real region, which the spec provides.
DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class Credentials:
    """Static S3 credentials. `repr`/`str` never show the secret or the session token."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        # The access key id is not secret (it shows up in S3 access logs and error
        # messages), and operators need it to tell credentials apart when debugging.
        token = ", session_token=***" if self.session_token else ""
        return f"Credentials(access_key_id={self.access_key_id!r}, secret_access_key=***{token})"

    __str__ = __repr__


@dataclass(frozen=True)
class Endpoint:
    """An S3-compatible service as seen by one side of a migration.

    `url` None means AWS (the SDK picks the regional endpoint); `credentials` None means
    the SDK's default chain (environment, profile, IRSA / pod identity, instance role).
    """

    url: str | None = None
    region: str | None = None
    addressing_style: AddressingStyle = "path"
    credentials: Credentials | None = None
    # Skip TLS verification: for self-signed test stores only.
    verify_tls: bool = True

    def __repr__(self) -> str:
        return (
            f"Endpoint(url={self.url!r}, region={self.region!r}, "
            f"addressing_style={self.addressing_style!r}, credentials={self.credentials!r})"
        )

    __str__ = __repr__

    def with_credentials(self, credentials: Credentials | None) -> Endpoint:
        """A copy of this endpoint using other credentials."""
        return dataclasses.replace(self, credentials=credentials)


def _normalise_url(url: str | None) -> str | None:
    if not url:
        return None
    return url.rstrip("/").lower()


def same_store(a: Endpoint, b: Endpoint) -> bool:
    """True when one client can read `a` and write `b`, so server-side copy is possible.

    That needs the same service (URL and region) and the same identity. Two different
    credentials might both be allowed on both buckets, but we cannot know that without
    trying, and a server-side copy runs with the target's identity only; `copy.mode:
    serverSide` lets the user assert it anyway.
    """
    return (
        _normalise_url(a.url) == _normalise_url(b.url)
        and (a.region or DEFAULT_REGION) == (b.region or DEFAULT_REGION)
        and a.credentials == b.credentials
    )


@dataclass(frozen=True)
class ClientTimeouts:
    """Socket timeouts, in seconds.

    The read timeout is generous because a server-side UploadPartCopy of a multi-GiB part
    or a CompleteMultipartUpload of thousands of parts may keep the socket silent for a
    long time before answering.
    """

    connect: float = 10.0
    read: float = 300.0


def client_config(
    endpoint: Endpoint, max_connections: int, timeouts: ClientTimeouts | None = None
) -> AioConfig:
    """The botocore configuration every objmig S3 client uses (see `open_client`)."""
    timeouts = timeouts or ClientTimeouts()
    return AioConfig(
        region_name=endpoint.region or DEFAULT_REGION,
        # One pooled connection per request that can be in flight at once; more would
        # only idle, fewer would queue requests inside aiohttp where our timeouts and
        # progress accounting cannot see them.
        max_pool_connections=max(1, max_connections),
        connect_timeout=timeouts.connect,
        read_timeout=timeouts.read,
        # The engine owns retries (attempt counts, capped jittered backoff, per-object
        # timeouts and the failure budget). Letting botocore retry as well would multiply
        # attempts and hide throttling from our accounting, so botocore tries once.
        retries={"mode": "standard", "total_max_attempts": 1},
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
    async with session.client(
        "s3",
        endpoint_url=endpoint.url or None,
        config=client_config(endpoint, max_connections, timeouts),
        verify=endpoint.verify_tls,
    ) as client:
        yield client
