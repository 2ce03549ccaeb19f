"""Copying one object: server-side or streamed, keeping part boundaries (and so ETags).

Two paths, chosen by `CopyOptions.server_side`:

- **server-side** (source and target in one store, one identity): CopyObject for
  single-part objects, and for multipart objects one UploadPartCopy per source part, with
  the same byte ranges. Any size works (CopyObject stops at 5 GiB, UploadPartCopy does not),
  and the target's multipart ETag equals the source's because each part has the same bytes.
- **streamed** (anything else): the source read by GET and piped into UploadParts of the
  source's part sizes (PutObject for single-part objects). A multipart object is read with
  one GET, front to back; up to `part_concurrency` parts upload at once, the parts after
  the one streaming being read into memory as far as the process's `ReadAhead` budget
  allows, and streamed straight from the GET when it has no room. So memory is bounded by
  that budget plus a chunk per stream, whatever the object size, and a SHA-256 of the
  whole object is taken as the bytes pass, in order.

Both paths refuse with `SourceChangedError` a source that no longer has the scanned ETag
and size (a streamed single-part object learns that from the GET that reads it, the others
from a HEAD), then pin the version and ETag (If-Match / x-amz-copy-source-if-match) for every
read, so an object overwritten mid-copy fails the copy instead of mixing versions. A
multipart upload that fails or is cancelled is aborted before the error propagates.

Requests go through `s3http.S3HttpClient`, not botocore: at one to five requests per small
object, botocore's per-request CPU was the limit of the whole copy (see that module).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, TypeVar, cast
from urllib.parse import urlencode

from objmig.storage.compare import etag_is_content_md5, looks_like_md5
from objmig.storage.errors import (
    IntegrityError,
    S3ResponseError,
    SourceChangedError,
    StorageError,
)
from objmig.storage.parts import resolve_part_layout
from objmig.storage.ratelimit import RateLimiter
from objmig.storage.restore import needs_restore
from objmig.storage.s3http import S3HttpClient, content_headers, metadata_headers, sse_c_headers
from objmig.storage.streaming import PartStream, ReadAhead
from objmig.storage.types import (
    MIGRATION_METADATA_KEY,
    STREAM_CHUNK,
    Body,
    EncryptionInfo,
    HeadResult,
    MiB,
    PartLayout,
    WriteResult,
    multipart_part_count,
    normalise_etag,
)

log = logging.getLogger(__name__)

EncryptionMode = Literal["none", "SSE-S3", "SSE-KMS", "SSE-C"]

# CopyObject refuses sources above 5 GiB; such single-part objects cannot exist (PutObject
# has the same limit), but a multipart source may be larger, hence UploadPartCopy.
MAX_COPY_OBJECT_SIZE = 5 * 1024 * MiB
# Time allowed for aborting an upload after a failure, so a dead store cannot hang the
# error path forever.
ABORT_TIMEOUT = 60.0

T = TypeVar("T")


class ObjectArchivedError(StorageError):
    """The source is archived (GLACIER, DEEP_ARCHIVE, Intelligent-Tiering archive) and not
    restored: request a restore and wait, then copy."""

    kind = "invalid_state"
    code = "ObjectArchived"


class TargetExistsError(StorageError):
    """A create-only write found the target key taken (412 to If-None-Match: *).

    Not a failure: the engine looks at the existing object and decides by its overwrite
    policy. `source` is the source as the copy read it, for that comparison.
    """

    # Retryable should it escape: the next attempt looks at the target again.
    kind = "retryable"
    code = "TargetExists"

    def __init__(self, message: str, source: HeadResult) -> None:
        super().__init__(message)
        self.source = source


@dataclass(frozen=True)
class Encryption:
    """Server-side encryption to apply to the target.

    `none` sends no encryption headers (the bucket's default encryption, if any, applies);
    `SSE-KMS` without `kms_key_id` uses the AWS-managed `aws/s3` key; `SSE-C` needs a
    32-byte `sse_c_key`, which is never shown in reprs.
    """

    mode: EncryptionMode = "none"
    kms_key_id: str | None = None
    sse_c_key: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.mode == "SSE-C" and (self.sse_c_key is None or len(self.sse_c_key) != 32):
            raise ValueError("SSE-C needs a 32-byte key")
        if self.mode != "SSE-C" and self.sse_c_key is not None:
            raise ValueError(f"an SSE-C key makes no sense with encryption {self.mode}")
        if self.kms_key_id and self.mode != "SSE-KMS":
            raise ValueError(f"kms_key_id makes no sense with encryption {self.mode}")

    def object_headers(self) -> dict[str, str]:
        """Headers for PutObject, CreateMultipartUpload and CopyObject."""
        if self.mode == "SSE-S3":
            return {"x-amz-server-side-encryption": "AES256"}
        if self.mode == "SSE-KMS":
            headers = {"x-amz-server-side-encryption": "aws:kms"}
            if self.kms_key_id:
                headers["x-amz-server-side-encryption-aws-kms-key-id"] = self.kms_key_id
            return headers
        return self.part_headers()

    def part_headers(self) -> dict[str, str]:
        """Headers for UploadPart, UploadPartCopy and CompleteMultipartUpload (SSE-C must
        be repeated on every part; the others are set once on the upload)."""
        return sse_c_headers(self.sse_c_key) if self.mode == "SSE-C" else {}

    @property
    def etag_is_md5(self) -> bool:
        """Whether S3 ETags of objects written this way are MD5s of their content."""
        return etag_is_content_md5(self.mode)


@dataclass(frozen=True)
class SourceObject:
    """The object to copy, as the scan saw it.

    `etag` and `size` are checked against what the store reports before any byte moves;
    empty `etag` skips the check. `head`: a HEAD the caller already made (saves one).
    `part_sizes` empty means "find out" (HEAD ?partNumber=n).
    """

    bucket: str
    key: str
    version_id: str | None = None
    size: int | None = None
    etag: str = ""
    part_sizes: tuple[int, ...] = ()
    sse_c_key: bytes | None = field(default=None, repr=False)
    head: HeadResult | None = None


@dataclass(frozen=True)
class TargetObject:
    """Where the copy goes."""

    bucket: str
    key: str


@dataclass(frozen=True)
class CopyOptions:
    """How to copy.

    - `storage_class`: for the target; None = the store's default (CopyObject does NOT
      keep the source's class).
    - `preserve_metadata`: copy user metadata (`x-amz-meta-*`). Content headers
      (Content-Type, Cache-Control, ...) are always copied: they are part of the object's
      HTTP representation, not annotations.
    - `preserve_tags`: copy the object's tags.
    - `create_only`: write only if the target key is free (`If-None-Match: *` on the
      PUT, CopyObject or CompleteMultipartUpload); a taken key raises `TargetExistsError`.
      Stores that ignore the header overwrite, so callers that must never overwrite still
      look first.
    - `migration_tag`: stored as metadata `objmig-migration` on the target.
    - `on_upload_started(upload_id)`: awaited right after CreateMultipartUpload, so the
      engine can record the upload id (S3 shows no metadata for incomplete uploads; the
      recorded ids are how leftovers are recognised as objmig's).
    - `on_progress(nbytes)`: called as bytes move (per chunk streamed, per part copied).
    - `read_ahead`: the memory streamed multipart copies may fill with parts read ahead of
      their upload, shared by the copies of a process; None streams one part at a time.
    - `part_size`: write multipart objects (and objects bigger than it) in parts of this
      size instead of the source's layout; the copy's ETag then differs from the source's
      (`CopyResult.layout_kept` is False) and only a checksum can prove it. None keeps the
      source's parts.
    - `split_part_size`: part size for single-part sources above `max_single_part_size`
      (5 GiB, the PutObject / CopyObject limit; some stores accept bigger single PUTs),
      which must become multipart on the target.
    - `exact_layout`: learn every part's size before copying a multipart object instead of
      guessing equal parts from part 1 (a wrong guess is copied again, which a copy that
      replaces its own source cannot do).
    - `checksum_algorithm`: have the store compute and keep this additional checksum
      (SHA256, CRC32, ...) of a server-side single-part copy, so that verification can
      compare it with the source's without reading either object. (A streamed copy with
      `compute_sha256` sends the SHA-256 of a buffered body instead, which the store
      checks and keeps.)
    """

    storage_class: str | None = None
    encryption: Encryption = field(default_factory=Encryption)
    preserve_metadata: bool = True
    preserve_tags: bool = True
    part_concurrency: int = 4
    server_side: bool = False
    compute_sha256: bool = False
    create_only: bool = False
    rate_limiter: RateLimiter | None = None
    migration_tag: str | None = None
    extra_metadata: Mapping[str, str] = field(default_factory=dict)
    on_upload_started: Callable[[str], Awaitable[None]] | None = None
    on_progress: Callable[[int], None] | None = None
    read_ahead: ReadAhead | None = None
    part_size: int | None = None
    split_part_size: int = 512 * MiB
    max_single_part_size: int = MAX_COPY_OBJECT_SIZE
    checksum_algorithm: str | None = None
    exact_layout: bool = False


@dataclass(frozen=True)
class CopyResult:
    """What was written.

    `etag_matches_source`: True/False when the comparison is meaningful (both ETags are
    content MD5s and the part layout was exact), None otherwise. `sha256` only with
    `compute_sha256` on the streamed path (a server-side copy never sees the bytes).
    `source` is the source's HEAD (or the headers of the GET that read it): what was
    copied, for verification to compare with.
    """

    etag: str
    version_id: str | None
    bytes: int
    sha256: str | None
    parts: int
    server_side: bool
    source: HeadResult
    source_version_id: str | None
    etag_matches_source: bool | None
    layout_kept: bool = True
    target_encryption: EncryptionInfo = field(default_factory=EncryptionInfo)
    upload_id: str | None = None
    #: The additional checksum this copy had its store compute or check (its value on the
    #: target is the store's word on the bytes written); None: any the target shows came
    #: some other way, perhaps copied along from the source.
    checksum_algorithm: str | None = None

    @property
    def source_etag(self) -> str:
        return self.source.etag


@dataclass(frozen=True)
class _Plan:
    """Everything decided before the first byte moves."""

    head: HeadResult
    layout: PartLayout
    version_id: str | None
    metadata: dict[str, str]
    metadata_changed: bool
    tags: dict[str, str] | None


async def copy_object(
    src_client: S3HttpClient,
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
    if _single_part_by_listing(source, options) and not options.server_side:
        # The GET that reads the bytes also returns every header a HEAD would; its
        # If-Match pins the scanned version. One request saved per small object.
        try:
            return await _streamed_single(src_client, dst_client, source, target, options, None)
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
    plan = await _plan(src_client, source, options, head)
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


def _single_part_by_listing(source: SourceObject, options: CopyOptions) -> bool:
    """Whether the listing alone shows a plain single-part object (no HEAD needed)."""
    return (
        source.head is None
        and bool(source.etag)
        and source.size is not None
        and source.size <= options.max_single_part_size
        and (options.part_size is None or source.size <= options.part_size)
        and multipart_part_count(source.etag) is None
    )


async def _copy_planned(
    src_client: S3HttpClient,
    dst_client: S3HttpClient,
    source: SourceObject,
    target: TargetObject,
    options: CopyOptions,
    plan: _Plan,
) -> CopyResult:
    if options.server_side:
        if plan.layout.multipart:
            return await _server_side_multipart(dst_client, source, target, options, plan)
        return await _server_side_single(dst_client, source, target, options, plan)
    if plan.layout.multipart:
        return await _streamed_multipart(src_client, dst_client, source, target, options, plan)
    return await _streamed_single(src_client, dst_client, source, target, options, plan)


def _check_source(source: SourceObject, head: HeadResult) -> None:
    """Refuse a source that is not what was scanned, or not readable yet."""
    where = f"s3://{source.bucket}/{source.key}"
    if source.etag and normalise_etag(source.etag) != head.etag:
        raise SourceChangedError(f"{where}: ETag is now {head.etag}, scanned {source.etag}")
    if source.size is not None and source.size != head.size:
        raise SourceChangedError(f"{where}: size is now {head.size}, scanned {source.size}")
    if source.version_id and head.version_id and source.version_id != head.version_id:
        raise SourceChangedError(f"{where}: HEAD returned version {head.version_id}")
    if needs_restore(head.storage_class, head.restore, head.archive_status):
        state = "being restored" if head.restore else "archived and not restored"
        raise ObjectArchivedError(f"{where} ({head.storage_class}) is {state}")


async def _plan(
    client: S3HttpClient, source: SourceObject, options: CopyOptions, head: HeadResult
) -> _Plan:
    _check_source(source, head)
    count = multipart_part_count(head.etag)
    given = source.part_sizes
    if options.part_size is not None and (count is not None or head.size > options.part_size):
        sizes = tuple(_split(head.size, options.part_size)) or (0,)
        layout = PartLayout(sizes, "resized", multipart=len(sizes) > 1)
    elif given and sum(given) == head.size and (count is None or count == len(given)):
        layout = PartLayout(tuple(given), "head" if count else "single", multipart=bool(count))
    elif count is None:
        layout = PartLayout((head.size,), "single", multipart=False)
    elif options.exact_layout:
        layout = await resolve_part_layout(
            client, source.bucket, source.key, head.version_id, source.sse_c_key, head=head
        )
    else:
        layout = await _multipart_layout(client, source, head, count)
    if not layout.multipart and head.size > options.max_single_part_size:
        # Some stores (MinIO) accept single PUTs above AWS's 5 GiB; neither PutObject nor
        # CopyObject can write those to S3, so they become multipart (new ETag).
        layout = PartLayout(
            tuple(_split(head.size, options.split_part_size)), "split", multipart=True
        )
    tags: dict[str, str] | None = None
    # A single-part copy gets the tags another way: CopyObject copies them, and the GET of
    # a streamed copy says whether there are any (x-amz-tagging-count).
    if options.preserve_tags and layout.multipart:
        tags = await client.get_tags(source.bucket, source.key, head.version_id)
    return _plan_for(source, options, head, layout, tags)


def _plan_for(
    source: SourceObject,
    options: CopyOptions,
    head: HeadResult,
    layout: PartLayout,
    tags: dict[str, str] | None,
) -> _Plan:
    metadata = dict(head.metadata) if options.preserve_metadata else {}
    metadata.update({k.lower(): v for k, v in options.extra_metadata.items()})
    if options.migration_tag:
        metadata[MIGRATION_METADATA_KEY] = options.migration_tag
    return _Plan(
        head=head,
        layout=layout,
        # Pin the version we saw, so every part reads the same version.
        version_id=head.version_id or source.version_id,
        metadata=metadata,
        metadata_changed=metadata != dict(head.metadata),
        tags=tags,
    )


async def _multipart_layout(
    client: S3HttpClient, source: SourceObject, head: HeadResult, count: int
) -> PartLayout:
    """The source's parts: equal parts when part 1 and the part count allow it, else exact.

    Uploaders cut objects into equal parts and a shorter last one, so HEAD of part 1 and
    the part count usually tell every size in one request; `copy_object` checks the
    resulting ETag and falls back to asking for every part when the guess was wrong.
    """
    try:
        first = await client.head(
            source.bucket,
            source.key,
            version_id=head.version_id,
            part_number=1,
            sse_c=source.sse_c_key,
        )
    except S3ResponseError:
        first = None
    if first is not None and first.parts_count == count and first.size > 0:
        last = head.size - first.size * (count - 1)
        if 0 < last <= first.size:
            return PartLayout((first.size,) * (count - 1) + (last,), "uniform", multipart=True)
    return await resolve_part_layout(
        client, source.bucket, source.key, head.version_id, source.sse_c_key, head=head
    )


def _object_headers(target: TargetObject, options: CopyOptions, plan: _Plan) -> dict[str, str]:
    """Headers shared by PutObject and CreateMultipartUpload."""
    headers = {
        **metadata_headers(plan.metadata),
        **content_headers(plan.head.content),
        **options.encryption.object_headers(),
    }
    if options.storage_class:
        headers["x-amz-storage-class"] = options.storage_class
    if plan.tags:
        headers["x-amz-tagging"] = urlencode(plan.tags)
    return headers


def _create_only(options: CopyOptions) -> dict[str, str]:
    return {"if-none-match": "*"} if options.create_only else {}


def _target_taken(exc: S3ResponseError, options: CopyOptions) -> bool:
    return options.create_only and exc.status == 412


def _etag_comparable(plan: _Plan, options: CopyOptions) -> bool:
    # Both ETags must be content MD5s (no KMS / SSE-C on either side) and the layout
    # exact, otherwise different ETags prove nothing.
    return (
        plan.layout.exact
        and etag_is_content_md5(plan.head.encryption.mode)
        and options.encryption.etag_is_md5
    )


def _result(
    *,
    written: WriteResult,
    plan: _Plan,
    options: CopyOptions,
    server_side: bool,
    sha256: str | None = None,
    upload_id: str | None = None,
    checksum_algorithm: str | None = None,
) -> CopyResult:
    etag = normalise_etag(written.etag)
    return CopyResult(
        etag=etag,
        version_id=written.version_id,
        bytes=plan.head.size,
        sha256=sha256,
        parts=len(plan.layout.sizes) if plan.layout.multipart else 1,
        server_side=server_side,
        source=plan.head,
        source_version_id=plan.version_id,
        etag_matches_source=(etag == plan.head.etag) if _etag_comparable(plan, options) else None,
        layout_kept=plan.layout.exact,
        target_encryption=written.encryption,
        upload_id=upload_id,
        checksum_algorithm=checksum_algorithm,
    )


# ------------------------------------------------------------------------- server-side


def _copy_conditions(source: SourceObject, plan: _Plan) -> dict[str, str]:
    """Source conditions and keys of CopyObject / UploadPartCopy."""
    return {
        "x-amz-copy-source-if-match": f'"{plan.head.etag}"',
        **sse_c_headers(source.sse_c_key, copy_source=True),
    }


async def _server_side_single(
    client: S3HttpClient,
    source: SourceObject,
    target: TargetObject,
    options: CopyOptions,
    plan: _Plan,
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
    headers.update(_create_only(options))
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
        if _target_taken(exc, options) and await _exists(client, target):
            raise TargetExistsError(
                f"s3://{target.bucket}/{target.key} exists", plan.head
            ) from None
        raise
    if options.on_progress is not None:
        options.on_progress(plan.head.size)
    return _result(
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


def _split(size: int, part: int) -> list[int]:
    """`size` bytes in parts of `part` bytes, the last one shorter."""
    full, rest = divmod(size, part)
    return [part] * full + ([rest] if rest else [])


def _ranges(sizes: Sequence[int]) -> list[tuple[int, int]]:
    """(first byte, last byte) of each part."""
    ranges = []
    start = 0
    for size in sizes:
        ranges.append((start, start + size - 1))
        start += size
    return ranges


async def _server_side_multipart(
    client: S3HttpClient,
    source: SourceObject,
    target: TargetObject,
    options: CopyOptions,
    plan: _Plan,
) -> CopyResult:
    ranges = _ranges(plan.layout.sizes)
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

    return await _multipart(client, target, options, plan, copy_parts, server_side=True)


# ----------------------------------------------------------------------------- streamed


async def _streamed_single(
    src_client: S3HttpClient,
    dst_client: S3HttpClient,
    source: SourceObject,
    target: TargetObject,
    options: CopyOptions,
    plan: _Plan | None,
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
            _check_source(source, got.head)
            layout = PartLayout((got.head.size,), "single", multipart=False)
            plan = _plan_for(source, options, got.head, layout, None)
        if options.preserve_tags and got.head.tag_count:
            plan = replace(
                plan, tags=await src_client.get_tags(source.bucket, source.key, plan.version_id)
            )
        size = plan.head.size
        stream = PartStream(
            got.body,
            size,
            on_chunk=digest.update if digest is not None else None,
            limiter=options.rate_limiter,
            on_progress=options.on_progress,
            md5=not _etag_comparable(plan, options),
            describe=f"GET s3://{source.bucket}/{source.key}",
        )
        headers = {**_object_headers(target, options, plan), **_create_only(options)}
        try:
            # Up to one stream chunk, a buffer is no more memory than streaming would use.
            body = await stream.collect() if size <= STREAM_CHUNK else stream
            if digest is not None and isinstance(body, bytes):
                # The whole body is hashed before it is sent: the store checks what it
                # receives against this and keeps it, which proves the copy by itself.
                headers["x-amz-sdk-checksum-algorithm"] = "SHA256"
                headers["x-amz-checksum-sha256"] = base64.b64encode(digest.digest()).decode()
            written = await dst_client.put(target.bucket, target.key, body, size, headers)
        except S3ResponseError as exc:
            if _target_taken(exc, options):
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
    return _result(
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

    Only where the final ETag cannot prove the copy (see `_etag_comparable`): there a
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


async def _streamed_multipart(
    src_client: S3HttpClient,
    dst_client: S3HttpClient,
    source: SourceObject,
    target: TargetObject,
    options: CopyOptions,
    plan: _Plan,
) -> CopyResult:
    ranges = _ranges(plan.layout.sizes)
    window = max(1, options.part_concurrency)
    read_ahead = options.read_ahead if window > 1 else None
    # One GET reads the object front to back, so its SHA-256 is simply taken as it goes.
    digest = hashlib.sha256() if options.compute_sha256 else None
    part_md5 = not _etag_comparable(plan, options)

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

    return await _multipart(
        dst_client,
        target,
        options,
        plan,
        copy_parts,
        server_side=False,
        sha256=digest.hexdigest if digest is not None else None,
    )


# --------------------------------------------------------------------- multipart frame


async def _multipart(
    client: S3HttpClient,
    target: TargetObject,
    options: CopyOptions,
    plan: _Plan,
    write_parts: Callable[[str], Awaitable[list[str]]],
    *,
    server_side: bool,
    sha256: Callable[[], str] | None = None,
) -> CopyResult:
    """Create an upload, run `write_parts(upload_id)`, which returns the ETags of every
    part in order, complete it; abort on any failure (cancellation included) before
    re-raising."""
    upload_id = await client.create_multipart_upload(
        target.bucket, target.key, _object_headers(target, options, plan)
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
                {**options.encryption.part_headers(), **_create_only(options)},
            )
        except S3ResponseError as exc:
            if _target_taken(exc, options):
                raise TargetExistsError(
                    f"s3://{target.bucket}/{target.key} exists", plan.head
                ) from None
            raise
    except BaseException:
        await _abort_quietly(client, target, upload_id)
        raise
    return _result(
        written=written,
        plan=plan,
        options=options,
        server_side=server_side,
        sha256=sha256() if sha256 is not None else None,
        upload_id=upload_id,
    )


async def _abort_quietly(client: S3HttpClient, target: TargetObject, upload_id: str) -> None:
    """Abort an upload after a failure; never raise over the original error.

    Shielded, so a second cancellation (e.g. a worker shutting down) does not leave the
    upload behind; time-limited, so a dead store cannot hang the error path.
    """

    async def abort() -> None:
        try:
            await asyncio.wait_for(
                client.abort_multipart_upload(target.bucket, target.key, upload_id),
                ABORT_TIMEOUT,
            )
        except S3ResponseError as exc:
            if exc.code != "NoSuchUpload":
                log.warning(
                    "could not abort upload %s of s3://%s/%s: %s",
                    upload_id,
                    target.bucket,
                    target.key,
                    exc,
                )
        except Exception as exc:
            log.warning(
                "could not abort upload %s of s3://%s/%s: %r",
                upload_id,
                target.bucket,
                target.key,
                exc,
            )

    # If we are cancelled again while waiting, the shielded abort still runs to completion
    # in the background and the cancellation propagates.
    await asyncio.shield(asyncio.ensure_future(abort()))


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
