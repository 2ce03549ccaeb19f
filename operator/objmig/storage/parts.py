"""Part layouts: the part sizes of a multipart object, so that a copy cut the same way
gets the same ETag.

HEAD ?partNumber=n first, GetObjectAttributes(ObjectParts) second, and an equal-parts
guess from the ETag's part count last (see docs/storage.md, "HEAD, part layouts").
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import TYPE_CHECKING

from objmig.storage.errors import S3ResponseError
from objmig.storage.features import Aspect
from objmig.storage.types import HeadResult, MiB, PartLayout, multipart_part_count

if TYPE_CHECKING:
    from objmig.storage.reader import ObjectReader

log = logging.getLogger(__name__)


async def resolve_part_layout(
    client: ObjectReader,
    bucket: str,
    key: str,
    version_id: str | None = None,
    sse_c: bytes | None = None,
    *,
    head: HeadResult | None = None,
    concurrency: int = 8,
    part_heads_refused: str | None = None,
) -> PartLayout:
    """Find the part sizes of an object so a copy can reproduce them (and its ETag).

    HEAD with `PartNumber` is the primary way: AWS, MinIO and moto answer it with the
    part's Content-Length and `x-amz-mp-parts-count`. GetObjectAttributes(ObjectParts) is
    the fallback for stores without it (AWS only lists part sizes there for objects
    uploaded with additional checksums), and an equal-parts guess the last resort.
    `part_heads_refused`: the store's answer to a HEAD with `partNumber` the caller has
    already had (not asked again).
    """
    if head is None:
        head = await client.head(bucket, key, version_id=version_id, sse_c=sse_c)
    count = multipart_part_count(head.etag)
    if count is None:
        return PartLayout((head.size,), "single", multipart=False)
    if client.features.lacks(Aspect.PART_SIZES):
        return guessed_layout(head.size, count)
    answers: list[str] = []

    first: HeadResult | None = None
    if part_heads_refused is not None:
        answers.append(part_heads_refused)
    else:
        try:
            first = await client.head(
                bucket, key, version_id=version_id, part_number=1, sse_c=sse_c
            )
        except S3ResponseError as exc:
            if not parts_unsupported(exc):
                raise
            answers.append(f"HEAD ?partNumber: {exc.code}")
    if first is not None and not first.parts_count:
        answers.append("HEAD ?partNumber: no part count")
    if first is not None and first.parts_count:
        sizes = [first.size]
        semaphore = asyncio.Semaphore(max(1, concurrency))

        async def part_size(number: int) -> int:
            async with semaphore:
                part = await client.head(
                    bucket, key, version_id=version_id, part_number=number, sse_c=sse_c
                )
                return part.size

        sizes += await asyncio.gather(*(part_size(n) for n in range(2, first.parts_count + 1)))
        if sum(sizes) == head.size:
            return PartLayout(tuple(sizes), "head", multipart=True)
        log.warning(
            "part sizes of s3://%s/%s from HEAD add up to %d, not %d; trying other ways",
            bucket,
            key,
            sum(sizes),
            head.size,
        )

    try:
        attributes = await client.object_part_sizes(bucket, key, version_id, sse_c)
    except S3ResponseError as exc:
        if not parts_unsupported(exc):
            raise
        log.debug(
            "GetObjectAttributes(ObjectParts) unavailable for s3://%s/%s: %s", bucket, key, exc
        )
        answers.append(f"GetObjectAttributes: {exc.code}")
        attributes = None
    if attributes and sum(attributes) == head.size:
        return PartLayout(tuple(attributes), "attributes", multipart=True)

    if answers:
        # Asked both ways and refused both: every multipart object of this store would be.
        client.features.learn_missing(Aspect.PART_SIZES, "; ".join(answers))
    log.info(
        "s3://%s/%s: the store reports no part sizes; assuming %d equal parts", bucket, key, count
    )
    return guessed_layout(head.size, count)


def guessed_layout(size: int, count: int) -> PartLayout:
    """`count` equal parts (see `guess_part_sizes`): the layout of an object whose store
    tells no part sizes. Its copy's ETag may differ from the source's."""
    return PartLayout(tuple(guess_part_sizes(size, count)), "guess", multipart=True)


async def part_layout(
    client: ObjectReader,
    bucket: str,
    key: str,
    version_id: str | None = None,
    sse_c: bytes | None = None,
) -> list[int]:
    """Part sizes of an object; a single-part object gives `[size]`. See `resolve_part_layout`."""
    return list((await resolve_part_layout(client, bucket, key, version_id, sse_c)).sizes)


# Part sizes popular uploaders use (aws-cli and boto3 8 MiB, SDK minimums of 5 MiB, rclone
# and s5cmd defaults, large-object settings), tried first when guessing a layout.
_COMMON_PART_SIZES_MIB = (8, 5, 16, 10, 15, 32, 50, 64, 100, 128, 256, 512, 1024)


def parts_unsupported(exc: S3ResponseError) -> bool:
    """A store's way of saying "I do not implement this parameter" (not a transient error)."""
    return exc.status in (400, 405, 416, 501) or exc.code in ("NotImplemented", "InvalidArgument")


def guess_part_sizes(size: int, count: int) -> list[int]:
    """Equal parts, the last one shorter, that add up to `size` in exactly `count` parts.

    Several part sizes usually fit; the guess prefers the popular ones, then the smallest
    whole number of MiB, then the exact ceiling division (odd uploaders).
    """
    if count <= 1:
        return [size]

    def fits(part: int) -> bool:
        return part > 0 and math.ceil(size / part) == count

    part = next((p * MiB for p in _COMMON_PART_SIZES_MIB if fits(p * MiB)), 0)
    if not part:
        part = math.ceil(math.ceil(size / count) / MiB) * MiB
        if not fits(part):
            part = math.ceil(size / count)
    sizes = [part] * (count - 1)
    sizes.append(size - part * (count - 1))
    if sizes[-1] <= 0:
        # Only for inconsistent input (more parts than bytes); keep the sum right anyway.
        part = size // count
        sizes = [part] * (count - 1) + [size - part * (count - 1)]
    return sizes
