"""Copying one object: server-side or streamed, keeping part boundaries (and so ETags).

Two paths, chosen by `CopyOptions.server_side`:

- **server-side** (source and target in one store, one identity): CopyObject for
  single-part objects, and for multipart objects one UploadPartCopy per source part, with
  the same byte ranges. Any size works (CopyObject stops at 5 GiB, UploadPartCopy does not),
  and the target's multipart ETag equals the source's because each part has the same bytes.
- **streamed** (anything else): a ranged GET of each source part piped into an UploadPart
  of the same size (PutObject for single-part objects). Bytes are never buffered whole:
  each part streams in 1 MiB chunks, so memory is about one chunk per part in flight. When
  a SHA-256 of the whole object is wanted, parts are still uploaded concurrently but hashed
  in order (see `streaming.OrderedHasher`); parts that finish ahead of the front wait in
  memory, bounded by `CopyOptions.buffer_budget` by lowering the parts in flight.

Both paths first HEAD the source and refuse with `SourceChangedError` if it no longer has
the scanned ETag and size, then pin the version and ETag (If-Match / CopySourceIfMatch) for
every read, so an object overwritten mid-copy fails the copy instead of mixing versions.
A multipart upload that fails or is cancelled is aborted before the error propagates.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast
from urllib.parse import urlencode

from botocore.exceptions import ClientError

from objmig.storage.errors import IntegrityError, SourceChangedError, StorageError
from objmig.storage.objects import (
    HeadResult,
    MiB,
    PartLayout,
    head_object,
    multipart_part_count,
    normalise_etag,
    resolve_part_layout,
    sse_c_params,
)
from objmig.storage.ratelimit import RateLimiter
from objmig.storage.restore import needs_restore
from objmig.storage.streaming import OrderedHasher, PartStream

# The aiobotocore stubs are a development dependency: import them for type checking only.
if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

log = logging.getLogger(__name__)

EncryptionMode = Literal["none", "SSE-S3", "SSE-KMS", "SSE-C"]

# Metadata entry marking objects (and, through CreateMultipartUpload, their uploads) as
# written by an objmig migration, so cleanup can recognise them.
MIGRATION_METADATA_KEY = "objmig-migration"
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

    def object_params(self) -> dict[str, Any]:
        """Parameters for PutObject, CreateMultipartUpload and CopyObject."""
        if self.mode == "SSE-S3":
            return {"ServerSideEncryption": "AES256"}
        if self.mode == "SSE-KMS":
            params: dict[str, Any] = {"ServerSideEncryption": "aws:kms"}
            if self.kms_key_id:
                params["SSEKMSKeyId"] = self.kms_key_id
            return params
        if self.mode == "SSE-C":
            return sse_c_params(self.sse_c_key)
        return {}

    def part_params(self) -> dict[str, Any]:
        """Parameters for UploadPart, UploadPartCopy and CompleteMultipartUpload (SSE-C
        must be repeated on every part; the others are set once on the upload)."""
        return sse_c_params(self.sse_c_key) if self.mode == "SSE-C" else {}

    @property
    def etag_is_md5(self) -> bool:
        """Whether S3 ETags of objects written this way are MD5s of their content."""
        return self.mode in ("none", "SSE-S3")


@dataclass(frozen=True)
class SourceObject:
    """The object to copy, as the scan saw it.

    `etag` and `size` are re-checked against a fresh HEAD before copying; empty `etag`
    skips the check. `part_sizes` empty means "find out" (HEAD ?partNumber=n).
    """

    bucket: str
    key: str
    version_id: str | None = None
    size: int | None = None
    etag: str = ""
    part_sizes: tuple[int, ...] = ()
    sse_c_key: bytes | None = field(default=None, repr=False)


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
    - `migration_tag`: stored as metadata `objmig-migration` on the target.
    - `on_upload_started(upload_id)`: awaited right after CreateMultipartUpload, so the
      engine can record the upload id (S3 shows no metadata for incomplete uploads; the
      recorded ids are how leftovers are recognised as objmig's).
    - `on_progress(nbytes)`: called as bytes move (per chunk streamed, per part copied).
    - `buffer_budget`: bytes of out-of-order parts kept for in-order SHA-256 hashing.
    - `verify_part_md5`: compare each streamed part's MD5 with the ETag the target returns
      (skipped automatically when the target encrypts with KMS or SSE-C).
    - `split_part_size`: part size for single-part sources above `max_single_part_size`
      (5 GiB, the PutObject / CopyObject limit; some stores accept bigger single PUTs),
      which must become multipart on the target.
    """

    storage_class: str | None = None
    encryption: Encryption = field(default_factory=Encryption)
    preserve_metadata: bool = True
    preserve_tags: bool = True
    part_concurrency: int = 4
    server_side: bool = False
    compute_sha256: bool = False
    rate_limiter: RateLimiter | None = None
    migration_tag: str | None = None
    extra_metadata: Mapping[str, str] = field(default_factory=dict)
    on_upload_started: Callable[[str], Awaitable[None]] | None = None
    on_progress: Callable[[int], None] | None = None
    buffer_budget: int = 256 * MiB
    verify_part_md5: bool = True
    split_part_size: int = 512 * MiB
    max_single_part_size: int = MAX_COPY_OBJECT_SIZE


