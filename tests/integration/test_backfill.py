"""Backfilling object attributes into the application's own database (write-up 001).

The worklist comes from the application's `files` table (a separate database on the test
PostgreSQL server, with a real unique key), the run copies nothing (copy.mode none), and
each existing object's ETag, last-modified (epoch milliseconds) and size land in its row.
A trigger in the application's database counts the writes that changed each row.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from typing import Any

import asyncpg
import pytest

from objmig.api.migration import ObjectMigration
from objmig.engine.secrets import EnvSecrets, SecretNotFound, env_name
from objmig.ledger import Ledger, ObjectState
from objmig.local.postgres import EmbeddedPostgres
from objmig.storage.endpoint import Endpoint
from tests.fixtures.s3 import S3Seeder
from tests.integration.engine_support import migration, rows_of, run, secrets_for
from tests.support.appdb import FILES_QUERY, backfill_action, execute, files_database, files_of

KEYS = [f"files/{i:03d}.bin" for i in range(60)]
#: Files the table lists but the bucket lacks (orphaned records, as the write-up says).
MISSING = set(KEYS[7::12])
#: A file whose hash the application set itself before the backfill.
PRESET = {KEYS[1]: "set-by-the-app"}


def look_only(
    endpoint: Endpoint, bucket: str, query: str = FILES_QUERY, **spec: Any
) -> ObjectMigration:
    """copy.mode none over the files the application's table lists, backfilling them."""
    spec.setdefault("backfill", backfill_action(batchSize=10))
    return migration(
        endpoint,
        bucket,
        bucket,
        copy={"mode": "none"},
        selection={
            "manifest": {"sql": {"dsnSecretRef": {"name": "app-db", "key": "dsn"}, "query": query}}
        },
        **spec,
    )


def with_app(endpoint: Endpoint, dsn: str) -> EnvSecrets:
    return secrets_for(endpoint, **{env_name("app-db", "dsn"): dsn})


async def seed_files(seed: S3Seeder) -> tuple[str, dict[str, int]]:
    """The bucket with every listed file but the missing ones; epoch ms of each."""
    bucket = await seed.bucket()
    modified = {}
    for index, key in enumerate(KEYS):
        if key not in MISSING:
            await seed.put_object(bucket, key, 100 + index)
            head = await seed.client.head_object(Bucket=bucket, Key=key)
            modified[key] = int(head["LastModified"].timestamp()) * 1000
    return bucket, modified


async def assert_backfilled(
    dsn: str, seed: S3Seeder, bucket: str, modified: dict[str, int]
) -> None:
    """Every existing file's row holds its attributes, written once; missing ones nothing."""
    files = await files_of(dsn)
    for index, key in enumerate(KEYS):
        row = files[key]
        if key in MISSING:
            assert (row["hash"], row["last_modified"], row["size"], row["writes"]) == (
                None,
                None,
                None,
                0,
            ), key
            continue
        head = await seed.client.head_object(Bucket=bucket, Key=key)
        assert row["hash"] == PRESET.get(key, head["ETag"].strip('"')), key
        assert row["last_modified"] == modified[key], key
        assert row["size"] == 100 + index, key
        assert row["writes"] == 1, key


async def test_backfill_writes_each_existing_objects_attributes_once_and_skips_the_missing(
    ledger: Ledger,
    database_url: str,
    postgres_server: EmbeddedPostgres,
    s3_seed: S3Seeder,
    s3_endpoint: Endpoint,
) -> None:
    bucket, modified = await seed_files(s3_seed)
    async with files_database(postgres_server, KEYS, PRESET) as dsn:
        result = await run(
            ledger, look_only(s3_endpoint, bucket), s3_endpoint, secrets=with_app(s3_endpoint, dsn)
        )

        assert result.outcome == "cut-over", result.status.conditions
        await assert_backfilled(dsn, s3_seed, bucket, modified)
    rows = await rows_of(ledger)
    assert {k for k, r in rows.items() if r.state is ObjectState.SKIPPED} == MISSING
    assert {r.skip_reason for k, r in rows.items() if k in MISSING} == {"NotFound"}
    assert all(r.row_id is not None for r in rows.values())
    objects = result.status.progress.objects
    assert (objects.total, objects.processed, objects.remaining) == (60, 60, 0)
    assert (objects.succeeded, objects.skipped, objects.failed) == (55, 5, 0)
    assert result.status.progress.percent == 100
    steps = result.status.steps
    assert steps is not None
    assert (steps.missing, steps.backfill_written, steps.backfill_already_set) == (5, 55, 0)

    # `objmig status` says it the write-up's way: total, processed, remaining, succeeded,
    # failed, completion %.
    command = [sys.executable, "-m", "objmig", "status", "test/m", "--database-url", database_url]
    shown = await asyncio.to_thread(
        subprocess.run, [*command, "--json"], capture_output=True, text=True, check=True
    )
    status = json.loads(shown.stdout)
    assert status["progress"]["objects"] | {"inProgress": 0} == {
        "total": 60,
        "pending": 0,
        "inProgress": 0,
        "stalled": 0,
        "succeeded": 55,
        "failed": 0,
        "skipped": 5,
        "processed": 60,
        "remaining": 0,
    }
    assert status["progress"]["percent"] == 100
    assert status["steps"]["missing"] == 5
    assert status["steps"]["backfillWritten"] == 55
    table = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, check=True
    )
    for label, value in (("processed", "60"), ("remaining", "0"), ("complete", "100%")):
        assert re.search(rf"│ {label} +│ +{value} │", table.stdout), (label, table.stdout)


