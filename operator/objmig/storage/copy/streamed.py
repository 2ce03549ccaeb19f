"""Streamed copies: the source read by GET and piped into PutObject or UploadParts of the
source's part sizes, within the read-ahead budget, hashing as the bytes pass.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from dataclasses import replace

from objmig.storage.compare import etag_is_content_md5, looks_like_md5
from objmig.storage.copy.model import (
    CopyOptions,
    CopyResult,
    SourceObject,
    TargetExistsError,
    TargetObject,
)
from objmig.storage.copy.multipart import multipart_upload
from objmig.storage.copy.planning import (
    Plan,
    byte_ranges,
    check_source,
    check_tags_writable,
    copy_result,
    create_only_headers,
    etag_proves_copy,
    may_have_tags,
    object_headers,
    plan_for,
    read_tags,
    target_taken,
)
from objmig.storage.errors import IntegrityError, S3ResponseError
from objmig.storage.reader import ObjectReader
from objmig.storage.s3http import S3HttpClient
from objmig.storage.streaming import PartStream
from objmig.storage.types import STREAM_CHUNK, Body, PartLayout, WriteResult, normalise_etag


async def streamed_single(
    src_client: ObjectReader,
    dst_client: S3HttpClient,
    source: SourceObject,
    target: TargetObject,
    options: CopyOptions,
    plan: Plan | None,
) -> CopyResult:
    """GET piped into PutObject. Without a `plan`, the GET's headers make it."""
    digest = hashlib.sha256() if options.compute_sha256 else None
    async with src_client.get(
        source.bucket,
        source.key,
        version_id=plan.version_id if plan else source.version_id,
        # If-Match: a concurrent overwrite makes S3 answer 412 instead of other bytes.
        if_match=plan.head.etag if plan else source.etag,
        sse_c=source.sse_c_key,
    ) as got:
        if plan is None:
            check_source(source, got.head)
            layout = PartLayout((got.head.size,), "single", multipart=False)
            plan = plan_for(source, options, got.head, layout, None)
        if options.preserve_tags and may_have_tags(source.key, got.head):
            plan = replace(plan, tags=await read_tags(src_client, source, plan.version_id))
        check_tags_writable(dst_client, target, options, plan)
        size = plan.head.size
        stream = PartStream(
            got.body,
            size,
            on_chunk=digest.update if digest is not None else None,
            limiter=options.rate_limiter,
            on_progress=options.on_progress,
            md5=not etag_proves_copy(plan, options),
            describe=f"GET s3://{source.bucket}/{source.key}",
        )
        headers = {**object_headers(target, options, plan), **create_only_headers(options)}
        try:
            # Up to one stream chunk, a buffer is no more memory than streaming would use.
            body = await stream.collect() if size <= STREAM_CHUNK else stream
            if digest is not None and isinstance(body, bytes):
                # The whole body is hashed before it is sent: the store checks what it
                # receives against this and keeps it, which proves the copy by itself.
                headers["x-amz-sdk-checksum-algorithm"] = "SHA256"
                headers["x-amz-checksum-sha256"] = base64.b64encode(digest.digest()).decode()
            elif options.content_sha256 is not None:
                # Known before a byte was read (the content was hashed to name it).
                headers["x-amz-sdk-checksum-algorithm"] = "SHA256"
                headers["x-amz-checksum-sha256"] = base64.b64encode(
                    bytes.fromhex(options.content_sha256)
                ).decode()
            written = await dst_client.put(target.bucket, target.key, body, size, headers)
        except S3ResponseError as exc:
            if target_taken(exc, options):
                raise TargetExistsError(
                    f"s3://{target.bucket}/{target.key} exists", plan.head
                ) from None
            raise stream.error or exc from None
        except Exception as exc:
            raise stream.error or exc from None
    if stream.sent != size:
        raise IntegrityError(
            f"PUT s3://{target.bucket}/{target.key}: sent {stream.sent} of {size} bytes"
        )
    _check_part_md5(stream, written, target, options, part=None)
    return copy_result(
        written=written,
        plan=plan,
        options=options,
        server_side=False,
        sha256=digest.hexdigest() if digest is not None else None,
        checksum_algorithm="SHA256" if "x-amz-checksum-sha256" in headers else None,
    )


