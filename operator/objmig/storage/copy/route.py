"""`copy_object`: look at the source as little as the copy allows, plan it, and take the
server-side or the streamed path; copy again with exact part sizes when equal parts were a
wrong guess.

Which request proves what, per path (docs/storage.md, "Requests per object"):

- streamed, single-part: the GET (pinned by `If-Match` to the listed ETag) brings every
  header a HEAD would, the PUT sends them: 2 requests;
- server-side, single-part, metadata kept: CopyObject pinned by
  `x-amz-copy-source-if-match`, directive COPY: 1 request (not where the store lacks that
  condition, for directory markers, nor where tags are kept and the store has none: those
  HEAD first, see `_one_copy_request`);
- streamed, multipart: the listing's size and part count imply the parts (else HEAD of
  part 1 tells), the GET brings the headers: GET, create, N parts, complete;
- server-side, multipart: HEAD `?partNumber=1` gives the headers and the parts (only a
  HEAD can tell the metadata UploadPartCopy does not carry), the tags, create, N part
  copies, complete.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from objmig.storage.compare import told_apart
from objmig.storage.copy.model import CopyOptions, CopyResult, SourceObject, TargetObject
from objmig.storage.copy.planning import (
    Plan,
    check_tags_writable,
    copies_metadata_unchanged,
    head_by_first_part,
    is_directory_marker,
    multipart_by_listing,
    multipart_layout,
    plan_by_listing,
    plan_copy,
    single_part_by_listing,
)
from objmig.storage.copy.server_side import server_side_multipart, server_side_single
from objmig.storage.copy.streamed import streamed_multipart, streamed_single
from objmig.storage.errors import S3ResponseError, SourceChangedError, classify
from objmig.storage.features import Aspect
from objmig.storage.parts import guessed_layout, resolve_part_layout, uniform_layout_by_listing
from objmig.storage.reader import ObjectReader
from objmig.storage.s3http import S3HttpClient
from objmig.storage.types import HeadResult, multipart_part_count

log = logging.getLogger(__name__)


async def copy_object(
    src_client: ObjectReader,
    dst_client: S3HttpClient,
    source: SourceObject,
    target: TargetObject,
    options: CopyOptions | None = None,
) -> CopyResult:
    """Copy `source` to `target` (see the module docstring for the paths).

    Raises `SourceChangedError` when the source no longer matches the scan,
    `ObjectArchivedError` when it needs a restore first, `TargetExistsError` for a
    `create_only` copy onto a taken key, `IntegrityError` when bytes written differ from
    bytes read, and `S3ResponseError` or transport errors otherwise (map them with
    `objmig.storage.errors.classify`).
    """
    options = options or CopyOptions()
    listed = source.listed() if source.head is None else None
    try:
        if listed is not None:
            result = await _copy_by_listing(src_client, dst_client, source, target, options, listed)
            if result is not None:
                return await _again_if_guessed_wrong(
                    src_client, dst_client, source, target, options, result
                )
        head = source.head
        layout, refused = None, None
        if head is None and listed is not None and listed.is_multipart:
            head, first_parts, refused = await head_by_first_part(src_client, source, listed)
            # Parts the copy cuts itself, or must know exactly, are not the first's.
            layout = first_parts if multipart_by_listing(listed, options) else None
        if head is None:
            head = await src_client.head(
                source.bucket, source.key, version_id=source.version_id, sse_c=source.sse_c_key
            )
        plan = await plan_copy(src_client, source, options, head, layout, refused)
        check_tags_writable(dst_client, target, options, plan)
        if options.server_side and is_directory_marker(source.key, head):
            return await _copy_marker(src_client, dst_client, source, target, options, plan)
        result = await _copy_planned(src_client, dst_client, source, target, options, plan)
        return await _again_if_guessed_wrong(
            src_client, dst_client, source, target, options, result, plan
        )
    except S3ResponseError as exc:
        if exc.status == 412 and exc.operation in ("GetObject", "CopyObject", "UploadPartCopy"):
            # Every read pins the listed (or HEADed) ETag (`If-Match`,
            # `x-amz-copy-source-if-match`); a taken target was told apart before (it is
            # a `TargetExistsError`): the source changed.
            raise SourceChangedError(
                f"s3://{source.bucket}/{source.key}: ETag is no longer {source.etag}"
            ) from None
        raise


async def _copy_by_listing(
    src_client: ObjectReader,
    dst_client: S3HttpClient,
    source: SourceObject,
    target: TargetObject,
    options: CopyOptions,
    listed: HeadResult,
) -> CopyResult | None:
    """The copy when the listing tells enough to go without a HEAD; None when it does not."""
    if single_part_by_listing(listed, options):
        if not options.server_side:
            # The GET that reads the bytes also returns every header a HEAD would.
            return await streamed_single(src_client, dst_client, source, target, options, None)
        if not _one_copy_request(dst_client, source, options, listed):
            return None
        plan = plan_by_listing(source, listed)
        result = await server_side_single(dst_client, source, target, options, plan)
        if dst_client.features.lacks(Aspect.COPY_CONDITIONALS):
            # The store refused `x-amz-copy-source-if-match` and took the copy without
            # it: nothing pinned the listed object. Copy again the way a store without
            # conditions is copied, after a HEAD that looks at the source.
            log.debug(
                "s3://%s/%s: copied without a source condition; again after a HEAD",
                target.bucket,
                target.key,
            )
            return await _copy_again_after_head(
                src_client, dst_client, source, target, options, result
            )
        if told_apart(listed.last_modified, result.last_modified):
            return result
        # Written in its source's second, the unmarked copy would answer like the
        # source itself, and no cleanup could ever delete the source. Copy it again
        # with the mark, which needs the source's headers (REPLACE), over our own copy.
        log.debug(
            "s3://%s/%s: copied in its source's second; marking it", target.bucket, target.key
        )
        return await _copy_again_after_head(src_client, dst_client, source, target, options, result)
    if options.server_side or not multipart_by_listing(listed, options):
        return None
    count = multipart_part_count(listed.etag) or 1
    if src_client.features.lacks(Aspect.PART_SIZES):
        # Guessed like every multipart object of this store: the copy hashes its bytes.
        layout = guessed_layout(listed.size, count)
    else:
        layout = uniform_layout_by_listing(listed.size, count) or await multipart_layout(
            src_client, source, listed, count
        )
    return await streamed_multipart(
        src_client, dst_client, source, target, options, None, layout=layout
    )


def _one_copy_request(
    client: S3HttpClient, source: SourceObject, options: CopyOptions, listed: HeadResult
) -> bool:
    """Whether a server-side single-part copy may be one CopyObject on the listing's word.

    Not where metadata changes (REPLACE names every key, which only a HEAD tells); not
    where the store lacks `x-amz-copy-source-if-match` (nothing would pin the listed
    object: the HEAD before the copy and the re-check after it must); not for a directory
    marker (some stores refuse to copy one, and the HEAD path writes it by PutObject);
    not where tags are to be kept and the store has none (the listing tells no tag
    count, so `check_tags_writable` needs the HEAD's).
    """
    features = client.features
    return (
        copies_metadata_unchanged(options)
        and not features.lacks(Aspect.COPY_CONDITIONALS)
        and not is_directory_marker(source.key, listed)
        and not (options.preserve_tags and features.lacks(Aspect.TAGS))
    )


async def _copy_again_after_head(
    src_client: ObjectReader,
    dst_client: S3HttpClient,
    source: SourceObject,
    target: TargetObject,
    options: CopyOptions,
    first: CopyResult,
) -> CopyResult:
    """A server-side single-part copy made on the listing's word, made again from a HEAD
    (with the migration's mark, REPLACE) over our own first copy, whose version goes."""
    head = await src_client.head(
        source.bucket, source.key, version_id=source.version_id, sse_c=source.sse_c_key
    )
    again = replace(options, create_only=False)
    marked = await plan_copy(src_client, source, again, head)
    check_tags_writable(dst_client, target, again, marked)
    final = await server_side_single(dst_client, source, target, again, marked)
    await _drop_superseded_version(dst_client, target, first, final)
    return final


async def _drop_superseded_version(
    client: S3HttpClient, target: TargetObject, first: CopyResult, final: CopyResult
) -> None:
    """On a versioned target, a copy written again leaves the first as an older version:
    a key's history would gain a version its source never had. That version is objmig's
    own, written a moment ago and named by the id its write returned, so it goes. (A
    suspended bucket's "null" version was overwritten by the second write already.)"""
    version = first.version_id
    if not version or version in ("null", final.version_id):
        return
    try:
        await client.delete_version(target.bucket, target.key, version)
    except S3ResponseError as exc:
        # The copy stands (the newest version is right); failing it would only copy it
        # again and leave one more version. Object Lock or a missing
        # s3:DeleteObjectVersion permission end here.
        log.warning(
            "s3://%s/%s: could not delete version %s, an earlier copy of ours: %s",
            target.bucket,
            target.key,
            version,
            exc,
        )


async def _again_if_guessed_wrong(
    src_client: ObjectReader,
    dst_client: S3HttpClient,
    source: SourceObject,
    target: TargetObject,
    options: CopyOptions,
    result: CopyResult,
    plan: Plan | None = None,
) -> CopyResult:
    """Copy again with every part's size asked for when equal parts were assumed (from
    part 1 and the count, or from the listing) and the ETag says the parts differ."""
    if result.etag_matches_source is not False or result.layout_source != "uniform":
        return result
    log.info(
        "s3://%s/%s: parts are not equal; copying again with exact sizes",
        source.bucket,
        source.key,
    )
    head = result.source
    exact = await resolve_part_layout(
        src_client, source.bucket, source.key, result.source_version_id, source.sse_c_key, head=head
    )
    # The first copy took the key (create-only or not): the second replaces our own
    # object, so If-None-Match would only refuse it.
    again = replace(options, create_only=False)
    if plan is not None:
        plan = replace(plan, layout=exact)
    else:
        plan = await plan_copy(src_client, source, again, head, exact)
    final = await _copy_planned(src_client, dst_client, source, target, again, plan)
    await _drop_superseded_version(dst_client, target, result, final)
    return final


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
