"""Server-side copies: CopyObject for single-part objects, one UploadPartCopy per source
part (the same byte ranges) for multipart ones, every read pinned to the scanned ETag.

Some stores refuse a header they do not implement (NotImplemented: "A header you provided
implies functionality that is not implemented"), without saying which. The first such
answer is met by sending the request again without each optional header in turn; the one
whose absence the store accepts is learned for the run (`StoreFeatures`), and later copies
leave it out from the start.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

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
from objmig.storage.features import Aspect, unsupported
from objmig.storage.s3http import S3HttpClient
from objmig.storage.s3wire import content_headers, metadata_headers, sse_c_headers
from objmig.storage.types import WriteResult

T = TypeVar("T")

#: Headers of a server-side copy that a store may refuse, with the aspect each belongs to,
#: in the order they are left out when a store answers NotImplemented. Without the source
#: condition the copy relies on the HEAD before it and the re-check after it.
_OPTIONAL_HEADERS = (
    (Aspect.COPY_CONDITIONALS, "x-amz-copy-source-if-match"),
    (Aspect.CHECKSUMS, "x-amz-checksum-algorithm"),
    (Aspect.TAGS, "x-amz-tagging-directive"),
)


def _copy_conditions(client: S3HttpClient, source: SourceObject, plan: Plan) -> dict[str, str]:
    """Source conditions and keys of CopyObject / UploadPartCopy."""
    conditions = sse_c_headers(source.sse_c_key, copy_source=True)
    if not client.features.lacks(Aspect.COPY_CONDITIONALS):
        conditions["x-amz-copy-source-if-match"] = f'"{plan.head.etag}"'
    return conditions


async def _send_copy(
    client: S3HttpClient,
    operation: str,
    headers: Mapping[str, str],
    send: Callable[[dict[str, str]], Awaitable[T]],
) -> tuple[T, dict[str, str]]:
    """`send(headers)`, and again without the optional header a store refuses (see the
    module docstring); returns the answer and the headers it was given."""
    sent = dict(headers)
    try:
        return await send(sent), sent
    except S3ResponseError as exc:
        if not unsupported(exc):
            raise
        refused = exc
    for aspect, name in _OPTIONAL_HEADERS:
        if name not in sent:
            continue
        fewer = {k: v for k, v in sent.items() if k != name}
        try:
            answer = await send(fewer)
        except S3ResponseError as exc:
            if unsupported(exc):
                continue
            raise
        client.features.learn_missing(aspect, f"{operation} refused {name}: {refused.code}")
        return answer, fewer
    raise refused


async def server_side_single(
    client: S3HttpClient,
    source: SourceObject,
    target: TargetObject,
    options: CopyOptions,
    plan: Plan,
) -> CopyResult:
    headers = {**_copy_conditions(client, source, plan), **options.encryption.object_headers()}
    if options.storage_class:
        headers["x-amz-storage-class"] = options.storage_class
    if plan.metadata_changed:
        # REPLACE drops everything not given, so content headers go along explicitly.
        headers["x-amz-metadata-directive"] = "REPLACE"
        headers.update(metadata_headers(plan.metadata))
        headers.update(content_headers(plan.head.content))
    else:
        headers["x-amz-metadata-directive"] = "COPY"
    if options.preserve_tags and not client.features.lacks(Aspect.TAGS):
        # COPY is S3's default; said explicitly, a store that has tags cannot differ.
        # Without preserveTags no tagging header goes out at all.
        headers["x-amz-tagging-directive"] = "COPY"
    if options.checksum_algorithm and not client.features.lacks(Aspect.CHECKSUMS):
        # Named explicitly, the store computes it from the bytes it writes; left to itself
        # it may copy the source's value along.
        headers["x-amz-checksum-algorithm"] = options.checksum_algorithm
    headers.update(create_only_headers(options))

    def send(given: dict[str, str]) -> Awaitable[WriteResult]:
        return client.copy(
            source.bucket,
            source.key,
            target.bucket,
            target.key,
            given,
            source_version_id=plan.version_id,
        )

    try:
        written, sent = await _send_copy(client, "CopyObject", headers, send)
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
        checksum_algorithm=sent.get("x-amz-checksum-algorithm"),
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
    part_headers = options.encryption.part_headers()

    async def copy_part(upload_id: str, index: int) -> str:
        first, last = ranges[index]

        def send(given: dict[str, str]) -> Awaitable[str]:
            return client.upload_part_copy(
                source.bucket,
                source.key,
                target.bucket,
                target.key,
                upload_id,
                index + 1,
                given,
                source_version_id=plan.version_id,
                # A one-part object (ETag "-1") is copied without a range, which also
                # covers the empty object, whose range "bytes=0--1" would be invalid.
                byte_range=None if whole else (first, last),
            )

        # The conditions are asked again per part: a refusal learned by one part spares
        # the parts after it the extra round trip.
        headers = {**_copy_conditions(client, source, plan), **part_headers}
        etag, _ = await _send_copy(client, "UploadPartCopy", headers, send)
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