async def test_a_crash_mid_batch_and_a_re_run_lose_no_row_and_write_none_twice(
    ledger: Ledger, postgres_server: EmbeddedPostgres, s3_seed: S3Seeder, s3_endpoint: Endpoint
) -> None:
    bucket, modified = await seed_files(s3_seed)
    crash_at = KEYS[23]
    # The ledger refuses to record the outcome of the batch holding `crash_at`, after the
    # application's transaction committed: the worst moment for a crash.
    await ledger.pool.execute(
        f"""
        CREATE FUNCTION crash() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
            IF NEW.backfilled_at IS NOT NULL AND OLD.backfilled_at IS NULL
               AND NEW.key = '{crash_at}' THEN
                RAISE EXCEPTION 'the worker died here';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER crash BEFORE UPDATE ON objects FOR EACH ROW EXECUTE FUNCTION crash();
        """
    )
    async with files_database(postgres_server, KEYS, PRESET) as dsn:
        secrets = with_app(s3_endpoint, dsn)
        resource = look_only(s3_endpoint, bucket)
        with pytest.raises(asyncpg.RaiseError, match="the worker died here"):
            await run(ledger, resource, s3_endpoint, secrets=secrets)
        stopped = await rows_of(ledger)
        planned = [r for r in stopped.values() if r.backfill and "plan" in r.backfill]
        assert any(r.key == crash_at for r in planned)
        assert all(r.backfilled_at is None for r in planned)
        written_before = await files_of(dsn)
        assert written_before[crash_at]["writes"] == 1  # committed before the crash

        await ledger.pool.execute("DROP TRIGGER crash ON objects")
        result = await run(ledger, resource, s3_endpoint, secrets=secrets)

        assert result.outcome == "cut-over", result.status.conditions
        await assert_backfilled(dsn, s3_seed, bucket, modified)
    rows = await rows_of(ledger)
    done = [r for r in rows.values() if r.state is ObjectState.VERIFIED]
    assert len(done) == 55
    assert all(r.backfilled_at is not None and r.backfill["outcome"] == "written" for r in done)
    steps = result.status.steps
    assert steps is not None
    assert (steps.backfill_written, steps.missing) == (55, 5)


async def test_rollback_takes_back_exactly_what_the_backfill_wrote(
    ledger: Ledger, postgres_server: EmbeddedPostgres, s3_seed: S3Seeder, s3_endpoint: Endpoint
) -> None:
    bucket, _ = await seed_files(s3_seed)
    async with files_database(postgres_server, KEYS, PRESET) as dsn:
        secrets = with_app(s3_endpoint, dsn)
        result = await run(ledger, look_only(s3_endpoint, bucket), s3_endpoint, secrets=secrets)
        assert result.outcome == "cut-over"
        # The application changes one value objmig wrote, after the backfill.
        changed = KEYS[2]
        await execute(dsn, "UPDATE files SET size = 1 WHERE location_key = $1", changed)

        rolled = await run(
            ledger,
            look_only(s3_endpoint, bucket, cutover={"rollback": True}),
            s3_endpoint,
            secrets=secrets,
        )

        assert rolled.outcome == "rolled-back", rolled.status.conditions
        files = await files_of(dsn)
        for key in KEYS:
            row = files[key]
            expected_size = 1 if key == changed else None
            assert row["size"] == expected_size, key
            assert row["last_modified"] is None, key
            assert row["hash"] == PRESET.get(key), key
        assert "55 rows put back" in " ".join(rolled.status.cutover.actions)
    rows = await rows_of(ledger)
    assert all(r.backfill is None and r.backfilled_at is None for r in rows.values())


async def test_a_backfill_column_that_does_not_exist_fails_the_run_before_anything_is_written(
    ledger: Ledger, postgres_server: EmbeddedPostgres, s3_seed: S3Seeder, s3_endpoint: Endpoint
) -> None:
    bucket, _ = await seed_files(s3_seed)
    async with files_database(postgres_server, KEYS) as dsn:
        columns = {"hash": "hsh", "size": "size"}
        resource = look_only(s3_endpoint, bucket, backfill=backfill_action(columns=columns))
        result = await run(ledger, resource, s3_endpoint, secrets=with_app(s3_endpoint, dsn))

        failed = next(c for c in result.status.conditions if c.type == "Failed")
        assert result.outcome == "failed"
        assert (failed.status, failed.reason) == ("True", "BackfillInvalid")
        assert failed.message.startswith("spec.backfill.columns.hash: column 'hsh' does not exist")
        assert all(row["writes"] == 0 for row in (await files_of(dsn)).values())
    assert await rows_of(ledger) == {}


