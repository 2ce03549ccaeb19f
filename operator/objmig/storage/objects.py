"""Reading object state: listing, HEAD, part layouts, SHA-256; deleting; multipart cleanup.

Every function takes an open client (see `objmig.storage.endpoint.open_client`) and returns
small frozen dataclasses, so the engine never handles raw SDK dictionaries.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import math
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from objmig.storage.errors import S3ResponseError, TruncatedBodyError
from objmig.storage.restore import RestoreStatus

# The aiobotocore stubs are a development dependency: import them for type checking only.
if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

    from objmig.storage.s3http import S3HttpClient

log = logging.getLogger(__name__)

MiB = 1024 * 1024
# Chunk size when streaming bodies: large enough that per-chunk Python overhead is noise,
# small enough that many streams in flight stay cheap.
STREAM_CHUNK = 1 * MiB
# DeleteObjects accepts at most 1000 keys per request.
DELETE_BATCH = 1000

_MULTIPART_ETAG = re.compile(r"^[0-9a-fA-F]{32}-(\d+)$")
#: The additional checksums S3 can keep for an object, strongest first: when both sides of
#: a copy have several, the first they share is compared.
CHECKSUM_ALGORITHMS = ("SHA256", "SHA1", "CRC64NVME", "CRC32C", "CRC32")


def normalise_etag(etag: str | None) -> str:
    """An ETag without surrounding quotes (S3 quotes them; listings sometimes do not)."""
    if not etag:
        return ""
    etag = etag.strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    return etag.strip('"')


def multipart_part_count(etag: str) -> int | None:
    """The part count encoded in a multipart ETag (`<md5>-<n>`), or None for a plain one."""
    match = _MULTIPART_ETAG.match(normalise_etag(etag))
    return int(match.group(1)) if match else None


def version_or_none(version_id: str | None) -> str | None:
    """A version id worth sending: None for absent and for "null"."""
    # Unversioned buckets report the literal version "null"; passing it back is legal on
    # AWS but rejected by some stores, and it carries no information.
    return None if not version_id or version_id == "null" else version_id


def whole_seconds(moment: datetime) -> datetime:
    """A timestamp truncated to whole seconds, in UTC.

    HEAD reports Last-Modified as an HTTP date (whole seconds) while listings carry
    milliseconds on some stores (MinIO); truncating both makes a listed object and a later
    HEAD of the same, unchanged object compare equal.
    """
    return moment.astimezone(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class ObjectInfo:
    """One object (or one version of it) as a listing reports it."""

    key: str
    version_id: str | None
    size: int
    etag: str
    last_modified: datetime
    storage_class: str = "STANDARD"
    is_latest: bool = True


async def list_objects(
    client: S3Client,
    bucket: str,
    prefix: str = "",
    *,
    versions: bool = False,
    pin_versions: bool = False,
    start_after: str | None = None,
    page_size: int = 1000,
) -> AsyncIterator[ObjectInfo]:
    """Yield the objects under `prefix`, in key order, one page at a time.

    - default: ListObjectsV2, latest objects, `version_id` None;
    - `versions=True`: ListObjectVersions, every version (newest first per key), delete
      markers skipped;
    - `pin_versions=True`: ListObjectVersions, only the latest version of each key (keys
      whose latest version is a delete marker are skipped), with its version id, so the
      copy can pin exactly the version that was scanned.

    `start_after` resumes a scan after a key (exclusive).
    """
    if not versions and not pin_versions:
        paginator = client.get_paginator("list_objects_v2")
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        if start_after:
            kwargs["StartAfter"] = start_after
        async for page in paginator.paginate(**kwargs, PaginationConfig={"PageSize": page_size}):
            for item in page.get("Contents", []):
                yield ObjectInfo(
                    key=item["Key"],
                    version_id=None,
                    size=int(item.get("Size", 0)),
                    etag=normalise_etag(item.get("ETag")),
                    last_modified=whole_seconds(item["LastModified"]),
                    storage_class=item.get("StorageClass") or "STANDARD",
                )
        return

    vpaginator = client.get_paginator("list_object_versions")
    vkwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    if start_after:
        # KeyMarker is exclusive: listing resumes with the first key after it.
        vkwargs["KeyMarker"] = start_after
    async for vpage in vpaginator.paginate(**vkwargs, PaginationConfig={"PageSize": page_size}):
        # Delete markers are skipped: a key whose latest version is a delete marker has no
        # version with IsLatest among `Versions`, so it drops out of pinned listings.
        for version in vpage.get("Versions", []):
            latest = bool(version.get("IsLatest", False))
            if pin_versions and not versions and not latest:
                continue
            yield ObjectInfo(
                key=version["Key"],
                version_id=version_or_none(version.get("VersionId")),
                size=int(version.get("Size", 0)),
                etag=normalise_etag(version.get("ETag")),
                last_modified=whole_seconds(version["LastModified"]),
                storage_class=version.get("StorageClass") or "STANDARD",
                is_latest=latest,
            )


@dataclass(frozen=True)
class ContentHeaders:
    """The HTTP representation headers of an object, copied along with it."""

    content_type: str | None = None
    cache_control: str | None = None
    content_disposition: str | None = None
    content_encoding: str | None = None
    content_language: str | None = None
    expires: datetime | None = None
    website_redirect_location: str | None = None

    def as_params(self) -> dict[str, Any]:
        """PutObject / CreateMultipartUpload / CopyObject parameters for these headers."""
        pairs: dict[str, Any] = {
            "ContentType": self.content_type,
            "CacheControl": self.cache_control,
            "ContentDisposition": self.content_disposition,
            "ContentEncoding": self.content_encoding,
            "ContentLanguage": self.content_language,
            "Expires": self.expires,
            "WebsiteRedirectLocation": self.website_redirect_location,
        }
        return {name: value for name, value in pairs.items() if value is not None}


@dataclass(frozen=True)
class EncryptionInfo:
    """Server-side encryption as HEAD reports it."""

    algorithm: str | None = None  # "AES256" (SSE-S3), "aws:kms", "aws:kms:dsse"
    kms_key_id: str | None = None
    bucket_key_enabled: bool | None = None
    customer_algorithm: str | None = None  # "AES256" for SSE-C
    customer_key_md5: str | None = None

    @property
    def mode(self) -> str:
        """`none`, `SSE-S3`, `SSE-KMS` or `SSE-C`, the spec's vocabulary."""
        if self.customer_algorithm:
            return "SSE-C"
        if self.algorithm and self.algorithm.startswith("aws:kms"):
            return "SSE-KMS"
        if self.algorithm == "AES256":
            return "SSE-S3"
        return "none"


