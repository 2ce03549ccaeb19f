"""The SHA-256 of an object's bytes, read whole: what verification falls back on when no
store keeps a checksum both sides share."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from objmig.storage.errors import TruncatedBodyError
from objmig.storage.types import STREAM_CHUNK

if TYPE_CHECKING:
    from objmig.storage.reader import ObjectReader


async def object_sha256(
    client: ObjectReader,
    bucket: str,
    key: str,
    version_id: str | None = None,
    sse_c: bytes | None = None,
    *,
    if_match: str | None = None,
) -> tuple[str, int]:
    """Stream an object and return (SHA-256 hex digest, size); memory stays one chunk.

    `if_match` (an ETag) makes S3 refuse with 412 if the object changed since it was seen.
    """
    digest = hashlib.sha256()
    size = 0
    async with client.get(
        bucket, key, version_id=version_id, if_match=if_match, sse_c=sse_c
    ) as response:
        while chunk := await response.body.read(STREAM_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    if size != response.content_length:
        raise TruncatedBodyError(
            f"GET s3://{bucket}/{key}: body ended after {size} of {response.content_length} bytes"
        )
    return digest.hexdigest(), size