@dataclass(frozen=True)
class CopyResult:
    """What was written.

    `etag_matches_source`: True/False when the comparison is meaningful (both ETags are
    content MD5s and the part layout was exact), None otherwise. `sha256` only with
    `compute_sha256` on the streamed path (a server-side copy never sees the bytes).
    """

    etag: str
    version_id: str | None
    bytes: int
    sha256: str | None
    checksums: Mapping[str, str]
    parts: int
    server_side: bool
    source_etag: str
    source_version_id: str | None
    etag_matches_source: bool | None
    upload_id: str | None = None


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
    src_client: S3Client,
    dst_client: S3Client,
    source: SourceObject,
    target: TargetObject,
    options: CopyOptions | None = None,
) -> CopyResult:
    """Copy `source` to `target` (see the module docstring for the two paths).

    Raises `SourceChangedError` when the source no longer matches the scan,
    `ObjectArchivedError` when it needs a restore first, `IntegrityError` when bytes written
    differ from bytes read, and the SDK's errors otherwise (map them with
    `objmig.storage.errors.classify`).
    """
    options = options or CopyOptions()
    plan = await _plan(src_client, source, options)
    if options.server_side:
        if plan.layout.multipart:
            return await _server_side_multipart(dst_client, source, target, options, plan)
        return await _server_side_single(dst_client, source, target, options, plan)
    if plan.layout.multipart:
        return await _streamed_multipart(src_client, dst_client, source, target, options, plan)
    return await _streamed_single(src_client, dst_client, source, target, options, plan)


async def _plan(client: S3Client, source: SourceObject, options: CopyOptions) -> _Plan:
    head = await head_object(
        client, source.bucket, source.key, source.version_id, sse_c=source.sse_c_key
    )
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

    count = multipart_part_count(head.etag)
    given = source.part_sizes
    if given and sum(given) == head.size and (count is None or count == len(given)):
        layout = PartLayout(tuple(given), "head" if count else "single", multipart=bool(count))
    else:
        layout = await resolve_part_layout(
            client, source.bucket, source.key, head.version_id, source.sse_c_key, head=head
        )
    if not layout.multipart and head.size > options.max_single_part_size:
        # Some stores (MinIO) accept single PUTs above AWS's 5 GiB; neither PutObject nor
        # CopyObject can write those to S3, so they become multipart (new ETag).
        layout = PartLayout(
            tuple(_split(head.size, options.split_part_size)), "split", multipart=True
        )

    metadata = dict(head.metadata) if options.preserve_metadata else {}
    metadata.update({k.lower(): v for k, v in options.extra_metadata.items()})
    if options.migration_tag:
        metadata[MIGRATION_METADATA_KEY] = options.migration_tag
    tags: dict[str, str] | None = None
    if options.preserve_tags:
        tags = await _get_tags(client, source.bucket, source.key, head.version_id)
    return _Plan(
        head=head,
        layout=layout,
        # Pin the version we HEADed, so every part reads the same version.
        version_id=head.version_id or source.version_id,
        metadata=metadata,
        metadata_changed=metadata != dict(head.metadata),
        tags=tags,
    )