@dataclass(frozen=True)
class HeadResult:
    """Everything HEAD says about an object (or, with `part_number`, about one part)."""

    etag: str
    size: int
    last_modified: datetime
    version_id: str | None
    storage_class: str = "STANDARD"
    restore: RestoreStatus | None = None
    archive_status: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    content: ContentHeaders = field(default_factory=ContentHeaders)
    parts_count: int | None = None
    #: Additional checksums (algorithm -> base64 value, as sent), shown only to requests
    #: with `x-amz-checksum-mode: ENABLED`; `checksum_type` FULL_OBJECT or COMPOSITE.
    checksums: Mapping[str, str] = field(default_factory=dict)
    checksum_type: str | None = None
    encryption: EncryptionInfo = field(default_factory=EncryptionInfo)
    tag_count: int = 0

    @property
    def is_multipart(self) -> bool:
        return multipart_part_count(self.etag) is not None

    def whole_checksums(self) -> dict[str, str]:
        """The additional checksums of the whole object's bytes, as ledger labels (see
        `checksum_label`) by algorithm.

        A composite checksum (a checksum of the parts' checksums: type COMPOSITE, value
        "...-N") depends on where the parts were cut, so it says nothing about the bytes
        of an object cut otherwise: those are left out.
        """
        if self.checksum_type == "COMPOSITE":
            return {}
        return {
            algorithm: checksum_label(algorithm, value)
            for algorithm, value in self.checksums.items()
            if algorithm in CHECKSUM_ALGORITHMS and "-" not in value
        }


def checksum_label(algorithm: str, value: str) -> str:
    """How the ledger records a checksum, whoever computed it: ``sha256:<hex>``.

    `value` is the base64 text S3 sends, decoded so that equal digests give equal labels
    however they were encoded (and match the SHA-256 objmig computes itself).
    """
    try:
        return f"{algorithm.lower()}:{base64.b64decode(value, validate=True).hex()}"
    except (binascii.Error, ValueError):
        return f"{algorithm.lower()}:{value}"


@dataclass(frozen=True)
class PartLayout:
    """Part sizes of an object and how we learned them.

    `source`: "single" (not multipart), "head" (HEAD ?partNumber=n, exact), "uniform"
    (equal parts read from HEAD of part 1 and the part count; the copy checks the resulting
    ETag and asks for every part's size if it differs), "attributes"
    (GetObjectAttributes ObjectParts, exact), "resized" (the copy's own part size, as
    `copy.preservePartBoundaries: false` asks; another ETag), "guess" (equal parts
    inferred from the ETag's part count: the store answered neither; the copy may then get
    another ETag, which verification reports) or "split" (a single-part object too big for
    one PUT or CopyObject, cut into parts by the copy; its ETag cannot be kept).
    """

    sizes: tuple[int, ...]
    source: Literal["single", "head", "uniform", "attributes", "guess", "split", "resized"]
    multipart: bool

    @property
    def exact(self) -> bool:
        return self.source not in ("guess", "split", "resized")


