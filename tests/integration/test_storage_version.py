"""Rewriting a bucket to a new storage version: select by a metadata version below N,
stamp the new one on every object rewritten (in place, part boundaries kept, a new
encryption), and leave everything else alone.

Each test runs on moto and on MinIO, behind the fault proxy that counts requests.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from objmig.api.migration import ObjectMigration
from objmig.engine.deletion_pass import run_cleanup
from objmig.engine.pipeline.verify import ORIGINAL_ETAG_KEY
from objmig.ledger import InventoryRow, Ledger, ObjectState, ScanRecord
from objmig.storage.endpoint import Endpoint
from objmig.storage.types import MIGRATION_METADATA_KEY
from tests.fixtures.s3 import S3Backend, S3Seeder
from tests.integration.engine_support import (
    keys_of,
    migration,
    rows_of,
    run,
    secrets_for,
    sha256_of,
)
from tests.integration.test_cleanup import cleanup_of
from tests.integration.test_engine_one_bucket import writes
from tests.support.s3proxy import RewriteHeaders, S3FaultProxy, Truncate

KiB = 1024
VERSION_KEY = "storage-version"


def rewrite(
    endpoint: Endpoint,
    bucket: str,
    name: str = "m",
    target_extra: dict[str, Any] | None = None,
    **spec: Any,
) -> ObjectMigration:
    """Rewrite every object of `bucket` below storage version 3 (or without one: written
    before versions existed) to 3, in place, as SSE-S3."""
    spec.setdefault("copy", {"mode": "serverSide", "overwrite": "always"})
    return migration(
        endpoint,
        bucket,
        bucket,
        name=name,
        target_extra=target_extra
        or {
            "encryption": {"mode": "SSE-S3"},
            "metadata": {"set": {VERSION_KEY: "3"}, "remove": ["legacy-layout"]},
        },
        selection={
            "metadata": [{"key": VERSION_KEY, "operator": "Lt", "values": ["3"], "default": "0"}]
        },
        **spec,
    )


async def test_a_storage_version_rewrite_stamps_old_objects_once_and_a_second_run_selects_nothing(
    ledger: Ledger,
    s3_backend: S3Backend,
    backend_seed: S3Seeder,
    backend_proxy: S3FaultProxy,
    backend_via_proxy: Endpoint,
) -> None:
    bucket = await backend_seed.bucket()
    part = s3_backend.min_part_size
    old = [
        await backend_seed.put_object(bucket, "a", 32 * KiB, metadata={VERSION_KEY: "2"}),
        await backend_seed.put_object(
            bucket,
            "b",
            16 * KiB,
            metadata={VERSION_KEY: "1", "owner": "x", "legacy-layout": "flat"},
            ContentType="image/png",
        ),
        await backend_seed.put_multipart(
            bucket, "parts", [part, part, part // 2], metadata={VERSION_KEY: "2"}
        ),
    ]
    # Written before versions existed: no storage-version at all, which counts as 0.
    old.append(await backend_seed.put_object(bucket, "d", 8 * KiB, metadata={"owner": "y"}))
    current = await backend_seed.put_object(bucket, "c", 8 * KiB, metadata={VERSION_KEY: "3"})
    newer = await backend_seed.put_object(bucket, "e", 8 * KiB, metadata={VERSION_KEY: "4"})
    client = backend_seed.client
    untouched_before = {
        obj.key: await client.head_object(Bucket=bucket, Key=obj.key) for obj in (current, newer)
    }

    # A catch-up round re-scans the bucket before the cutover: it finds nothing new.
    resource = rewrite(backend_via_proxy, bucket, cutover={"catchUp": True})
    result = await run(ledger, resource, backend_via_proxy)

    assert result.outcome == "cut-over", [(o.key, o.last_error) for o in result.status.objects]
    state = await ledger.get_state(await ledger.ensure_migration("test/m"))
    # The catch-up round, then the final re-scan once every other gate held (issue 21.6).
    assert (state.catch_up.rounds, state.catch_up.last_delta) == (2, 0)
    rows = await rows_of(ledger)
    assert {k: r.state for k, r in rows.items()} == {
        "a": ObjectState.VERIFIED,
        "b": ObjectState.VERIFIED,
        "parts": ObjectState.VERIFIED,
        "d": ObjectState.VERIFIED,
        "c": ObjectState.SKIPPED,
        "e": ObjectState.SKIPPED,
    }
    assert rows["c"].skip_reason == rows["e"].skip_reason == "MetadataNotMatched"
    for obj in old:
        head = await client.head_object(Bucket=bucket, Key=obj.key)
        assert head["Metadata"][VERSION_KEY] == "3", obj.key
        assert "legacy-layout" not in head["Metadata"], obj.key
        assert head["ServerSideEncryption"] == "AES256", obj.key
        # The content is unchanged and its part boundaries kept: the ETag says so.
        assert head["ETag"].strip('"') == obj.etag, obj.key
        assert await sha256_of(client, bucket, obj.key) == obj.sha256
    b = await client.head_object(Bucket=bucket, Key="b")
    assert b["Metadata"]["owner"] == "x"
    assert b["ContentType"] == "image/png"
    assert (await client.head_object(Bucket=bucket, Key="d"))["Metadata"]["owner"] == "y"
    for key, before in untouched_before.items():
        after = await client.head_object(Bucket=bucket, Key=key)
        assert after["LastModified"] == before["LastModified"], key
        assert after["Metadata"] == before["Metadata"], key
    assert writes(backend_proxy, bucket) == 4

    # The same migration again, and a new one over the same bucket: nothing is old any more.
    backend_proxy.clear()
    again = await run(ledger, resource, backend_via_proxy)
    assert again.outcome == "cut-over"
    fresh = await run(ledger, rewrite(backend_via_proxy, bucket, name="m2"), backend_via_proxy)
    second = await rows_of(ledger, "test/m2")
    assert {r.skip_reason for r in second.values()} == {"MetadataNotMatched"}
    assert fresh.status.progress.objects.skipped == 6
    assert writes(backend_proxy, bucket) == 0


async def test_an_interrupted_rewrite_is_finished_from_its_stamped_copy_not_written_again(
    ledger: Ledger, backend_seed: S3Seeder, backend_proxy: S3FaultProxy, backend_via_proxy: Endpoint
) -> None:
    bucket = await backend_seed.bucket()
    original = await backend_seed.put_object(bucket, "a", 32 * KiB, metadata={VERSION_KEY: "2"})
    # What an attempt stopped between its copy and the record of its verification leaves:
    # the copy in place, stamped, carrying the original's ETag.
    client = backend_seed.client
    await client.copy_object(
        Bucket=bucket,
        Key="a",
        CopySource={"Bucket": bucket, "Key": "a"},
        MetadataDirective="REPLACE",
        Metadata={
            VERSION_KEY: "3",
            MIGRATION_METADATA_KEY: "test/m",
            ORIGINAL_ETAG_KEY: original.etag,
        },
        ServerSideEncryption="AES256",
    )
    mid = await ledger.ensure_migration("test/m", "")
    await ledger.upsert_inventory(
        mid,
        [InventoryRow(key="a", size=original.size, etag=original.etag, target_key="a")],
        scan_id=1,
    )
    await ledger.update_state(mid, scan=ScanRecord(id=1, completed_at=datetime.now(UTC)))
    backend_proxy.clear()

    result = await run(ledger, rewrite(backend_via_proxy, bucket), backend_via_proxy)

    assert result.outcome == "cut-over", [(o.key, o.last_error) for o in result.status.objects]
    assert (await rows_of(ledger))["a"].state is ObjectState.VERIFIED
    assert writes(backend_proxy, bucket) == 0
    head = await client.head_object(Bucket=bucket, Key="a")
    assert head["Metadata"][VERSION_KEY] == "3"


async def test_a_source_changed_after_the_scan_fails_its_object_and_is_left_as_it_is(
    ledger: Ledger, backend_seed: S3Seeder, backend_proxy: S3FaultProxy, backend_via_proxy: Endpoint
) -> None:
    bucket = await backend_seed.bucket()
    await backend_seed.put_object(bucket, "a", 16 * KiB, metadata={VERSION_KEY: "2"})
    await backend_seed.put_object(bucket, "b", 16 * KiB, metadata={VERSION_KEY: "2"})
    # A dry run inventories the bucket; then the application writes "a" anew.
    planned = await run(ledger, rewrite(backend_via_proxy, bucket, dryRun=True), backend_via_proxy)
    assert planned.outcome == "planned"
    changed = await backend_seed.put_object(
        bucket, "a", 16 * KiB, seed="new", metadata={VERSION_KEY: "2"}
    )
    backend_proxy.clear()

    result = await run(ledger, rewrite(backend_via_proxy, bucket), backend_via_proxy)

    # The attempt on the dry run's facts found "a" changed and wrote nothing; the final
    # re-scan before the cutover (issue 21.6) sent it back, and it was stamped from its new
    # content: one write each, never the old bytes over the new.
    rows = await rows_of(ledger)
    assert {key: row.state for key, row in rows.items()} == {
        "a": ObjectState.VERIFIED,
        "b": ObjectState.VERIFIED,
    }
    assert result.outcome == "cut-over"
    head = await backend_seed.client.head_object(Bucket=bucket, Key="a")
    assert head["ETag"].strip('"') == changed.etag
    assert head["Metadata"][VERSION_KEY] == "3"
    assert writes(backend_proxy, bucket) == 2


async def test_a_failed_rewrite_into_a_new_prefix_is_removed_by_leftovers_after_its_grace(
    ledger: Ledger, backend_seed: S3Seeder, backend_proxy: S3FaultProxy, backend_via_proxy: Endpoint
) -> None:
    bucket = await backend_seed.bucket()
    originals = {
        key: await backend_seed.put_object(bucket, key, 8 * KiB, metadata={VERSION_KEY: "2"})
        for key in ("a", "b")
    }
    # The application's own object in the new prefix, which no cleanup may take.
    own = await backend_seed.put_object(bucket, "v2/index.json", 1 * KiB)
    # The copy of "b" is written, but its answer is lost, and the copy found on the next
    # attempt reads back as something else: it is never proven, every time.
    backend_proxy.add_rule(Truncate(0), method="PUT", bucket=bucket, key="v2/b")
    backend_proxy.add_rule(
        RewriteHeaders({"ETag": '"00000000000000000000000000000000"'}),
        method="HEAD",
        bucket=bucket,
        key="v2/b",
    )
    resource = rewrite(
        backend_via_proxy,
        bucket,
        target_extra={"prefix": "v2/", "metadata": {"set": {VERSION_KEY: "3"}}},
        copy={"mode": "serverSide"},
    )

    result = await run(ledger, resource, backend_via_proxy)

    rows = await rows_of(ledger)
    assert rows["a"].state is ObjectState.VERIFIED
    assert rows["b"].state is ObjectState.FAILED, rows["b"].last_error
    assert result.outcome != "cut-over"
    backend_proxy.clear()
    client = backend_seed.client
    assert set(await keys_of(client, bucket)) == {"a", "b", "v2/a", "v2/b", "v2/index.json"}
    secrets = secrets_for(backend_via_proxy)

    # Within its grace (minAge) the failed copy stays; after it, it alone goes.
    young = await run_cleanup(
        ledger, cleanup_of(None, name="young", what="leftovers", minAge="1h"), secrets
    )
    assert set(await keys_of(client, bucket)) == {"a", "b", "v2/a", "v2/b", "v2/index.json"}
    assert young.phase == "Completed"
    swept = await run_cleanup(ledger, cleanup_of(None, name="swept", what="leftovers"), secrets)

    assert swept.phase == "Completed"
    assert swept.counts.deleted == 1
    remaining = await keys_of(client, bucket)
    assert set(remaining) == {"a", "b", "v2/a", "v2/index.json"}
    for key, obj in originals.items():
        assert remaining[key] == obj.etag, key
    assert remaining["v2/index.json"] == own.etag
    stamped = await client.head_object(Bucket=bucket, Key="v2/a")
    assert stamped["Metadata"][VERSION_KEY] == "3"
