"""MigrationCleanup in-process against a real S3 server and ledger: deletion behind gates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from types_aiobotocore_s3 import S3Client

from objmig.engine.deletion_pass import run_cleanup
from objmig.ledger import InventoryRow, Ledger, ObjectState, StepResult
from objmig.storage.endpoint import Endpoint
from tests.fixtures.s3 import S3Seeder
from tests.integration.engine_support import (
    cleanup_of,
    keys_of,
    migration,
    rows_of,
    run,
    secrets_for,
)

KiB = 1024


async def _migrated(
    ledger: Ledger, endpoint: Endpoint, seed: S3Seeder, count: int = 6, **bucket: Any
) -> tuple[str, str, str]:
    source = await seed.bucket(**bucket)
    target = await seed.bucket()
    for i in range(count):
        await seed.put_object(source, f"data/{i}", 1 * KiB)
    await seed.put_object(source, "outside/keep", 1 * KiB)
    resource = migration(endpoint, source, target, source_extra={"prefix": "data/"})
    result = await run(ledger, resource, endpoint)
    assert result.outcome == "cut-over"
    digest = result.status.verification.digest
    assert digest is not None
    return source, target, digest


async def test_cleanup_deletes_exactly_the_migrated_source_objects(
    ledger: Ledger, s3_endpoint: Endpoint, s3_seed: S3Seeder, s3_client: S3Client
) -> None:
    source, target, digest = await _migrated(ledger, s3_endpoint, s3_seed)

    status = await run_cleanup(ledger, cleanup_of(digest), secrets_for(s3_endpoint))

    assert status.phase == "Completed"
    assert set(await keys_of(s3_client, source)) == {"outside/keep"}
    assert len(await keys_of(s3_client, target)) == 6
    assert (status.counts.deleted, status.counts.skipped, status.counts.failed) == (6, 0, 0)
    assert status.counts.bytes_freed == 6 * KiB
    rows = await rows_of(ledger)
    assert {r.state for r in rows.values()} == {ObjectState.DELETED}
    gates = next(c for c in status.conditions if c.type == "GatesPassed")
    assert gates.status == "True"

    # The migration's status now says rollback is impossible, and a rollback is refused.
    rollback = migration(
        s3_endpoint, source, target, source_extra={"prefix": "data/"}, cutover={"rollback": True}
    )
    refused = await run(ledger, rollback, s3_endpoint)
    assert refused.outcome == "failed"
    assert "rollback is no longer" in (refused.status.cutover.rollback_blocked or "")


async def test_cleanup_skips_source_changed_since_verify(
    ledger: Ledger, s3_endpoint: Endpoint, s3_seed: S3Seeder, s3_client: S3Client
) -> None:
    source, _, digest = await _migrated(ledger, s3_endpoint, s3_seed)
    await s3_seed.put_object(source, "data/3", 2 * KiB, seed="rewritten by the app")

    status = await run_cleanup(ledger, cleanup_of(digest), secrets_for(s3_endpoint))

    assert status.counts.deleted == 5
    assert status.counts.skipped_by_reason == {"SourceChangedSinceVerify": 1}
    assert set(await keys_of(s3_client, source)) == {"outside/keep", "data/3"}
    window = {o.key: o for o in status.objects}
    assert window["data/3"].state == "skipped"
    assert "SourceChangedSinceVerify" in (window["data/3"].last_error or "")


async def test_wrong_digest_blocks_with_a_message_and_deletes_nothing(
    ledger: Ledger, s3_endpoint: Endpoint, s3_seed: S3Seeder, s3_client: S3Client
) -> None:
    source, _, _ = await _migrated(ledger, s3_endpoint, s3_seed)
    wrong = "sha256:" + "0" * 64

    status = await run_cleanup(ledger, cleanup_of(wrong), secrets_for(s3_endpoint))

    assert status.phase == "Blocked"
    gates = next(c for c in status.conditions if c.type == "GatesPassed")
    assert (gates.status, gates.reason) == ("False", "ApprovalDigestMismatch")
    assert wrong in gates.message
    assert [g.reason for g in status.unmet_gates] == ["ApprovalDigestMismatch"]
    assert len(await keys_of(s3_client, source)) == 7


async def test_nothing_is_deleted_before_the_grace_period_and_the_condition_says_when(
    ledger: Ledger, s3_endpoint: Endpoint, s3_seed: S3Seeder, s3_client: S3Client
) -> None:
    source, _, digest = await _migrated(ledger, s3_endpoint, s3_seed)

    status = await run_cleanup(
        ledger, cleanup_of(digest, gracePeriod="72h"), secrets_for(s3_endpoint)
    )

    assert status.phase == "Blocked"
    gate = status.unmet_gates[0]
    assert gate.reason == "GracePeriodNotElapsed"
    assert "of gracePeriod 72h left" in gate.message
    assert "deletions start at" in gate.message
    assert len(await keys_of(s3_client, source)) == 7

    # Three days later (an injected clock), the same cleanup deletes.
    later = datetime.now(UTC) + timedelta(hours=73)
    status = await run_cleanup(
        ledger, cleanup_of(digest, gracePeriod="72h"), secrets_for(s3_endpoint), now=later
    )
    assert status.counts.deleted == 6


async def test_versioned_source_keeps_its_other_versions(
    ledger: Ledger, s3_endpoint: Endpoint, s3_seed: S3Seeder, s3_client: S3Client
) -> None:
    source = await s3_seed.bucket(versioned=True)
    target = await s3_seed.bucket()
    old = await s3_seed.put_object(source, "doc", 1 * KiB, seed="v1")
    new = await s3_seed.put_object(source, "doc", 1 * KiB, seed="v2")
    assert old.version_id
    assert new.version_id
    assert old.version_id != new.version_id
    result = await run(ledger, migration(s3_endpoint, source, target), s3_endpoint)
    assert result.outcome == "cut-over"
    assert (await rows_of(ledger))["doc"].version_id == new.version_id
    digest = result.status.verification.digest

    status = await run_cleanup(ledger, cleanup_of(digest), secrets_for(s3_endpoint))

    assert status.counts.deleted == 1
    versions = await s3_client.list_object_versions(Bucket=source)
    remaining = {v["VersionId"] for v in versions.get("Versions", [])}
    assert remaining == {old.version_id}
    assert not versions.get("DeleteMarkers"), "the exact version was deleted, not masked"


async def test_dry_run_deletes_nothing_and_lists_what_it_would(
    ledger: Ledger, s3_endpoint: Endpoint, s3_seed: S3Seeder, s3_client: S3Client
) -> None:
    source, _, digest = await _migrated(ledger, s3_endpoint, s3_seed)

    status = await run_cleanup(ledger, cleanup_of(digest, dryRun=True), secrets_for(s3_endpoint))

    # What would go is counted as such: the Deleted column of a dry run says 0.
    assert (status.counts.deleted, status.counts.would_delete) == (0, 6)
    assert status.counts.bytes_freed == 0
    assert status.phase == "Completed"
    assert {o.state for o in status.objects} == {"would_delete"}
    assert len(await keys_of(s3_client, source)) == 7
    assert {r.state for r in (await rows_of(ledger)).values()} == {ObjectState.VERIFIED}


async def test_the_same_cleanup_made_real_after_its_dry_run_deletes(
    ledger: Ledger, s3_endpoint: Endpoint, s3_seed: S3Seeder, s3_client: S3Client
) -> None:
    source, _, digest = await _migrated(ledger, s3_endpoint, s3_seed)
    secrets = secrets_for(s3_endpoint)
    await run_cleanup(ledger, cleanup_of(digest, dryRun=True), secrets)

    # The same MigrationCleanup, dryRun switched off: a new pass, not "already complete".
    status = await run_cleanup(ledger, cleanup_of(digest), secrets)

    assert (status.phase, status.counts.deleted, status.counts.bytes_freed) == (
        "Completed",
        6,
        6 * KiB,
    )
    assert set(await keys_of(s3_client, source)) == {"outside/keep"}


async def test_limit_caps_the_deletions(
    ledger: Ledger, s3_endpoint: Endpoint, s3_seed: S3Seeder, s3_client: S3Client
) -> None:
    source, _, digest = await _migrated(ledger, s3_endpoint, s3_seed, count=10)

    status = await run_cleanup(ledger, cleanup_of(digest, limit=4), secrets_for(s3_endpoint))

    assert status.counts.deleted == 4
    assert len(await keys_of(s3_client, source)) == 7
    # The pass ended at the limit: complete, with what it left said (not Deleting forever).
    assert status.phase == "Completed"
    assert status.counts.left_by_limit == 6
    complete = next(c for c in status.conditions if c.type == "Complete")
    assert complete.status == "True"
    assert "stopped at spec.limit" in complete.message

    # Raising the limit is a new pass that goes on from there.
    status = await run_cleanup(ledger, cleanup_of(digest, limit=8), secrets_for(s3_endpoint))
    assert (status.phase, status.counts.deleted, status.counts.left_by_limit) == (
        "Completed",
        8,
        2,
    )
    assert len(await keys_of(s3_client, source)) == 3


@pytest.mark.parametrize("s3_backend", ["minio"], indirect=True)
async def test_leftovers_abort_stale_uploads_and_keep_everything_referenced(
    ledger: Ledger, backend_seed: S3Seeder, backend_client: S3Client
) -> None:
    # On MinIO: moto reports one fixed Initiated time (2010-11-10) for every upload, so the
    # rule "begun after the migration existed" cannot be exercised against it.
    s3_endpoint, s3_client = backend_seed.backend.endpoint, backend_client
    source, target, _ = await _migrated(ledger, s3_endpoint, backend_seed, count=3)
    # A failed attempt left a copy behind, and a crashed copy left an incomplete upload.
    migration_id = await ledger.find_migration("test/m")
    assert migration_id is not None
    await ledger.upsert_inventory(
        migration_id,
        [InventoryRow(key="data/failed", size=1, etag="x", target_key="data/failed")],
        scan_id=99,
    )
    rows = await rows_of(ledger)
    failed_row = rows["data/failed"]
    owner = "test-owner"
    claimed = await ledger.claim(
        migration_id, owner, [ObjectState.PENDING], 10, timedelta(minutes=1)
    )
    assert [r.key for r in claimed] == ["data/failed"]
    await ledger.record(
        owner,
        [
            StepResult(
                id=failed_row.id,
                state=ObjectState.FAILED,
                target_key="data/failed",
                last_error="boom",
                error_code="ETagMismatch",
            )
        ],
    )
    await s3_client.put_object(
        Bucket=target, Key="data/failed", Body=b"partial", Metadata={"objmig-migration": "test/m"}
    )
    await s3_client.put_object(Bucket=target, Key="someone-elses", Body=b"x")
    # Target keys are relative to the source prefix: "data/1" was written as "1".
    upload = await s3_client.create_multipart_upload(Bucket=target, Key="1")
    foreign = await s3_client.create_multipart_upload(Bucket=target, Key="other/file")

    status = await run_cleanup(
        ledger, cleanup_of(None, what="leftovers", minAge="0s"), secrets_for(s3_endpoint)
    )

    assert status.phase == "Completed"
    left = await keys_of(s3_client, target)
    assert "data/failed" not in left
    assert {"0", "1", "2", "someone-elses"} <= set(left)
    uploads = await s3_client.list_multipart_uploads(Bucket=target)
    upload_ids = {u["UploadId"] for u in uploads.get("Uploads", [])}
    assert upload["UploadId"] not in upload_ids
    assert foreign["UploadId"] in upload_ids
    assert len(await keys_of(s3_client, source)) == 4


async def test_a_rollback_under_way_keeps_a_cleanup_from_deleting_and_the_reverse(
    ledger: Ledger, s3_endpoint: Endpoint, s3_seed: S3Seeder, s3_client: S3Client
) -> None:
    source, _, digest = await _migrated(ledger, s3_endpoint, s3_seed)
    migration_id = await ledger.find_migration("test/m")
    assert migration_id is not None
    # A rollback began (its process may have died half-way): no cleanup may start now.
    assert await ledger.start_rollback(migration_id)

    blocked = await run_cleanup(ledger, cleanup_of(digest), secrets_for(s3_endpoint))

    assert blocked.counts.deleted == 0
    assert "RolledBack" in {gate.reason for gate in blocked.unmet_gates}
    assert len(await keys_of(s3_client, source)) == 7
    # Once a cleanup has started, the other way round: no rollback.
    await ledger.update_state(migration_id, rollback_started=False)
    assert await ledger.start_cleanup(migration_id)
    assert not await ledger.start_rollback(migration_id)
