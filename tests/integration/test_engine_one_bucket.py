"""Migrations inside one bucket: re-layouts under a prefix of their own, and rewrites in place.

Re-encrypting a bucket or changing its storage class copies every object onto itself. The
copy then replaces the very object it copies, so everything that proves it must be taken
before, a re-scan must not take the copies for changes, and no cleanup may ever delete
them. A re-layout into a prefix inside the source's must never select its own copies.
Each test runs on moto and on MinIO, behind the fault proxy that counts requests.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from objmig.api.migration import ObjectMigration
from objmig.engine.deletion_pass import run_cleanup
from objmig.engine.pipeline.verify import ORIGINAL_CHECKSUM_KEY, ORIGINAL_ETAG_KEY
from objmig.ledger import InventoryRow, Ledger, ObjectState, ScanRecord
from objmig.storage.endpoint import Endpoint
from objmig.storage.types import MIGRATION_METADATA_KEY
from tests.fixtures.s3 import S3Backend, S3Seeder
from tests.integration.engine_support import (
    cleanup_of,
    migration,
    rows_of,
    run,
    secrets_for,
    sha256_of,
)
from tests.support.s3proxy import S3FaultProxy

KiB = 1024
#: MinIO's static test key (see `LocalMinio`); moto accepts any key id.
KMS_KEY = "objmig-test-key"


def in_place(endpoint: Endpoint, bucket: str, **spec: Any) -> ObjectMigration:
    """Re-encrypt `bucket` in place with SSE-KMS (the default verification: etag)."""
    spec.setdefault("copy", {"mode": "serverSide", "overwrite": "always"})
    return migration(
        endpoint,
        bucket,
        bucket,
        target_extra={"encryption": {"mode": "SSE-KMS", "kmsKeyId": KMS_KEY}},
        **spec,
    )


def writes(proxy: S3FaultProxy, bucket: str) -> int:
    """Objects written (CopyObject, PutObject, multipart completions)."""
    puts = [
        r
        for r in proxy.seen("PUT")
        if r.bucket == bucket and r.key and "partNumber" not in r.query and "tagging" not in r.query
    ]
    completions = [r for r in proxy.seen("POST") if r.bucket == bucket and "uploadId" in r.query]
    return len(puts) + len(completions)


async def test_reencryption_in_place_proves_each_copy_by_what_was_taken_before(
    ledger: Ledger,
    s3_backend: S3Backend,
    backend_seed: S3Seeder,
    backend_proxy: S3FaultProxy,
    backend_via_proxy: Endpoint,
) -> None:
    bucket = await backend_seed.bucket()
    part = s3_backend.min_part_size
    kept = await backend_seed.put_object(
        bucket, "kept", 64 * KiB, metadata={"owner": "a"}, ChecksumAlgorithm="SHA256"
    )
    plain = await backend_seed.put_object(bucket, "plain", 64 * KiB)
    parts = await backend_seed.put_multipart(bucket, "parts", [part, part // 2])

    result = await run(ledger, in_place(backend_via_proxy, bucket), backend_via_proxy)

    assert result.outcome == "cut-over", [(o.key, o.last_error) for o in result.status.objects]
    rows = await rows_of(ledger)
    assert {row.state for row in rows.values()} == {ObjectState.VERIFIED}
    client = backend_seed.client
    for obj in (kept, plain, parts):
        head = await client.head_object(Bucket=bucket, Key=obj.key)
        assert head["ServerSideEncryption"] == "aws:kms", obj.key
        assert head["Metadata"][ORIGINAL_ETAG_KEY] == obj.etag
        assert await sha256_of(client, bucket, obj.key) == obj.sha256
        assert rows[obj.key].source_checksum == rows[obj.key].target_checksum
    assert (await client.head_object(Bucket=bucket, Key="kept"))["Metadata"]["owner"] == "a"
    # KMS makes ETags opaque. The store keeps a SHA-256 of "kept" and computed one of its
    # copy: neither is read. "plain" keeps none: it was read once, before it was replaced,
    # and its copy's SHA-256 computed by the store. The multipart copy has no checksum of
    # its own (parts are copied one by one): read once before and once after.
    assert rows["kept"].target_checksum == f"sha256:{kept.sha256}"
    assert rows["plain"].target_checksum == f"sha256:{plain.sha256}"
    assert rows["parts"].target_checksum == f"sha256:{parts.sha256}"
    assert backend_proxy.object_reads(bucket) == {"plain": 1, "parts": 2}
    assert writes(backend_proxy, bucket) == 3


async def test_an_interrupted_copy_in_place_is_proven_on_the_next_attempt_not_copied_again(
    ledger: Ledger, backend_seed: S3Seeder, backend_proxy: S3FaultProxy, backend_via_proxy: Endpoint
) -> None:
    bucket = await backend_seed.bucket()
    good = await backend_seed.put_object(bucket, "good", 32 * KiB)
    bad = await backend_seed.put_object(bucket, "bad", 32 * KiB)
    rescanned = await backend_seed.put_object(bucket, "rescanned", 32 * KiB)
    resource = in_place(backend_via_proxy, bucket)
    # What an attempt killed between its copy and its verification leaves: the copies in
    # place, carrying their originals' ETag and SHA-256 ("bad" with a wrong one, as if
    # the copy had gone wrong).
    client = backend_seed.client
    copies = {}
    wrong = hashlib.sha256(b"other").hexdigest()
    for obj, digest in ((good, good.sha256), (bad, wrong), (rescanned, rescanned.sha256)):
        copies[obj.key] = await client.copy_object(
            Bucket=bucket,
            Key=obj.key,
            CopySource={"Bucket": bucket, "Key": obj.key},
            MetadataDirective="REPLACE",
            Metadata={
                MIGRATION_METADATA_KEY: "test/m",
                ORIGINAL_ETAG_KEY: obj.etag,
                ORIGINAL_CHECKSUM_KEY: f"sha256:{digest}",
            },
            ServerSideEncryption="aws:kms",
            SSEKMSKeyId=KMS_KEY,
            ChecksumAlgorithm="SHA256",
        )
    # The ledger knows the originals, as the earlier attempt's scan recorded them; but a
    # re-scan listed the copy of "rescanned" and took it for a change of the original.
    rescanned_etag = copies["rescanned"]["CopyObjectResult"]["ETag"].strip('"')
    mid = await ledger.ensure_migration("test/m", "")
    await ledger.upsert_inventory(
        mid,
        [
            InventoryRow(key=o.key, version_id="", size=o.size, etag=etag, target_key=o.key)
            for o, etag in ((good, good.etag), (bad, bad.etag), (rescanned, rescanned_etag))
        ],
        scan_id=1,
    )
    await ledger.update_state(mid, scan=ScanRecord(id=1, completed_at=datetime.now(UTC)))
    backend_proxy.clear()

    result = await run(ledger, resource, backend_via_proxy)

    rows = await rows_of(ledger)
    for obj in (good, rescanned):
        assert rows[obj.key].state is ObjectState.VERIFIED
        assert rows[obj.key].source_checksum == f"sha256:{obj.sha256}"
    # A copy that does not match its original is never copied again from itself.
    assert rows["bad"].state is ObjectState.FAILED
    assert rows["bad"].error_code == "ChecksumMismatch"
    assert writes(backend_proxy, bucket) == 0
    assert result.outcome != "cut-over"


async def test_catch_up_after_a_rewrite_in_place_finds_nothing_new(
    ledger: Ledger, backend_seed: S3Seeder, backend_proxy: S3FaultProxy, backend_via_proxy: Endpoint
) -> None:
    bucket = await backend_seed.bucket()
    for i in range(4):
        await backend_seed.put_object(bucket, f"k{i}", 8 * KiB, ChecksumAlgorithm="SHA256")
    resource = in_place(backend_via_proxy, bucket, cutover={"catchUp": True})

    result = await run(ledger, resource, backend_via_proxy)

    assert result.outcome == "cut-over"
    state = await ledger.get_state(await ledger.find_migration("test/m") or 0)
    # One catch-up round, then the final check before the cutover; their re-scans list the
    # copies and know them for the migration's own.
    assert state.catch_up.rounds == 2
    assert state.catch_up.final_check_round == 2
    assert state.catch_up.last_delta == 0
    assert writes(backend_proxy, bucket) == 4


async def test_cleanup_never_deletes_an_object_rewritten_in_place(
    ledger: Ledger, backend_seed: S3Seeder, backend_via_proxy: Endpoint
) -> None:
    bucket = await backend_seed.bucket()
    seeded = [await backend_seed.put_object(bucket, f"k{i}", 4 * KiB) for i in range(3)]
    result = await run(ledger, in_place(backend_via_proxy, bucket), backend_via_proxy)
    assert result.outcome == "cut-over"
    digest = result.status.verification.digest
    secrets = secrets_for(backend_via_proxy)
    # A failed row's target is normally a leftover to remove; in place it is the object.
    await ledger.pool.execute("UPDATE objects SET state = 'failed' WHERE key = 'k0'")

    source = await run_cleanup(ledger, cleanup_of(digest), secrets)
    sweep = cleanup_of(None, name="leftovers", what="leftovers")
    leftovers = await run_cleanup(ledger, sweep, secrets)

    assert source.counts.deleted == 0
    assert source.counts.skipped_by_reason == {"InPlace": 2}
    assert leftovers.phase == "Completed"
    for obj in seeded:
        assert await sha256_of(backend_seed.client, bucket, obj.key) == obj.sha256


async def test_versioned_rewrite_in_place_keeps_the_original_version_for_cleanup(
    ledger: Ledger, backend_seed: S3Seeder, backend_proxy: S3FaultProxy, backend_via_proxy: Endpoint
) -> None:
    bucket = await backend_seed.bucket(versioned=True)
    seeded = [await backend_seed.put_object(bucket, f"k{i}", 4 * KiB) for i in range(3)]
    resource = in_place(backend_via_proxy, bucket, cutover={"catchUp": True})

    result = await run(ledger, resource, backend_via_proxy)

    assert result.outcome == "cut-over", [(o.key, o.last_error) for o in result.status.objects]
    rows = await rows_of(ledger)
    # The re-scan lists each copy as its key's newest version: known, not new work.
    assert len(rows) == 3
    assert writes(backend_proxy, bucket) == 3
    digest = result.status.verification.digest
    cleaned = await run_cleanup(ledger, cleanup_of(digest), secrets_for(backend_via_proxy))
    assert cleaned.counts.deleted == 3
    client = backend_seed.client
    for obj in seeded:
        versions = await client.list_object_versions(Bucket=bucket, Prefix=obj.key)
        left = [v["VersionId"] for v in versions.get("Versions", [])]
        # The unencrypted original is gone; the re-encrypted copy stays, same bytes.
        assert obj.version_id not in left
        assert len(left) == 1
        assert await sha256_of(client, bucket, obj.key) == obj.sha256


async def test_a_relayout_inside_the_source_prefix_never_copies_its_own_copies(
    ledger: Ledger, backend_seed: S3Seeder, backend_proxy: S3FaultProxy, backend_via_proxy: Endpoint
) -> None:
    bucket = await backend_seed.bucket()
    seeded = [await backend_seed.put_object(bucket, f"k{i}", 4 * KiB) for i in range(3)]
    resource = migration(
        backend_via_proxy,
        bucket,
        bucket,
        target_extra={"prefix": "copy/"},
        cutover={"catchUp": True},
    )

    result = await run(ledger, resource, backend_via_proxy)

    assert result.outcome == "cut-over", [(o.key, o.last_error) for o in result.status.objects]
    # The catch-up re-scan lists copy/k0..k2 too: they are where the copies go, not new work.
    assert sorted(await rows_of(ledger)) == ["k0", "k1", "k2"]
    client = backend_seed.client
    listed = await client.list_objects_v2(Bucket=bucket)
    assert sorted(o["Key"] for o in listed["Contents"]) == [
        "copy/k0",
        "copy/k1",
        "copy/k2",
        "k0",
        "k1",
        "k2",
    ]
    for obj in seeded:
        assert await sha256_of(client, bucket, f"copy/{obj.key}") == obj.sha256


async def test_an_uneven_multipart_object_rewritten_in_place_keeps_its_layout(
    ledger: Ledger,
    s3_backend: S3Backend,
    backend_seed: S3Seeder,
    backend_proxy: S3FaultProxy,
    backend_via_proxy: Endpoint,
) -> None:
    bucket = await backend_seed.bucket()
    part = s3_backend.min_part_size
    # Part 1 and the count suggest equal parts (part, part, part // 2); they are not. A
    # copy cut by that guess would replace the original before its ETag told the truth.
    uneven = await backend_seed.put_multipart(bucket, "uneven", [part + 1024, part, part])
    resource = migration(
        backend_via_proxy,
        bucket,
        bucket,
        copy={"mode": "serverSide", "overwrite": "always"},
        target_extra={"storageClass": s3_backend.other_storage_class},
    )

    result = await run(ledger, resource, backend_via_proxy)

    assert result.outcome == "cut-over", [(o.key, o.last_error) for o in result.status.objects]
    head = await backend_seed.client.head_object(Bucket=bucket, Key="uneven")
    assert head["ETag"].strip('"') == uneven.etag
    assert head.get("StorageClass") == s3_backend.other_storage_class
    assert writes(backend_proxy, bucket) == 1


async def test_one_bucket_under_two_endpoint_names_is_never_cleaned_up(
    ledger: Ledger, s3_backend: S3Backend, backend_seed: S3Seeder, backend_via_proxy: Endpoint
) -> None:
    bucket = await backend_seed.bucket()
    seeded = [await backend_seed.put_object(bucket, f"k{i}", 4 * KiB) for i in range(3)]
    # The same bucket and keys, reached directly and through the proxy: the spec cannot
    # know that the two endpoints are one store.
    resource = migration(
        s3_backend.endpoint, bucket, bucket, target_extra={"endpoint": backend_via_proxy.url}
    )
    result = await run(ledger, resource, s3_backend.endpoint)
    digest = result.status.verification.digest

    cleaned = await run_cleanup(ledger, cleanup_of(digest), secrets_for(s3_backend.endpoint))

    assert cleaned.counts.deleted == 0
    for obj in seeded:
        assert await sha256_of(backend_seed.client, bucket, obj.key) == obj.sha256


async def test_every_version_reaches_the_target_oldest_first(
    ledger: Ledger, backend_seed: S3Seeder, backend_via_proxy: Endpoint
) -> None:
    source = await backend_seed.bucket(versioned=True)
    target = await backend_seed.bucket(versioned=True)
    history = {
        key: [
            await backend_seed.put_object(source, key, 2 * KiB, seed=f"{key}{n}") for n in range(3)
        ]
        for key in ("a", "b")
    }
    resource = migration(
        backend_via_proxy, source, target, selection={"allVersions": True}, copy={"concurrency": 8}
    )

    result = await run(ledger, resource, backend_via_proxy)

    assert result.outcome == "cut-over", [(o.key, o.last_error) for o in result.status.objects]
    client = backend_seed.client
    for key, versions in history.items():
        listed = await client.list_object_versions(Bucket=target, Prefix=key)
        # Newest first, as S3 lists them: the source's history, in its order.
        copied = [v["ETag"].strip('"') for v in listed["Versions"]]
        assert copied == [v.etag for v in reversed(versions)], key
        assert await sha256_of(client, target, key) == versions[-1].sha256


async def test_source_keys_sharing_a_target_key_fail_instead_of_overwriting_each_other(
    ledger: Ledger, backend_seed: S3Seeder, backend_via_proxy: Endpoint
) -> None:
    source = await backend_seed.bucket()
    target = await backend_seed.bucket()
    for key in ("a/x", "b/x", "a/y"):
        await backend_seed.put_object(source, key, 2 * KiB)
    resource = migration(
        backend_via_proxy, source, target, target_extra={"keyTemplate": "{basename}"}
    )

    result = await run(ledger, resource, backend_via_proxy)

    assert result.outcome != "cut-over"
    rows = await rows_of(ledger)
    assert rows["a/y"].state is ObjectState.VERIFIED
    for key in ("a/x", "b/x"):
        assert rows[key].state is ObjectState.FAILED
        assert rows[key].error_code == "TargetKeyCollision"
        assert "target key x" in (rows[key].last_error or "")