async def resolve_part_layout(
    client: S3HttpClient,
    bucket: str,
    key: str,
    version_id: str | None = None,
    sse_c: bytes | None = None,
    *,
    head: HeadResult | None = None,
    concurrency: int = 8,
) -> PartLayout:
    """Find the part sizes of an object so a copy can reproduce them (and its ETag).

    HEAD with `PartNumber` is the primary way: AWS, MinIO and moto answer it with the
    part's Content-Length and `x-amz-mp-parts-count`. GetObjectAttributes(ObjectParts) is
    the fallback for stores without it (AWS only lists part sizes there for objects
    uploaded with additional checksums), and an equal-parts guess the last resort.
    """
    if head is None:
        head = await client.head(bucket, key, version_id=version_id, sse_c=sse_c)
    count = multipart_part_count(head.etag)
    if count is None:
        return PartLayout((head.size,), "single", multipart=False)

    try:
        first: HeadResult | None = await client.head(
            bucket, key, version_id=version_id, part_number=1, sse_c=sse_c
        )
    except S3ResponseError as exc:
        if not _unsupported(exc):
            raise
        first = None
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
        if not _unsupported(exc):
            raise
        log.debug(
            "GetObjectAttributes(ObjectParts) unavailable for s3://%s/%s: %s", bucket, key, exc
        )
        attributes = None
    if attributes and sum(attributes) == head.size:
        return PartLayout(tuple(attributes), "attributes", multipart=True)

    log.warning(
        "s3://%s/%s: the store reports no part sizes; assuming %d equal parts", bucket, key, count
    )
    return PartLayout(tuple(guess_part_sizes(head.size, count)), "guess", multipart=True)


async def part_layout(
    client: S3HttpClient,
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


def _unsupported(exc: S3ResponseError) -> bool:
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


async def object_sha256(
    client: S3HttpClient,
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


@dataclass(frozen=True)
class DeleteResult:
    """What DeleteObjects said about one (key, version)."""

    key: str
    version_id: str | None
    deleted: bool
    error_code: str | None = None
    error_message: str | None = None


async def delete_objects(
    client: S3Client,
    bucket: str,
    objects: Sequence[tuple[str, str | None]],
) -> list[DeleteResult]:
    """Delete (key, version_id) pairs in batches of at most 1000; one result per pair.

    Deleting a key that is already gone counts as deleted (S3 says so too), which keeps
    re-runs idempotent. A None version deletes the latest (adding a delete marker on
    versioned buckets); pass the exact version id to remove that version for good.
    """
    results: list[DeleteResult] = []
    for start in range(0, len(objects), DELETE_BATCH):
        batch = objects[start : start + DELETE_BATCH]
        entries: list[dict[str, str]] = []
        for key, version_id in batch:
            entry = {"Key": key}
            if version_or_none(version_id):
                entry["VersionId"] = str(version_id)
            entries.append(entry)
        response = await client.delete_objects(
            Bucket=bucket,
            Delete={"Objects": entries, "Quiet": False},  # type: ignore[typeddict-item]
        )
        failed = {
            (e.get("Key", ""), version_or_none(e.get("VersionId"))): e
            for e in response.get("Errors", [])
        }
        for key, version_id in batch:
            ident = (key, version_or_none(version_id))
            error = failed.get(ident)
            if error is not None:
                results.append(
                    DeleteResult(
                        key,
                        version_or_none(version_id),
                        deleted=False,
                        error_code=error.get("Code"),
                        error_message=error.get("Message"),
                    )
                )
            else:
                # Stores differ in echoing version ids for unversioned deletes; absence
                # from Errors is what counts.
                results.append(DeleteResult(key, version_or_none(version_id), deleted=True))
    return results


@dataclass(frozen=True)
class MultipartUploadInfo:
    """An incomplete multipart upload."""

    key: str
    upload_id: str
    initiated: datetime | None
    storage_class: str | None = None


async def list_multipart_uploads(
    client: S3Client, bucket: str, prefix: str = ""
) -> AsyncIterator[MultipartUploadInfo]:
    """Yield the incomplete multipart uploads under `prefix`.

    S3 shows no metadata for incomplete uploads, only key, upload id and initiation time,
    so telling objmig's uploads from others' needs the upload ids objmig recorded (see
    `CopyOptions.on_upload_started`) or the target prefix and the migration's start time.

    MinIO only honours a prefix that is a whole object name (a partial prefix lists
    nothing), so when a prefixed listing comes back empty we list the bucket's uploads
    unfiltered and filter here; incomplete uploads are few, so that stays cheap.
    """
    found = False
    async for upload in _list_uploads(client, bucket, prefix):
        found = True
        yield upload
    if found or not prefix:
        return
    async for upload in _list_uploads(client, bucket, ""):
        if upload.key.startswith(prefix):
            yield upload


async def _list_uploads(
    client: S3Client, bucket: str, prefix: str
) -> AsyncIterator[MultipartUploadInfo]:
    paginator = client.get_paginator("list_multipart_uploads")
    async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for upload in page.get("Uploads", []):
            yield MultipartUploadInfo(
                key=upload.get("Key", ""),
                upload_id=upload.get("UploadId", ""),
                initiated=upload.get("Initiated"),
                storage_class=upload.get("StorageClass"),
            )


async def abort_multipart_upload(client: S3Client, bucket: str, key: str, upload_id: str) -> bool:
    """Abort an upload. An upload already gone is not an error.

    Returns False when the store says the upload did not exist (NoSuchUpload); MinIO
    answers success even then, so True only means "not known to be gone already".
    """
    try:
        await client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except client.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchUpload", "404"):
            return False
        raise
    return True
