"""What objmig leaves on a target, and how it is found again (issues 23.6 and 21.8): the
ledger records every multipart upload the moment it starts and what every failed attempt
wrote, so a killed attempt's upload is aborted by the next attempt of its object, and a
leftovers cleanup removes exactly objmig's uploads and copies, marker or not, saying how
many and how many bytes.
"""

from __future__ import annotations

import asyncio
import signal
from datetime import timedelta
from pathlib import Path

import pytest
from types_aiobotocore_s3 import S3Client

from objmig.engine.claim_loop import LedgerUploads
from objmig.engine.context import MigrationContext
from objmig.engine.deletion_pass import run_cleanup
from objmig.engine.pipeline.orchestrator import ObjectPipeline
from objmig.ledger import InventoryRow, Ledger, ObjectState, StepResult
from objmig.local.s3server import LocalS3Server
from objmig.storage.endpoint import Endpoint
from tests.fixtures.s3 import S3Backend, S3Seeder, payload
from tests.integration.engine_support import (
    cleanup_of,
    cli_command,
    cli_inputs,
    keys_of,
    migration,
    rows_of,
    run,
)
from tests.integration.engine_support import secrets_for as secrets_of
from tests.support.s3proxy import Hold, S3FaultProxy

KiB = 1024
MiB = 1024 * KiB


async def _uploads(client: S3Client, bucket: str) -> set[str]:
    answer = await client.list_multipart_uploads(Bucket=bucket)
    return {u["UploadId"] for u in answer.get("Uploads", [])}


async def test_a_killed_attempts_upload_is_aborted_when_the_next_attempt_of_its_object_starts(
    ledger: Ledger,
    database_url: str,
    s3_server: LocalS3Server,
    s3_proxy: S3FaultProxy,
    s3_seed: S3Seeder,
    s3_client: S3Client,
    tmp_path: Path,
) -> None:
    source = await s3_seed.bucket()
    target = await s3_seed.bucket()
    big = await s3_seed.put_multipart(source, "big", [4 * KiB] * 3 + [100])
    spec_path, secrets_path = cli_inputs(tmp_path, s3_proxy.endpoint_url, source, target)
    command = cli_command(spec_path, secrets_path, database_url)
    # The first attempt's parts never arrive: it is killed with its upload open.
    held = Hold()
    parts = s3_proxy.add_rule(held, method="PUT", bucket=target, query={"uploadId": None})
    first = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        # The upload was recorded before any part was sent.
        await held.arrived()
        first.send_signal(signal.SIGKILL)
        await asyncio.wait_for(first.wait(), 30)
    finally:
        if first.returncode is None:
            first.kill()
    killed_uploads = await _uploads(s3_client, target)
    assert len(killed_uploads) == 1
    migration_id = await ledger.find_migration("cli/killed")
    assert migration_id is not None
    assert {u.upload_id for u in await ledger.open_uploads(migration_id)} == killed_uploads
    s3_proxy.remove_rule(parts)

    second = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(second.communicate(), 300)

    assert second.returncode == 0, output.decode()
    assert (await keys_of(s3_client, target))["big"] == big.etag
    aborts = [r for r in s3_proxy.seen("DELETE") if r.query.get("uploadId") in killed_uploads]
    assert len(aborts) == 1, "the next attempt aborts the killed attempt's upload"
    assert await _uploads(s3_client, target) == set()
    assert await ledger.open_uploads(migration_id) == []


async def test_a_retried_object_aborts_its_earlier_uploads_even_when_it_uploads_none_itself(
    ledger: Ledger, s3_endpoint: Endpoint, s3_seed: S3Seeder, s3_client: S3Client
) -> None:
    """A small object is copied by one PUT: the upload a killed attempt left on its key
    (recorded in the ledger) is aborted all the same when its next attempt starts."""
    source = await s3_seed.bucket()
    target = await s3_seed.bucket()
    small = await s3_seed.put_object(source, "small", 1 * KiB)
    migration_id = await ledger.ensure_migration("test/m")
    await ledger.upsert_inventory(
        migration_id,
        [InventoryRow(key="small", size=1 * KiB, etag=small.etag, target_key="small")],
        scan_id=1,
    )
    # The killed attempt: its lease ran out with its upload open (recorded).
    (killed,) = await ledger.claim(
        migration_id, "killed", [ObjectState.PENDING], 1, timedelta(milliseconds=1)
    )
    stale = await s3_client.create_multipart_upload(Bucket=target, Key="small")
    await ledger.upload_started(killed.id, "small", stale["UploadId"])
    rows: list = []
    async with asyncio.timeout(30):
        while not rows:  # the lease of 1 ms has run out once another claim gets the row
            rows = await ledger.claim(
                migration_id, "next", [ObjectState.PENDING], 1, timedelta(minutes=1)
            )
    (row,) = rows
    assert row.attempts == 1
    context = MigrationContext.resolve(
        migration(s3_endpoint, source, target), secrets_of(s3_endpoint)
    )

    async with context.clients() as (src, dst):
        result = await ObjectPipeline(context, src, dst, uploads=LedgerUploads(ledger)).process(row)

    assert result.state is ObjectState.VERIFIED
    assert await _uploads(s3_client, target) == set()
    assert await ledger.open_uploads(migration_id) == []


