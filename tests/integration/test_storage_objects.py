"""Listing, HEAD, part layouts, SHA-256, deletes and multipart-upload cleanup against real
servers (moto, and MinIO where built)."""

from __future__ import annotations

import hashlib

import pytest

from objmig.storage import (
    abort_multipart_upload,
    delete_objects,
    list_multipart_uploads,
    list_objects,
    object_sha256,
    part_layout,
)
from objmig.storage.parts import resolve_part_layout
from objmig.storage.sdk import open_client
from tests.fixtures.s3 import S3Backend, S3Seeder
from tests.support.s3proxy import S3FaultProxy


async def test_list_latest_objects_under_a_prefix_in_key_order_across_pages(
    backend_client, backend_seed: S3Seeder
) -> None:
    bucket = await backend_seed.bucket()
    for key in ["p/c", "p/a", "p/b/1", "q/x", "p/d"]:
        await backend_seed.put_object(bucket, key, len(key), storage_class=None)

    listed = [o async for o in list_objects(backend_client, bucket, "p/", page_size=2)]
    resumed = [o.key async for o in list_objects(backend_client, bucket, "p/", start_after="p/b/1")]

    assert [o.key for o in listed] == ["p/a", "p/b/1", "p/c", "p/d"]
    assert [o.size for o in listed] == [3, 5, 3, 3]
    assert all(o.version_id is None and o.storage_class == "STANDARD" for o in listed)
    assert all(o.last_modified.tzinfo is not None for o in listed)
    assert all(len(o.etag) == 32 and '"' not in o.etag for o in listed)
    assert resumed == ["p/c", "p/d"]


async def test_list_versions_yields_every_version_and_skips_delete_markers(
    backend_client, backend_seed: S3Seeder
) -> None:
    bucket = await backend_seed.bucket(versioned=True)
    v1 = await backend_seed.put_object(bucket, "a", b"1")
    v2 = await backend_seed.put_object(bucket, "a", b"22")
    gone = await backend_seed.put_object(bucket, "b", b"333")
    await backend_client.delete_object(Bucket=bucket, Key="b")  # a delete marker on top
    only = await backend_seed.put_object(bucket, "c", b"4444")

    every = [o async for o in list_objects(backend_client, bucket, versions=True, page_size=2)]
    pinned = [o async for o in list_objects(backend_client, bucket, pin_versions=True)]
    latest = [o async for o in list_objects(backend_client, bucket)]

    assert {(o.key, o.version_id) for o in every} == {
        ("a", v1.version_id),
        ("a", v2.version_id),
        ("b", gone.version_id),
        ("c", only.version_id),
    }
    assert {(o.key, o.is_latest) for o in every if o.key == "a"} == {("a", True), ("a", False)}
    assert [(o.key, o.version_id, o.size) for o in pinned] == [
        ("a", v2.version_id, 2),
        ("c", only.version_id, 4),
    ]
    assert [o.key for o in latest] == ["a", "c"]


async def test_head_reports_metadata_headers_class_and_version(
    backend_http, backend_seed: S3Seeder, s3_backend: S3Backend
) -> None:
    bucket = await backend_seed.bucket(versioned=True)
    obj = await backend_seed.put_object(
        bucket,
        "k",
        77,
        metadata={"Storage-Version": "2"},
        storage_class=s3_backend.other_storage_class,
        ContentType="text/csv",
        ContentLanguage="en",
    )

    head = await backend_http.head(bucket, "k", version_id=obj.version_id)

    assert head.size == 77
    assert head.etag == obj.etag
    assert head.version_id == obj.version_id
    assert head.metadata == {"storage-version": "2"}
    assert head.content.content_type == "text/csv"
    assert head.content.content_language == "en"
    assert head.storage_class == s3_backend.other_storage_class
    assert head.last_modified.tzinfo is not None
    assert not head.is_multipart


async def test_part_layout_of_single_and_multipart_objects(
    backend_http, backend_seed: S3Seeder, s3_backend: S3Backend
) -> None:
    bucket = await backend_seed.bucket()
    m = max(s3_backend.min_part_size, 4096)
    sizes = [m, m, m, 1234]
    multi = await backend_seed.put_multipart(bucket, "multi", sizes)
    await backend_seed.put_object(bucket, "single", 4321)

    layout = await resolve_part_layout(backend_http, bucket, "multi")

    assert await part_layout(backend_http, bucket, "single") == [4321]
    assert list(layout.sizes) == sizes
    # MinIO lists every part's size in one GetObjectAttributes; moto lists none there
    # (like AWS for objects uploaded without checksums), so each part is HEADed.
    assert layout.source == ("attributes" if s3_backend.name == "minio" else "head")
    assert layout.exact
    assert multi.etag.endswith("-4")


