"""Where a bucket lives and who is asking: endpoints, credentials, timeouts.

The storage layer knows nothing of the CRD models; the engine maps `spec.source` /
`spec.target` onto these small frozen dataclasses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

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
    `ca_bundle` is the PEM text of the certificate authorities an HTTPS endpoint's
    certificate must chain to (a private CA); None trusts the system's store. Both clients
    of a store take it from here (see `objmig.storage.tls`).
    """

    url: str | None = None
    region: str | None = None
    addressing_style: AddressingStyle = "path"
    credentials: Credentials | None = None
    # Skip TLS verification: for self-signed test stores only.
    verify_tls: bool = True
    ca_bundle: str | None = None

    def __repr__(self) -> str:
        return (
            f"Endpoint(url={self.url!r}, region={self.region!r}, "
            f"addressing_style={self.addressing_style!r}, credentials={self.credentials!r}"
            + (", ca_bundle=<PEM>" if self.ca_bundle else "")
            + ")"
        )

    __str__ = __repr__

    def with_credentials(self, credentials: Credentials | None) -> Endpoint:
        """A copy of this endpoint using other credentials."""
        return dataclasses.replace(self, credentials=credentials)


#: Where names under `.localhost` lead (RFC 6761).
LOOPBACK = "127.0.0.1"


def loopback_name(name: str) -> bool:
    """Whether `name` lies under `.localhost`, which RFC 6761 reserves for the loopback
    interface: a virtual-hosted bucket of a store on this machine (`bucket.localhost`).

    Resolvers without nss-myhostname know only `localhost` itself, so both S3 clients
    answer these names themselves, as curl does.
    """
    return name.rstrip(".").lower().endswith(".localhost")


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
