"""The bucket-level calls made through the SDK (`Store.sdk()`): versioned and plain
listings by paginator, deletes, and incomplete multipart uploads.

Every listing asks for URL-encoded keys (botocore does so for the object listings by
itself), and keys an XML request body cannot carry are deleted one by one.

They are rare per object (the scan of a versioned bucket, cleanups, leftover sweeps), so
they stay on aioboto3; every function takes an open client and returns the value types of
`objmig.storage.types`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from objmig.storage.s3wire import listed_key, xml_can_carry
from objmig.storage.types import (
    DeleteResult,
    MultipartUploadInfo,
    ObjectInfo,
    normalise_etag,
    version_or_none,
    whole_seconds,
)

# The aiobotocore stubs are a development dependency: import them for type checking only.
if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

# DeleteObjects accepts at most 1000 keys per request.
DELETE_BATCH = 1000


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
    results: dict[tuple[str, str | None], DeleteResult] = {}
    # Keys an XML body cannot carry go one by one, in the URL; sent in DeleteObjects, a
    # carriage return would arrive as a line feed and delete another key.
    in_body = [entry for entry in objects if xml_can_carry(entry[0])]
    for key, version_id in objects:
        if not xml_can_carry(key):
            results[(key, version_or_none(version_id))] = await _delete_one(
                client, bucket, key, version_id
            )
    for start in range(0, len(in_body), DELETE_BATCH):
        batch = in_body[start : start + DELETE_BATCH]
        entries: list[dict[str, str]] = []
        for key, version_id in batch:
            entry = {"Key": key}
            if version_or_none(version_id):
                entry["VersionId"] = str(version_id)
            entries.append(entry)
        # Quiet: the answer lists only the failures, not every key again.
        response = await client.delete_objects(
            Bucket=bucket,
            Delete={"Objects": entries, "Quiet": True},  # type: ignore[typeddict-item]
        )
        failed = {
            (e.get("Key", ""), version_or_none(e.get("VersionId"))): e
            for e in response.get("Errors", [])
        }
        for key, version_id in batch:
            ident = (key, version_or_none(version_id))
            error = failed.get(ident)
            if error is not None:
                results[ident] = DeleteResult(
                    key,
                    version_or_none(version_id),
                    deleted=False,
                    error_code=error.get("Code"),
                    error_message=error.get("Message"),
                )
            else:
                # Stores differ in echoing version ids for unversioned deletes; absence
                # from Errors is what counts.
                results[ident] = DeleteResult(key, version_or_none(version_id), deleted=True)
    return [results[(key, version_or_none(version_id))] for key, version_id in objects]


async def _delete_one(
    client: S3Client, bucket: str, key: str, version_id: str | None
) -> DeleteResult:
    """DeleteObject for one key (gone already counts as deleted, as in DeleteObjects)."""
    version = version_or_none(version_id)
    try:
        if version:
            await client.delete_object(Bucket=bucket, Key=key, VersionId=version)
        else:
            await client.delete_object(Bucket=bucket, Key=key)
    except client.exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        return DeleteResult(
            key,
            version,
            deleted=False,
            error_code=error.get("Code"),
            error_message=error.get("Message"),
        )
    return DeleteResult(key, version, deleted=True)


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
    """ListMultipartUploads, page by page, keys URL-encoded.

    botocore encodes and decodes the object listings by itself, not this one; its
    paginator would also hand an encoded NextKeyMarker back as it came, so the pages are
    followed here, with the markers decoded.
    """
    key_marker = upload_marker = ""
    while True:
        if key_marker or upload_marker:
            page = await client.list_multipart_uploads(
                Bucket=bucket,
                Prefix=prefix,
                EncodingType="url",
                KeyMarker=key_marker,
                UploadIdMarker=upload_marker,
            )
        else:
            page = await client.list_multipart_uploads(
                Bucket=bucket, Prefix=prefix, EncodingType="url"
            )
        encoded = page.get("EncodingType") == "url"
        for upload in page.get("Uploads", []):
            yield MultipartUploadInfo(
                key=listed_key(upload.get("Key", ""), encoded=encoded),
                upload_id=upload.get("UploadId", ""),
                initiated=upload.get("Initiated"),
                storage_class=upload.get("StorageClass"),
            )
        if not page.get("IsTruncated"):
            return
        key_marker = listed_key(page.get("NextKeyMarker", ""), encoded=encoded)
        upload_marker = page.get("NextUploadIdMarker", "")
        if not key_marker and not upload_marker:
            return


async def upload_bytes(client: S3Client, bucket: str, key: str, upload_id: str) -> int:
    """The bytes an incomplete upload holds: the sizes of its parts (ListParts); 0 for an
    upload the store no longer knows."""
    total = 0
    marker = 0
    while True:
        try:
            page = await client.list_parts(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumberMarker=marker
            )
        except client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchUpload", "404"):
                return total
            raise
        total += sum(int(part.get("Size", 0)) for part in page.get("Parts", []))
        marker = int(page.get("NextPartNumberMarker") or 0)
        if not page.get("IsTruncated") or not marker:
            return total


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