async def test_object_sha256_streams_the_whole_object(
    backend_http, backend_seed: S3Seeder, s3_backend: S3Backend
) -> None:
    bucket = await backend_seed.bucket()
    m = max(s3_backend.min_part_size, 4096)
    obj = await backend_seed.put_multipart(bucket, "k", [m, m + 1, 3])

    digest, size = await object_sha256(backend_http, bucket, "k", if_match=obj.etag)

    assert (digest, size) == (obj.sha256, obj.size)
    assert digest == hashlib.sha256(obj.data or b"").hexdigest()


async def test_delete_objects_batches_by_1000_and_reports_each_key(
    s3_seed: S3Seeder, s3_proxy: S3FaultProxy, proxy_endpoint
) -> None:
    bucket = await s3_seed.bucket()
    real = [f"k{i}" for i in range(3)]
    for key in real:
        await s3_seed.put_object(bucket, key, 1)
    # Deleting a missing key succeeds in S3, which keeps re-runs idempotent; it also lets
    # us exceed one batch without writing a thousand objects.
    keys = real + [f"missing-{i}" for i in range(1200)]

    async with open_client(proxy_endpoint) as client:
        results = await delete_objects(client, bucket, [(k, None) for k in keys])
        left = [o async for o in list_objects(client, bucket)]

    assert [r.key for r in results] == keys
    assert all(r.deleted for r in results)
    assert left == []
    assert len([r for r in s3_proxy.seen("POST") if "delete" in r.query]) == 2


async def test_delete_of_an_exact_version_keeps_the_others(
    backend_client, backend_seed: S3Seeder
) -> None:
    bucket = await backend_seed.bucket(versioned=True)
    old = await backend_seed.put_object(bucket, "k", b"old")
    new = await backend_seed.put_object(bucket, "k", b"new")

    results = await delete_objects(backend_client, bucket, [("k", old.version_id)])
    versions = [o async for o in list_objects(backend_client, bucket, versions=True)]

    assert results[0].deleted
    assert results[0].version_id == old.version_id
    assert [(o.key, o.version_id) for o in versions] == [("k", new.version_id)]


async def test_incomplete_uploads_are_listed_and_aborted_idempotently(
    backend_client, backend_seed: S3Seeder, s3_backend: S3Backend
) -> None:
    bucket = await backend_seed.bucket()
    created = await backend_client.create_multipart_upload(Bucket=bucket, Key="x/left-over")
    await backend_client.create_multipart_upload(Bucket=bucket, Key="y/other")

    listed = [u async for u in list_multipart_uploads(backend_client, bucket, "x/")]
    first = await abort_multipart_upload(backend_client, bucket, "x/left-over", created["UploadId"])
    second = await abort_multipart_upload(
        backend_client, bucket, "x/left-over", created["UploadId"]
    )
    after = [u async for u in list_multipart_uploads(backend_client, bucket, "x/")]

    assert [(u.key, u.upload_id) for u in listed] == [("x/left-over", created["UploadId"])]
    assert listed[0].initiated is not None
    assert first is True
    # Aborting twice is not an error; moto says the upload is gone, MinIO says nothing.
    assert second is (s3_backend.name == "minio")
    assert after == []


@pytest.mark.parametrize("page_size", [1, 1000])
async def test_listing_an_empty_prefix_yields_nothing(s3_client, s3_seed, page_size) -> None:
    bucket = await s3_seed.bucket()
    assert [o async for o in list_objects(s3_client, bucket, "none/", page_size=page_size)] == []


async def test_listing_and_head_agree_on_last_modified(
    backend_client, backend_http, backend_seed
) -> None:
    # MinIO lists milliseconds but HEAD says whole seconds; both are truncated alike, so an
    # unchanged object never looks changed between scan and copy.
    bucket = await backend_seed.bucket(versioned=True)
    await backend_seed.put_object(bucket, "k", 5)

    (listed,) = [o async for o in list_objects(backend_client, bucket)]
    (pinned,) = [o async for o in list_objects(backend_client, bucket, pin_versions=True)]
    head = await backend_http.head(bucket, "k")

    assert listed.last_modified == pinned.last_modified == head.last_modified
    assert head.last_modified.microsecond == 0
