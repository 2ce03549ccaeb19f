"""`copy_object`: look at the source, plan the copy, and take the server-side or the
streamed path; copy again with exact part sizes when equal parts were a wrong guess.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from objmig.storage.copy.model import CopyOptions, CopyResult, SourceObject, TargetObject
from objmig.storage.copy.planning import (
    Plan,
    check_tags_writable,
    is_directory_marker,
    plan_copy,
    single_part_by_listing,
)
from objmig.storage.copy.server_side import server_side_multipart, server_side_single
from objmig.storage.copy.streamed import streamed_multipart, streamed_single
from objmig.storage.errors import S3ResponseError, SourceChangedError, classify
from objmig.storage.features import Aspect
from objmig.storage.parts import resolve_part_layout
from objmig.storage.reader import ObjectReader
from objmig.storage.s3http import S3HttpClient

log = logging.getLogger(__name__)


async def copy_object(
    src_client: ObjectReader,
    dst_client: S3HttpClient,
    source: SourceObject,
    target: TargetObject,
    options: CopyOptions | None = None,
) -> CopyResult:
    """Copy `source` to `target` (see the module docstring for the two paths).

    Raises `SourceChangedError` when the source no longer matches the scan,
    `ObjectArchivedError` when it needs a restore first, `TargetExistsError` for a
    `create_only` copy onto a taken key, `IntegrityError` when bytes written differ from
    bytes read, and `S3ResponseError` or transport errors otherwise (map them with
    `objmig.storage.errors.classify`).
    """
    options = options or CopyOptions()
    if single_part_by_listing(source, options) and not options.server_side:
        # The GET that reads the bytes also returns every header a HEAD would; its
        # If-Match pins the scanned version. One request saved per small object.
        try:
            return await streamed_single(src_client, dst_client, source, target, options, None)
        except S3ResponseError as exc:
            if exc.operation == "GetObject" and exc.status == 412:
                # The GET stands in for the HEAD: its 412 is the scan-time check failing.
                raise SourceChangedError(
                    f"s3://{source.bucket}/{source.key}: ETag is no longer {source.etag}"
                ) from None
            raise
    head = source.head or await src_client.head(
        source.bucket, source.key, version_id=source.version_id, sse_c=source.sse_c_key
    )
    plan = await plan_copy(src_client, source, options, head)
    check_tags_writable(dst_client, target, options, plan)
    if options.server_side and is_directory_marker(source.key, head):
        return await _copy_marker(src_client, dst_client, source, target, options, plan)
    result = await _copy_planned(src_client, dst_client, source, target, options, plan)
    if result.etag_matches_source is False and plan.layout.source == "uniform":
        # Equal parts were assumed from part 1 and the count; the ETag says the source's
        # parts differ. Learn every part's size and copy again.
        log.info(
            "s3://%s/%s: parts are not equal; copying again with exact sizes",
            source.bucket,
            source.key,
        )
        exact = await resolve_part_layout(
            src_client, source.bucket, source.key, plan.version_id, source.sse_c_key, head=head
        )
        plan = replace(plan, layout=exact)
        # The first copy took the key (create-only or not): the second replaces our own
        # object, so If-None-Match would only refuse it.
        again = replace(options, create_only=False)
        result = await _copy_planned(src_client, dst_client, source, target, again, plan)
    return result


async def _copy_marker(
    src_client: ObjectReader,
    dst_client: S3HttpClient,
    source: SourceObject,
    target: TargetObject,
    options: CopyOptions,
    plan: Plan,
) -> CopyResult:
    """A directory marker, server-side where the store can; some refuse CopyObject of one
    (versitygw, SeaweedFS), and there are no bytes to copy anyway: a PUT of its metadata,
    content headers and tags writes the same object."""
    features = dst_client.features
    if not features.lacks(Aspect.MARKER_COPIES):
        try:
            return await _copy_planned(src_client, dst_client, source, target, options, plan)
        except S3ResponseError as exc:
            # The source was just looked at: SeaweedFS's NoSuchKey for a marker it has is
            # as much a refusal as versitygw's DirectoryObjectContainsData.
            problem = classify(exc)
            if problem.kind not in ("permanent", "not_found") or problem.is_config_error:
                raise
            features.learn_missing(Aspect.MARKER_COPIES, f"CopyObject: {exc.code}")
    streamed = replace(
        options,
        server_side=False,
        compute_sha256=options.compute_sha256 or options.checksum_algorithm is not None,
        checksum_algorithm=None,
    )
    return await streamed_single(src_client, dst_client, source, target, streamed, plan)


async def _copy_planned(
    src_client: ObjectReader,
    dst_client: S3HttpClient,
    source: SourceObject,
    target: TargetObject,
    options: CopyOptions,
    plan: Plan,
) -> CopyResult:
    if options.server_side:
        if plan.layout.multipart:
            return await server_side_multipart(dst_client, source, target, options, plan)
        return await server_side_single(dst_client, source, target, options, plan)
    if plan.layout.multipart:
        return await streamed_multipart(src_client, dst_client, source, target, options, plan)
    return await streamed_single(src_client, dst_client, source, target, options, plan)