@pytest.mark.parametrize("s3_backend", ["minio"], indirect=True)
async def test_leftovers_abort_recorded_uploads_and_remove_unmarked_failed_copies_counting_bytes(
    ledger: Ledger, s3_backend: S3Backend, backend_seed: S3Seeder, backend_client: S3Client
) -> None:
    endpoint = backend_seed.backend.endpoint
    source = await backend_seed.bucket()
    target = await backend_seed.bucket()
    for i in range(3):
        await backend_seed.put_object(source, f"k/{i}", 1 * KiB)
    # No marker on the copies: the ledger alone knows which objects are objmig's.
    resource = migration(endpoint, source, target, copy={"migrationMarker": False})
    result = await run(ledger, resource, endpoint)
    assert result.outcome == "cut-over"
    assert (
        "objmig-migration"
        not in (await backend_client.head_object(Bucket=target, Key="k/0"))["Metadata"]
    )
    migration_id = await ledger.find_migration("test/m")
    assert migration_id is not None
    # A failed attempt wrote "k/failed" (recorded), an application rewrote "k/rewritten"
    # after a failed attempt (recorded ETag no longer there), and a killed attempt left an
    # upload of two parts (recorded) on "k/upload".
    await ledger.upsert_inventory(
        migration_id,
        [
            InventoryRow(key=key, size=1, etag="x", target_key=key)
            for key in ("k/failed", "k/rewritten", "k/upload")
        ],
        scan_id=99,
    )
    failed_copy = await backend_seed.put_object(target, "k/failed", 3 * KiB)
    await backend_seed.put_object(target, "k/rewritten", 2 * KiB, seed="theirs")
    rows = await rows_of(ledger)
    owner = "test-owner"
    await ledger.claim(migration_id, owner, [ObjectState.PENDING], 10, timedelta(minutes=1))
    await ledger.record(
        owner,
        [
            StepResult(
                id=rows["k/failed"].id,
                state=ObjectState.FAILED,
                target_key="k/failed",
                target_etag=failed_copy.etag,
                error_code="ChecksumMismatch",
            ),
            StepResult(
                id=rows["k/rewritten"].id,
                state=ObjectState.FAILED,
                target_key="k/rewritten",
                target_etag="0" * 32,
                error_code="ChecksumMismatch",
            ),
            StepResult(id=rows["k/upload"].id, state=ObjectState.FAILED, target_key="k/upload"),
        ],
    )
    part = s3_backend.min_part_size
    upload = await backend_client.create_multipart_upload(Bucket=target, Key="k/upload")
    for number, size in enumerate((part, 1000), start=1):
        await backend_client.upload_part(
            Bucket=target,
            Key="k/upload",
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=payload(size, number),
        )
    await ledger.upload_started(rows["k/upload"].id, "k/upload", upload["UploadId"])
    foreign = await backend_client.create_multipart_upload(Bucket=target, Key="elsewhere")

    dry = await run_cleanup(
        ledger, cleanup_of(None, what="leftovers", dryRun=True), secrets_of(endpoint)
    )
    assert (dry.counts.uploads_aborted, dry.counts.would_delete, dry.counts.deleted) == (1, 1, 0)
    assert await _uploads(backend_client, target) == {upload["UploadId"], foreign["UploadId"]}

    status = await run_cleanup(
        ledger, cleanup_of(None, name="c2", what="leftovers"), secrets_of(endpoint)
    )

    assert status.phase == "Completed"
    assert status.counts.uploads_aborted == 1
    assert status.counts.deleted == 1
    assert status.counts.bytes_freed == part + 1000 + 3 * KiB
    left = await keys_of(backend_client, target)
    assert "k/failed" not in left
    assert {"k/0", "k/1", "k/2", "k/rewritten"} <= set(left)
    assert await _uploads(backend_client, target) == {foreign["UploadId"]}
    assert await ledger.open_uploads(migration_id) == []