async def _get_tags(
    client: S3Client, bucket: str, key: str, version_id: str | None
) -> dict[str, str]:
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        kwargs["VersionId"] = version_id
    response = await client.get_object_tagging(**kwargs)
    return {t["Key"]: t["Value"] for t in response.get("TagSet", [])}


def _object_params(target: TargetObject, options: CopyOptions, plan: _Plan) -> dict[str, Any]:
    """Parameters shared by PutObject and CreateMultipartUpload."""
    params: dict[str, Any] = {
        "Bucket": target.bucket,
        "Key": target.key,
        "Metadata": plan.metadata,
        **plan.head.content.as_params(),
        **options.encryption.object_params(),
    }
    if options.storage_class:
        params["StorageClass"] = options.storage_class
    if plan.tags:
        params["Tagging"] = urlencode(plan.tags)
    return params


def _copy_source(source: SourceObject, plan: _Plan) -> dict[str, str]:
    copy_source = {"Bucket": source.bucket, "Key": source.key}
    if plan.version_id:
        copy_source["VersionId"] = plan.version_id
    return copy_source


def _etag_comparable(plan: _Plan, options: CopyOptions) -> bool:
    # Both ETags must be content MD5s (no KMS / SSE-C on either side) and the layout
    # exact, otherwise different ETags prove nothing.
    return (
        plan.layout.exact
        and plan.head.encryption.mode in ("none", "SSE-S3")
        and options.encryption.etag_is_md5
    )


def _result(
    *,
    etag: str,
    version_id: str | None,
    plan: _Plan,
    options: CopyOptions,
    server_side: bool,
    sha256: str | None = None,
    checksums: Mapping[str, str] | None = None,
    upload_id: str | None = None,
) -> CopyResult:
    etag = normalise_etag(etag)
    return CopyResult(
        etag=etag,
        version_id=version_id if version_id and version_id != "null" else None,
        bytes=plan.head.size,
        sha256=sha256,
        checksums=dict(checksums or {}),
        parts=len(plan.layout.sizes) if plan.layout.multipart else 1,
        server_side=server_side,
        source_etag=plan.head.etag,
        source_version_id=plan.version_id,
        etag_matches_source=(etag == plan.head.etag) if _etag_comparable(plan, options) else None,
        upload_id=upload_id,
    )


def _checksums(response: Mapping[str, Any]) -> dict[str, str]:
    return {
        name.removeprefix("Checksum"): str(value)
        for name, value in response.items()
        if name.startswith("Checksum") and name != "ChecksumType" and value
    }


# ------------------------------------------------------------------------- server-side


async def _server_side_single(
    client: S3Client,
    source: SourceObject,
    target: TargetObject,
    options: CopyOptions,
    plan: _Plan,
) -> CopyResult:
    params: dict[str, Any] = {
        "Bucket": target.bucket,
        "Key": target.key,
        "CopySource": _copy_source(source, plan),
        "CopySourceIfMatch": f'"{plan.head.etag}"',
        **sse_c_params(source.sse_c_key, copy_source=True),
        **options.encryption.object_params(),
    }
    if options.storage_class:
        params["StorageClass"] = options.storage_class
    if plan.metadata_changed:
        # REPLACE drops everything not given, so content headers go along explicitly.
        params["MetadataDirective"] = "REPLACE"
        params["Metadata"] = plan.metadata
        params.update(plan.head.content.as_params())
    else:
        params["MetadataDirective"] = "COPY"
    if options.preserve_tags:
        params["TaggingDirective"] = "COPY"
    else:
        params["TaggingDirective"] = "REPLACE"
    response = await client.copy_object(**params)
    if options.on_progress is not None:
        options.on_progress(plan.head.size)
    result = response.get("CopyObjectResult", {})
    return _result(
        etag=result.get("ETag", ""),
        version_id=response.get("VersionId"),
        plan=plan,
        options=options,
        server_side=True,
        checksums=_checksums(dict(result)),
    )


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
    client: S3Client,
    source: SourceObject,
    target: TargetObject,
    options: CopyOptions,
    plan: _Plan,
) -> CopyResult:
    ranges = _ranges(plan.layout.sizes)
    whole = len(ranges) == 1

    async def copy_part(upload_id: str, index: int) -> str:
        first, last = ranges[index]
        params: dict[str, Any] = {
            "Bucket": target.bucket,
            "Key": target.key,
            "UploadId": upload_id,
            "PartNumber": index + 1,
            "CopySource": _copy_source(source, plan),
            "CopySourceIfMatch": f'"{plan.head.etag}"',
            **sse_c_params(source.sse_c_key, copy_source=True),
            **options.encryption.part_params(),
        }
        if not whole:
            # A one-part object (ETag "-1") is copied without a range, which also covers
            # the empty object, whose range "bytes=0--1" would be invalid.
            params["CopySourceRange"] = f"bytes={first}-{last}"
        response = await client.upload_part_copy(**params)
        if options.on_progress is not None:
            options.on_progress(last - first + 1)
        return response.get("CopyPartResult", {}).get("ETag", "")

    return await _multipart(client, target, options, plan, copy_part, len(ranges), server_side=True)


