"""AWS Signature Version 4 for S3 requests, and the credentials it signs with.

The payload is never signed (`UNSIGNED_PAYLOAD`): bodies stream from a source GET and
cannot be hashed before they are sent; each part's MD5 is compared with the ETag the store
returns instead (see `copy/streamed.py`). `tests/unit/test_s3http_signing.py` checks the
signatures against botocore's for the same requests at the same moment.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from objmig.storage.endpoint import Credentials, Endpoint
from objmig.storage.errors import S3ResponseError

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
# Characters S3 wants left alone in a canonical URI / query (RFC 3986 unreserved).
_UNRESERVED = "-_.~"


def quote_s3(value: str, safe: str = "") -> str:
    """Percent-encode as a canonical URI or query wants it (`safe`: more to leave alone)."""
    return quote(value, safe=_UNRESERVED + safe)


def canonical_query(query: Mapping[str, str]) -> str:
    """The query string as sent and as signed: encoded names and values, sorted by name."""
    return "&".join(f"{quote_s3(name)}={quote_s3(value)}" for name, value in sorted(query.items()))


def _canonical_value(value: str) -> str:
    return " ".join(value.split())


class SigV4Signer:
    """Signs the requests of one region with one identity's current credentials."""

    def __init__(self, region: str, credentials: CredentialSource) -> None:
        self._region = region
        self._credentials = credentials
        self._signing_keys: dict[tuple[str, str], bytes] = {}

    async def sign(
        self,
        method: str,
        host: str,
        path: str,
        query: str,
        headers: dict[str, str],
        *,
        now: time.struct_time | None = None,
    ) -> None:
        """Add SigV4 headers (`x-amz-date`, `authorization`, ...) to `headers` in place.

        `now` (UTC) is for tests comparing signatures; requests are signed at the present.
        """
        creds = await self._credentials.current()
        now = now or time.gmtime()
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", now)
        day = amz_date[:8]
        headers["host"] = host
        headers["x-amz-date"] = amz_date
        headers["x-amz-content-sha256"] = UNSIGNED_PAYLOAD
        if creds.session_token:
            headers["x-amz-security-token"] = creds.session_token
        names = sorted(headers)
        canonical_headers = "".join(f"{name}:{_canonical_value(headers[name])}\n" for name in names)
        signed_headers = ";".join(names)
        canonical_request = (
            f"{method}\n{path}\n{query}\n{canonical_headers}\n{signed_headers}\n{UNSIGNED_PAYLOAD}"
        )
        scope = f"{day}/{self._region}/s3/aws4_request"
        string_to_sign = (
            f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n"
            + hashlib.sha256(canonical_request.encode()).hexdigest()
        )
        signature = hmac.new(
            self._signing_key(creds.secret_access_key, day), string_to_sign.encode(), hashlib.sha256
        ).hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={creds.access_key_id}/{scope}, "
            f"SignedHeaders={signed_headers}, Signature={signature}"
        )

    def _signing_key(self, secret: str, day: str) -> bytes:
        cached = self._signing_keys.get((secret, day))
        if cached is not None:
            return cached
        key = hmac.new(f"AWS4{secret}".encode(), day.encode(), hashlib.sha256).digest()
        for part in (self._region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        # One key per day and secret; old days are dropped so rotation cannot grow this.
        self._signing_keys = {(secret, day): key}
        return key


class CredentialSource:
    """Static credentials from the endpoint, or botocore's default chain (environment,
    profile, web identity, instance role), refreshed by botocore when they expire."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._static = endpoint.credentials
        self._chain: Any = None

    async def current(self) -> Credentials:
        if self._static is not None:
            return self._static
        if self._chain is None:
            # The SDK resolves the default chain (environment, profile, web identity,
            # instance role): loaded now, only for endpoints without explicit credentials.
            from aiobotocore.session import get_session

            self._chain = await get_session().get_credentials()
            if self._chain is None:
                raise S3ResponseError(
                    "Credentials", 0, "NoCredentials", "no credentials found in the default chain"
                )
        frozen = await self._chain.get_frozen_credentials()
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token)