def _check_part_md5(
    stream: PartStream,
    written: WriteResult,
    target: TargetObject,
    options: CopyOptions,
    part: int | None,
) -> None:
    """Raise IntegrityError when the target's ETag for bytes we sent is not their MD5.

    Only where the final ETag cannot prove the copy (see `etag_proves_copy`): there a
    corrupted part already makes the object's ETag differ from the source's.
    """
    if stream.md5 is None or not options.encryption.etag_is_md5:
        return
    # A bucket default of SSE-KMS makes ETags opaque even when we asked for nothing.
    if not etag_is_content_md5(written.encryption.mode):
        return
    returned = normalise_etag(written.etag)
    if not looks_like_md5(returned):
        return  # a store that does not use MD5 ETags
    if returned != stream.md5.hexdigest():
        which = f" part {part}" if part is not None else ""
        raise IntegrityError(
            f"s3://{target.bucket}/{target.key}{which}: target ETag {returned} is not the MD5 "
            f"{stream.md5.hexdigest()} of the bytes sent"
        )


async def streamed_multipart(
    src_client: ObjectReader,
    dst_client: S3HttpClient,
    source: SourceObject,
    target: TargetObject,
    options: CopyOptions,
    plan: Plan,
) -> CopyResult:
    ranges = byte_ranges(plan.layout.sizes)
    window = max(1, options.part_concurrency)
    read_ahead = options.read_ahead if window > 1 else None
    # One GET reads the object front to back, so its SHA-256 is simply taken as it goes:
    # asked for, or because guessed part sizes may give the copy another ETag, and then
    # the SHA-256 is what proves it without reading the source a second time.
    guessed = plan.layout.source == "guess"
    digest = hashlib.sha256() if options.compute_sha256 or guessed else None
    part_md5 = not etag_proves_copy(plan, options)

    def part_stream(index: int, body: Body) -> PartStream:
        first, last = ranges[index]
        return PartStream(
            body,
            last - first + 1,
            on_chunk=digest.update if digest is not None else None,
            limiter=options.rate_limiter,
            on_progress=options.on_progress,
            md5=part_md5,
            describe=f"GET s3://{source.bucket}/{source.key} part {index + 1}",
        )

    async def upload(
        upload_id: str, index: int, stream: PartStream, body: bytes | PartStream
    ) -> str:
        try:
            written = await dst_client.upload_part(
                target.bucket,
                target.key,
                upload_id,
                index + 1,
                body,
                stream.length,
                sse_c=options.encryption.sse_c_key,
            )
        except Exception as exc:
            raise stream.error or exc from None
        if stream.sent != stream.length:
            raise IntegrityError(
                f"s3://{target.bucket}/{target.key} part {index + 1}: "
                f"sent {stream.sent} of {stream.length} bytes"
            )
        _check_part_md5(stream, written, target, options, part=index + 1)
        return written.etag

    async def upload_held(upload_id: str, index: int, stream: PartStream, data: bytes) -> str:
        try:
            return await upload(upload_id, index, stream, data)
        finally:
            assert read_ahead is not None
            read_ahead.give(stream.length)

    async def copy_parts(upload_id: str) -> list[str]:
        # One GET for the whole object (stores like moto read the whole object for every
        # ranged GET). Up to `window` parts upload at once: while one streams, the parts
        # after it are read into memory as far as the shared read-ahead budget allows;
        # without room, the next part streams straight from the GET when its turn comes.
        etags = [""] * len(ranges)
        uploads: dict[asyncio.Task[str], int] = {}

        async def settle(until: str) -> None:
            done, _ = await asyncio.wait(uploads, return_when=until)
            for task in done:
                etags[uploads.pop(task)] = task.result()

        try:
            whole_object = src_client.get(
                source.bucket,
                source.key,
                version_id=plan.version_id,
                if_match=plan.head.etag,
                byte_range=(ranges[0][0], ranges[-1][1]),
                sse_c=source.sse_c_key,
            )
            async with whole_object as got:
                for index in range(len(ranges)):
                    while len(uploads) >= window:
                        await settle(asyncio.FIRST_COMPLETED)
                    stream = part_stream(index, got.body)
                    if read_ahead is not None and read_ahead.try_take(stream.length):
                        try:
                            data = await stream.collect()
                        except BaseException:
                            read_ahead.give(stream.length)
                            raise
                        task = asyncio.create_task(upload_held(upload_id, index, stream, data))
                        uploads[task] = index
                    else:
                        etags[index] = await upload(upload_id, index, stream, stream)
            while uploads:
                await settle(asyncio.FIRST_EXCEPTION)
        finally:
            for task in uploads:
                task.cancel()
            await asyncio.gather(*uploads, return_exceptions=True)
        return etags

    return await multipart_upload(
        dst_client,
        target,
        options,
        plan,
        copy_parts,
        server_side=False,
        sha256=digest.hexdigest if digest is not None else None,
    )