async def test_an_attribute_its_column_cannot_hold_is_refused_naming_the_field(
    ledger: Ledger, postgres_server: EmbeddedPostgres, s3_seed: S3Seeder, s3_endpoint: Endpoint
) -> None:
    bucket, _ = await seed_files(s3_seed)
    async with files_database(postgres_server, KEYS) as dsn:
        # last_modified is a bigint: an RFC 3339 time does not fit.
        action = backfill_action(lastModifiedAs="timestamp")
        resource = look_only(s3_endpoint, bucket, backfill=action)
        result = await run(ledger, resource, s3_endpoint, secrets=with_app(s3_endpoint, dsn))

        failed = next(c for c in result.status.conditions if c.type == "Failed")
        assert failed.reason == "BackfillInvalid"
        assert "spec.backfill.columns.lastModified: column 'last_modified' is bigint" in (
            failed.message
        )
        assert all(row["writes"] == 0 for row in (await files_of(dsn)).values())


async def test_a_worklist_query_that_fails_fails_the_run_naming_the_field(
    ledger: Ledger, postgres_server: EmbeddedPostgres, s3_seed: S3Seeder, s3_endpoint: Endpoint
) -> None:
    bucket, _ = await seed_files(s3_seed)
    async with files_database(postgres_server, KEYS) as dsn:
        resource = look_only(s3_endpoint, bucket, "SELECT location_key AS key FROM filez")
        result = await run(ledger, resource, s3_endpoint, secrets=with_app(s3_endpoint, dsn))

        failed = next(c for c in result.status.conditions if c.type == "Failed")
        assert result.outcome == "failed"
        assert failed.reason == "WorklistQueryFailed"
        assert failed.message.startswith("spec.selection.manifest.sql.query:")
        assert 'relation "filez" does not exist' in failed.message
        assert all(row["writes"] == 0 for row in (await files_of(dsn)).values())
    assert await rows_of(ledger) == {}


async def test_a_missing_dsn_secret_is_refused_naming_the_field(
    ledger: Ledger, s3_seed: S3Seeder, s3_endpoint: Endpoint
) -> None:
    bucket, _ = await seed_files(s3_seed)
    with pytest.raises(SecretNotFound) as refused:
        await run(ledger, look_only(s3_endpoint, bucket), s3_endpoint)
    assert "Secret 'app-db' has no key 'dsn' (spec.selection.manifest.sql.dsnSecretRef)" in str(
        refused.value
    )
    assert await ledger.list_migrations() == []


async def test_after_a_copy_the_targets_attributes_are_written_with_the_location_swap(
    ledger: Ledger, postgres_server: EmbeddedPostgres, s3_seed: S3Seeder, s3_endpoint: Endpoint
) -> None:
    source, target = await s3_seed.bucket(), await s3_seed.bucket()
    keys = [f"docs/{i}.pdf" for i in range(12)]
    for index, key in enumerate(keys):
        await s3_seed.put_object(source, key, 300 + index)
    async with files_database(postgres_server, keys, bucket=source) as dsn:
        secrets = with_app(s3_endpoint, dsn)
        cutover = {
            "catalog": {
                "dsnSecretRef": {"name": "app-db", "key": "dsn"},
                "table": "files",
                "keyColumn": "location_key",
                "locationColumn": "location",
            }
        }
        backfill = backfill_action(match="key", keyColumn="location_key", batchSize=5)
        # Stored with SSE-S3 on the target, read back by its own HEAD.
        resource = migration(
            s3_endpoint, source, target, cutover=cutover, backfill=backfill,
            target_extra={"encryption": {"mode": "SSE-S3"}},
        )  # fmt: skip

        result = await run(ledger, resource, s3_endpoint, secrets=secrets)

        assert result.outcome == "cut-over", result.status.conditions
        files = await files_of(dsn)
        for index, key in enumerate(keys):
            head = await s3_seed.client.head_object(Bucket=target, Key=key)
            row = files[key]
            assert row["location"] == f"s3://{target}/{key}"
            assert row["hash"] == head["ETag"].strip('"')
            assert row["last_modified"] == int(head["LastModified"].timestamp()) * 1000
            assert (row["size"], row["writes"]) == (300 + index, 2)  # the swap, the backfill
        assert any(
            a.startswith("backfill files: 12 rows written") for a in result.status.cutover.actions
        )

        rolled = await run(
            ledger,
            migration(
                s3_endpoint, source, target, backfill=backfill,
                cutover={**cutover, "rollback": True},
                target_extra={"encryption": {"mode": "SSE-S3"}},
            ),
            s3_endpoint,
            secrets=secrets,
        )  # fmt: skip

        assert rolled.outcome == "rolled-back"
        for key, row in (await files_of(dsn)).items():
            assert row["location"] == f"s3://{source}/{key}"
            assert (row["hash"], row["last_modified"], row["size"]) == (None, None, None)