# ----------------------------------------------------------------------------- streamed


async def _streamed_single(
    src_client: S3Client,
    dst_client: S3Client,
    source: SourceObject,
    target: TargetObject,
    options: CopyOptions,
    plan: _Plan,
) -> CopyResult:
    digest = hashlib.sha256() if options.compute_sha256 else None
    get = await _get(src_client, source, plan, None)
    # `async with body` (not `as body`): aiobotocore's StreamingBody.__aenter__ returns the
    # raw aiohttp response, whose read() has no size argument.
    body = get["Body"]
    async with body:
        stream = PartStream(
            body,
            plan.head.size,
            on_chunk=digest.update if digest is not None else None,
            limiter=options.rate_limiter,
            on_progress=options.on_progress,
            describe=f"GET s3://{source.bucket}/{source.key}",
        )
        params = _object_params(target, options, plan)
        params["Body"] = stream
        params["ContentLength"] = plan.head.size
        try:
            response = await dst_client.put_object(**params)
        except Exception as exc:
            raise stream.error or exc from None
    if stream.sent != plan.head.size:
        raise IntegrityError(
            f"PUT s3://{target.bucket}/{target.key}: sent {stream.sent} of {plan.head.size} bytes"
        )
    _check_part_md5(stream, response, target, options, part=None)
    return _result(
        etag=response.get("ETag", ""),
        version_id=response.get("VersionId"),
        plan=plan,
        options=options,
        server_side=False,
        sha256=digest.hexdigest() if digest is not None else None,
        checksums=_checksums(dict(response)),
    )


