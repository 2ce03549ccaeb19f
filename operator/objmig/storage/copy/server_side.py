"""Server-side copies: CopyObject for single-part objects, one UploadPartCopy per source
part (the same byte ranges) for multipart ones, every read pinned to the scanned ETag.
"""

from __future__ import annotations

from collections.abc import Awaitable

from objmig.storage.copy.model import (
    CopyOptions,
    CopyResult,
    SourceObject,
    TargetExistsError,
    TargetObject,
)
from objmig.storage.copy.multipart import multipart_upload, run_bounded
from objmig.storage.copy.planning import (
    Plan,
    byte_ranges,
    copy_result,
    create_only_headers,
    target_taken,
)
from objmig.storage.errors import S3ResponseError
from objmig.storage.s3http import S3HttpClient
from objmig.storage.s3wire import content_headers, metadata_headers, sse_c_headers


def _copy_conditions(source: SourceObject, plan: Plan) -> dict[str, str]:
    """Source conditions and keys of CopyObject / UploadPartCopy."""
    return {
        "x-amz-copy-source-if-match": f'"{plan.head.etag}"',
        **sse_c_headers(source.sse_c_key, copy_source=True),
    }


async def server_side_single(
    client: S3HttpClient,
    source: SourceObject,
    target: TargetObject,
    options: CopyOptions,
    plan: Plan,
) -> CopyResult:
    headers = {**_copy_conditions(source, plan), **options.encryption.object_headers()}
    if options.storage_class:
        headers["x-amz-storage-class"] = options.storage_class
    if plan.metadata_changed:
        # REPLACE drops everything not given, so content headers go along explicitly.
        headers["x-amz-metadata-directive"] = "REPLACE"
        headers.update(metadata_headers(plan.metadata))
        headers.update(content_headers(plan.head.content))
    else:
        headers["x-amz-metadata-directive"] = "COPY"
    # REPLACE without x-amz-tagging writes the copy without tags.
    headers["x-amz-tagging-directive"] = "COPY" if options.preserve_tags else "REPLACE"
    if options.checksum_algorithm:
        # Named explicitly, the store computes it from the bytes it writes; left to itself
        # it may copy the source's value along.
        headers["x-amz-checksum-algorithm"] = options.checksum_algorithm
    headers.update(create_only_headers(options))
    try:
        written = await client.copy(
            source.bucket,
            source.key,
            target.bucket,
            target.key,
            headers,
            source_version_id=plan.version_id,
        )
    except S3ResponseError as exc:
        # 412 is either condition: the source changed or the target is taken. The target
        # is what a create-only copy asks about; if it is free, the source moved.
        if target_taken(exc, options) and await _exists(client, target):
            raise TargetExistsError(
                f"s3://{target.bucket}/{target.key} exists", plan.head
            ) from None
        raise
    if options.on_progress is not None:
        options.on_progress(plan.head.size)
    return copy_result(
        written=written,
        plan=plan,
        options=options,
        server_side=True,
        checksum_algorithm=options.checksum_algorithm,
    )


async def _exists(client: S3HttpClient, target: TargetObject) -> bool:
    try:
        await client.head(target.bucket, target.key)
    except S3ResponseError as exc:
        if exc.status == 404:
            return False
        raise
    return True


async def server_side_multipart(
    client: S3HttpClient,
    source: SourceObject,
    target: TargetObject,
    options: CopyOptions,
    plan: Plan,
) -> CopyResult:
    ranges = byte_ranges(plan.layout.sizes)
    whole = len(ranges) == 1
    headers = {**_copy_conditions(source, plan), **options.encryption.part_headers()}

    async def copy_part(upload_id: str, index: int) -> str:
        first, last = ranges[index]
        etag = await client.upload_part_copy(
            source.bucket,
            source.key,
            target.bucket,
            target.key,
            upload_id,
            index + 1,
            headers,
            source_version_id=plan.version_id,
            # A one-part object (ETag "-1") is copied without a range, which also covers
            # the empty object, whose range "bytes=0--1" would be invalid.
            byte_range=None if whole else (first, last),
        )
        if options.on_progress is not None:
            options.on_progress(last - first + 1)
        return etag

    def copy_parts(upload_id: str) -> Awaitable[list[str]]:
        return run_bounded(
            len(ranges),
            max(1, options.part_concurrency),
            lambda index: copy_part(upload_id, index),
        )

    return await multipart_upload(client, target, options, plan, copy_parts, server_side=True)
