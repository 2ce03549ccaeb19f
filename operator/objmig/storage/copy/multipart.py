"""The multipart frame both paths share: create the upload, run its parts with bounded
concurrency, complete it, and abort it on any failure or cancellation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

from objmig.storage.compare import etag_is_content_md5, multipart_etag
from objmig.storage.copy.model import (
    ABORT_TIMEOUT,
    CopyOptions,
    CopyResult,
    TargetExistsError,
    TargetObject,
)
from objmig.storage.copy.planning import (
    Plan,
    copy_result,
    create_only_headers,
    object_headers,
    target_taken,
)
from objmig.storage.errors import S3ResponseError
from objmig.storage.s3http import S3HttpClient
from objmig.storage.types import WriteResult, multipart_part_count

log = logging.getLogger(__name__)
T = TypeVar("T")


async def multipart_upload(
    client: S3HttpClient,
    target: TargetObject,
    options: CopyOptions,
    plan: Plan,
    write_parts: Callable[[str], Awaitable[list[str]]],
    *,
    server_side: bool,
    sha256: Callable[[], str] | None = None,
) -> CopyResult:
    """Create an upload, run `write_parts(upload_id)`, which returns the ETags of every
    part in order, complete it; abort on any failure (cancellation included) before
    re-raising."""
    upload_id = await client.create_multipart_upload(
        target.bucket, target.key, object_headers(target, options, plan)
    )
    try:
        if options.on_upload_started is not None:
            await options.on_upload_started(upload_id)
        etags = await write_parts(upload_id)
        try:
            written = await client.complete_multipart_upload(
                target.bucket,
                target.key,
                upload_id,
                etags,
                {**options.encryption.part_headers(), **create_only_headers(options)},
            )
        except S3ResponseError as exc:
            if target_taken(exc, options):
                raise TargetExistsError(
                    f"s3://{target.bucket}/{target.key} exists", plan.head
                ) from None
            if exc.code != "NoSuchUpload":
                raise
            # The upload is gone: a first try whose answer was lost may have completed it
            # (the retry, ours or the connection pool's, is what says NoSuchUpload).
            done = await completed_already(client, target, options, plan, etags)
            if done is None:
                raise
            written = done
    except BaseException:
        if await abort_quietly(client, target, upload_id):
            await _ended(options, upload_id)
        raise
    await _ended(options, upload_id)
    return copy_result(
        written=written,
        plan=plan,
        options=options,
        server_side=server_side,
        sha256=sha256() if sha256 is not None else None,
        upload_id=upload_id,
    )


async def completed_already(
    client: S3HttpClient,
    target: TargetObject,
    options: CopyOptions,
    plan: Plan,
    etags: list[str],
) -> WriteResult | None:
    """The target as this upload completed it, or None when it is anything else.

    Exactly what was meant: the size of the parts, and the multipart ETag these parts make
    (the MD5 of their MD5s); where encryption makes ETags opaque, their number, and
    verification then proves the bytes by a checksum.
    """
    try:
        head = await client.head(target.bucket, target.key, sse_c=options.encryption.sse_c_key)
    except S3ResponseError as exc:
        if exc.status == 404:
            return None
        raise
    if head.size != sum(plan.layout.sizes):
        return None
    expected = multipart_etag(etags)
    if expected is not None and etag_is_content_md5(head.encryption.mode):
        if head.etag != expected:
            return None
    elif multipart_part_count(head.etag) != len(etags):
        return None
    log.info(
        "s3://%s/%s: a lost answer had completed the upload already", target.bucket, target.key
    )
    return WriteResult(head.etag, head.version_id, head.encryption)


async def _ended(options: CopyOptions, upload_id: str) -> None:
    """Tell the caller an upload is over (completed or aborted), shielded from a second
    cancellation like the abort itself."""
    if options.on_upload_ended is not None:
        await asyncio.shield(asyncio.ensure_future(options.on_upload_ended(upload_id)))


async def abort_quietly(client: S3HttpClient, target: TargetObject, upload_id: str) -> bool:
    """Abort an upload after a failure; never raise over the original error. Returns
    whether the upload is gone (aborted, or no longer known to the store).

    Shielded, so a second cancellation (e.g. a worker shutting down) does not leave the
    upload behind; time-limited, so a dead store cannot hang the error path.
    """

    async def abort() -> bool:
        try:
            await asyncio.wait_for(
                client.abort_multipart_upload(target.bucket, target.key, upload_id),
                ABORT_TIMEOUT,
            )
        except S3ResponseError as exc:
            if exc.code == "NoSuchUpload":
                return True
            log.warning(
                "could not abort upload %s of s3://%s/%s: %s",
                upload_id,
                target.bucket,
                target.key,
                exc,
            )
            return False
        except Exception as exc:
            log.warning(
                "could not abort upload %s of s3://%s/%s: %r",
                upload_id,
                target.bucket,
                target.key,
                exc,
            )
            return False
        return True

    # If we are cancelled again while waiting, the shielded abort still runs to completion
    # in the background and the cancellation propagates.
    return await asyncio.shield(asyncio.ensure_future(abort()))


async def run_bounded(count: int, concurrency: int, work: Callable[[int], Awaitable[T]]) -> list[T]:
    """Run `work(0..count-1)` with at most `concurrency` in flight; results in index order.

    Indexes are handed out in order. The first failure
    cancels the rest and is raised as itself (not wrapped in an ExceptionGroup), so
    `classify` sees the real cause.
    """
    results: list[T | None] = [None] * count
    indexes = iter(range(count))

    async def worker() -> None:
        for index in indexes:
            results[index] = await work(index)

    tasks = [asyncio.ensure_future(worker()) for _ in range(min(max(1, concurrency), count))]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return cast(list[T], results)