async def _get(
    client: S3Client, source: SourceObject, plan: _Plan, byte_range: tuple[int, int] | None
) -> Any:
    params: dict[str, Any] = {
        "Bucket": source.bucket,
        "Key": source.key,
        # If-Match: a concurrent overwrite makes S3 answer 412 instead of other bytes.
        "IfMatch": f'"{plan.head.etag}"',
        **sse_c_params(source.sse_c_key),
    }
    if plan.version_id:
        params["VersionId"] = plan.version_id
    if byte_range is not None:
        params["Range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
    return await client.get_object(**params)


def _check_part_md5(
    stream: PartStream,
    response: Mapping[str, Any],
    target: TargetObject,
    options: CopyOptions,
    part: int | None,
) -> None:
    """Raise IntegrityError when the target's ETag for bytes we sent is not their MD5."""
    if not options.verify_part_md5 or not options.encryption.etag_is_md5:
        return
    # A bucket default of SSE-KMS makes ETags opaque even when we asked for nothing.
    if str(response.get("ServerSideEncryption", "")).startswith("aws:kms"):
        return
    if response.get("SSECustomerAlgorithm"):
        return
    returned = normalise_etag(response.get("ETag"))
    if len(returned) != 32:
        return  # not an MD5-shaped ETag: a store that does not use MD5 ETags
    if returned != stream.md5.hexdigest():
        which = f" part {part}" if part is not None else ""
        raise IntegrityError(
            f"s3://{target.bucket}/{target.key}{which}: target ETag {returned} is not the MD5 "
            f"{stream.md5.hexdigest()} of the bytes sent"
        )


async def _streamed_multipart(
    src_client: S3Client,
    dst_client: S3Client,
    source: SourceObject,
    target: TargetObject,
    options: CopyOptions,
    plan: _Plan,
) -> CopyResult:
    ranges = _ranges(plan.layout.sizes)
    concurrency = max(1, options.part_concurrency)
    hasher: OrderedHasher | None = None
    if options.compute_sha256:
        # Parts more than `window` ahead of the front would have to wait in memory; cap the
        # window so that wait stays within the budget (1 = strictly sequential streaming).
        largest = max(plan.layout.sizes) or 1
        window = max(1, min(concurrency, 1 + options.buffer_budget // largest))
        concurrency = window
        hasher = OrderedHasher(window)

    async def copy_part(upload_id: str, index: int) -> str:
        if hasher is not None:
            await hasher.admit(index)
        first, last = ranges[index]
        size = last - first + 1

        def feed(chunk: bytes) -> None:
            assert hasher is not None
            hasher.feed(index, chunk)

        try:
            get = await _get(src_client, source, plan, (first, last) if size else None)
            body = get["Body"]
            async with body:
                stream = PartStream(
                    body,
                    size,
                    on_chunk=feed if hasher is not None else None,
                    limiter=options.rate_limiter,
                    on_progress=options.on_progress,
                    describe=f"GET s3://{source.bucket}/{source.key} part {index + 1}",
                )
                try:
                    response = await dst_client.upload_part(
                        Bucket=target.bucket,
                        Key=target.key,
                        UploadId=upload_id,
                        PartNumber=index + 1,
                        Body=stream,  # type: ignore[arg-type]
                        ContentLength=size,
                        **options.encryption.part_params(),
                    )
                except Exception as exc:
                    raise stream.error or exc from None
            if stream.sent != size:
                raise IntegrityError(
                    f"s3://{target.bucket}/{target.key} part {index + 1}: "
                    f"sent {stream.sent} of {size} bytes"
                )
            _check_part_md5(stream, response, target, options, part=index + 1)
        except BaseException:
            if hasher is not None:
                hasher.discard(index)
            raise
        if hasher is not None:
            await hasher.finish_part(index)
        return response.get("ETag", "")

    return await _multipart(
        dst_client,
        target,
        options,
        plan,
        copy_part,
        len(ranges),
        server_side=False,
        concurrency=concurrency,
        sha256=hasher.hexdigest if hasher is not None else None,
    )


# --------------------------------------------------------------------- multipart frame


async def _multipart(
    client: S3Client,
    target: TargetObject,
    options: CopyOptions,
    plan: _Plan,
    copy_part: Callable[[str, int], Awaitable[str]],
    count: int,
    *,
    server_side: bool,
    concurrency: int | None = None,
    sha256: Callable[[], str] | None = None,
) -> CopyResult:
    """Create an upload, run `copy_part` for every part, complete it; abort on any failure
    (cancellation included) before re-raising."""
    params = _object_params(target, options, plan)
    created = await client.create_multipart_upload(**params)
    upload_id = created["UploadId"]
    try:
        if options.on_upload_started is not None:
            await options.on_upload_started(upload_id)
        etags = await run_bounded(
            count,
            concurrency or max(1, options.part_concurrency),
            lambda index: copy_part(upload_id, index),
        )
        response = await client.complete_multipart_upload(
            Bucket=target.bucket,
            Key=target.key,
            UploadId=upload_id,
            MultipartUpload={
                "Parts": [
                    {"ETag": etag, "PartNumber": number}
                    for number, etag in enumerate(etags, start=1)
                ]
            },
            **options.encryption.part_params(),
        )
    except BaseException:
        await _abort_quietly(client, target, upload_id)
        raise
    return _result(
        etag=response.get("ETag", ""),
        version_id=response.get("VersionId"),
        plan=plan,
        options=options,
        server_side=server_side,
        sha256=sha256() if sha256 is not None else None,
        checksums=_checksums(dict(response)),
        upload_id=upload_id,
    )


async def _abort_quietly(client: S3Client, target: TargetObject, upload_id: str) -> None:
    """Abort an upload after a failure; never raise over the original error.

    Shielded, so a second cancellation (e.g. a worker shutting down) does not leave the
    upload behind; time-limited, so a dead store cannot hang the error path.
    """

    async def abort() -> None:
        try:
            await asyncio.wait_for(
                client.abort_multipart_upload(
                    Bucket=target.bucket, Key=target.key, UploadId=upload_id
                ),
                ABORT_TIMEOUT,
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
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

    Indexes are handed out in order, which the ordered hasher relies on. The first failure
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
