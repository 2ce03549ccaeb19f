"""Archived objects on moto: a RestoreObject request is made (once), the x-amz-restore
header is read (moto restores at once; the proxy makes it say "ongoing" until the test ends it),
Expedited retrieval of DEEP_ARCHIVE is refused before S3 sees it, and a restored object
copies."""

from __future__ import annotations

import pytest

from objmig.storage import (
    CopyOptions,
    SourceObject,
    TargetObject,
    copy_object,
    needs_restore,
    request_restore,
)
from objmig.storage.errors import RestoreNotAllowedError, classify
from objmig.storage.sdk import open_client
from tests.fixtures.s3 import S3Seeder
from tests.support.s3proxy import Fail, RewriteHeaders, S3FaultProxy


async def test_glacier_object_needs_restore_until_restored(s3_client, s3_http, s3_seed: S3Seeder):
    bucket = await s3_seed.bucket()
    await s3_seed.put_object(bucket, "cold", 100, storage_class="GLACIER")

    before = await s3_http.head(bucket, "cold")
    started = await request_restore(
        s3_client, bucket, "cold", None, "Bulk", 3, storage_class=before.storage_class
    )
    after = await s3_http.head(bucket, "cold")
    again = await request_restore(s3_client, bucket, "cold", None, "Bulk", 3)

    assert before.storage_class == "GLACIER"
    assert before.restore is None
    assert needs_restore(before.storage_class, before.restore)
    assert started is True
    assert after.restore is not None
    assert after.restore.ongoing is False
    assert after.restore.expiry is not None
    assert not needs_restore(after.storage_class, after.restore)
    assert again is False  # already restored: S3 answers 200, which is success too


async def test_glacier_instant_retrieval_needs_no_restore(s3_http, s3_seed: S3Seeder):
    bucket = await s3_seed.bucket()
    await s3_seed.put_object(bucket, "ir", 100, storage_class="GLACIER_IR")

    head = await s3_http.head(bucket, "ir")

    assert head.storage_class == "GLACIER_IR"
    assert not needs_restore(head.storage_class, head.restore)


async def test_ongoing_restore_reported_by_the_header_keeps_the_object_waiting(
    s3_seed: S3Seeder, s3_proxy: S3FaultProxy, proxy_endpoint, proxy_http
) -> None:
    bucket = await s3_seed.bucket()
    await s3_seed.put_object(bucket, "cold", 100, storage_class="DEEP_ARCHIVE")
    # "Ongoing" until the test says the restore is done (removes the rule), not for a time.
    restoring = s3_proxy.add_rule(
        RewriteHeaders({"x-amz-restore": 'ongoing-request="true"'}), method="HEAD"
    )

    async with open_client(proxy_endpoint) as client:
        await request_restore(client, bucket, "cold", None, "Standard", 1)
        ongoing = await proxy_http.head(bucket, "cold")
        s3_proxy.remove_rule(restoring)
        done = await proxy_http.head(bucket, "cold")

    assert ongoing.restore is not None
    assert ongoing.restore.ongoing
    assert needs_restore(ongoing.storage_class, ongoing.restore)
    assert done.restore is not None
    assert not done.restore.ongoing
    assert not needs_restore(done.storage_class, done.restore)


async def test_expedited_deep_archive_restore_is_refused_before_calling_s3(
    s3_seed: S3Seeder, s3_proxy: S3FaultProxy, proxy_endpoint
) -> None:
    bucket = await s3_seed.bucket()
    await s3_seed.put_object(bucket, "deep", 10, storage_class="DEEP_ARCHIVE")

    async with open_client(proxy_endpoint) as client:
        with pytest.raises(RestoreNotAllowedError) as failure:
            await request_restore(
                client, bucket, "deep", None, "Expedited", 1, storage_class="DEEP_ARCHIVE"
            )

    assert "Expedited" in str(failure.value)
    assert classify(failure.value).kind == "permanent"
    assert s3_proxy.seen("POST") == []


async def test_restore_already_in_progress_is_success(
    s3_seed: S3Seeder, s3_proxy: S3FaultProxy, proxy_endpoint
) -> None:
    bucket = await s3_seed.bucket()
    await s3_seed.put_object(bucket, "cold", 10, storage_class="GLACIER")
    s3_proxy.add_rule(
        Fail(409, "RestoreAlreadyInProgress", "Object restore is already in progress"),
        method="POST",
        query={"restore": None},
    )

    async with open_client(proxy_endpoint) as client:
        started = await request_restore(client, bucket, "cold", None, "Bulk", 1)

    assert started is False


@pytest.mark.parametrize("server_side", [True, False], ids=["server-side", "streamed"])
async def test_restored_object_copies(
    s3_client, s3_http, s3_seed: S3Seeder, server_side: bool
) -> None:
    src, dst = await s3_seed.bucket(), await s3_seed.bucket()
    obj = await s3_seed.put_object(src, "cold", 1000, storage_class="GLACIER")
    await request_restore(s3_client, src, "cold", None, "Bulk", 1)

    result = await copy_object(
        s3_http,
        s3_http,
        SourceObject(src, "cold", etag=obj.etag),
        TargetObject(dst, "warm"),
        CopyOptions(server_side=server_side, storage_class="STANDARD"),
    )

    assert result.etag == obj.etag
    assert (await s3_http.head(dst, "warm")).storage_class == "STANDARD"
