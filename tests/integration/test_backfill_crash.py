"""The backfill killed for real: ``objmig run`` as a process, SIGKILLed in the middle of a
batch (once before the application's transaction commits, once after it committed and
before the ledger recorded it), then run again: no row written twice, none lost, the
counts exact.

Each crash point is held, not raced: a trigger makes the chosen statement wait for an
advisory lock the test holds, the test waits until PostgreSQL shows that statement
waiting, kills the process, and ends the statement's server session as the dead
connection would.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import yaml

from objmig.ledger import Ledger, ObjectState
from objmig.local.postgres import EmbeddedPostgres
from objmig.local.s3server import LocalS3Server
from tests.fixtures.s3 import S3Seeder
from tests.integration.test_backfill import KEYS, MISSING, PRESET, assert_backfilled, seed_files
from tests.support.appdb import FILES_QUERY, backfill_action, files_database, files_of

#: Held in the application's database: the batch holding this key waits mid-transaction.
BEFORE_COMMIT = KEYS[23]
#: Held in the ledger: this key's batch committed, its outcome waits to be recorded.
BEFORE_RECORD = KEYS[41]
LOCK = 4242


def _inputs(tmp_path: Path, endpoint: str, bucket: str, dsn: str) -> tuple[Path, Path]:
    side = {"endpoint": endpoint, "bucket": bucket, "credentialsSecretRef": {"name": "s3"}}
    spec = {
        "apiVersion": "objmig.dev/v1alpha1",
        "kind": "ObjectMigration",
        "metadata": {"name": "backfill", "namespace": "cli"},
        "spec": {
            "source": side,
            "copy": {"mode": "none"},
            "selection": {
                "manifest": {
                    "sql": {"dsnSecretRef": {"name": "app-db", "key": "dsn"}, "query": FILES_QUERY}
                }
            },
            "backfill": backfill_action(batchSize=10),
        },
    }
    secrets = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s3"},
            "stringData": {"accessKeyId": "cli-test", "secretAccessKey": "cli-test-secret"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "app-db"},
            "stringData": {"dsn": dsn},
        },
    ]
    spec_path = tmp_path / "backfill.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    secrets_path = tmp_path / "secrets.yaml"
    secrets_path.write_text(yaml.safe_dump_all(secrets))
    return spec_path, secrets_path


async def _start(spec: Path, secrets: Path, database_url: str) -> asyncio.subprocess.Process:
    command = [sys.executable, "-m", "objmig", "run", "-f", str(spec), "--secrets", str(secrets)]
    return await asyncio.create_subprocess_exec(
        *command,
        "--database-url",
        database_url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@asynccontextmanager
async def _held(dsn: str, table: str, when: str) -> AsyncIterator[asyncpg.Connection]:
    """A trigger on ``table`` that makes each row update matching ``when`` wait for the
    advisory lock this context holds; dropped, and the lock released, on exit."""
    holder = await asyncpg.connect(dsn)
    try:
        await holder.execute(
            f"""
            CREATE FUNCTION hold() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
                IF {when} THEN PERFORM pg_advisory_xact_lock_shared({LOCK}); END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER hold BEFORE UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION hold();
            SELECT pg_advisory_lock({LOCK});
            """
        )
        yield holder
    finally:
        await holder.execute(
            f"DROP TRIGGER hold ON {table}; DROP FUNCTION hold(); SELECT pg_advisory_unlock({LOCK})"
        )
        await holder.close()


async def _waiting(holder: asyncpg.Connection, run: asyncio.subprocess.Process) -> list[int]:
    """The sessions waiting for the held lock, once there are any (within a deadline)."""
    for _ in range(1200):
        pids = await holder.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
        )
        if pids:
            return [r["pid"] for r in pids]
        assert run.returncode is None, "objmig run ended before it reached the held statement"
        await asyncio.sleep(0.05)
    raise AssertionError("no statement came to wait for the held lock")


async def _killed_at(
    dsn: str, table: str, when: str, spec: Path, secrets: Path, database_url: str
) -> None:
    """Run ``objmig run`` until a row update of ``table`` matching ``when`` waits, SIGKILL
    it there, and end its waiting sessions as its death would."""
    async with _held(dsn, table, when) as holder:
        run = await _start(spec, secrets, database_url)
        try:
            waiting = await _waiting(holder, run)
            run.send_signal(signal.SIGKILL)
            await asyncio.wait_for(run.communicate(), timeout=30)
            assert run.returncode == -signal.SIGKILL
            for pid in waiting:
                await holder.execute("SELECT pg_terminate_backend($1)", pid)
        finally:
            if run.returncode is None:
                run.kill()


async def test_objmig_run_killed_mid_batch_twice_then_rerun_writes_each_row_exactly_once(
    ledger: Ledger,
    database_url: str,
    postgres_server: EmbeddedPostgres,
    s3_server: LocalS3Server,
    s3_seed: S3Seeder,
    tmp_path: Path,
) -> None:
    bucket, modified = await seed_files(s3_seed)
    async with files_database(postgres_server, KEYS, PRESET) as dsn:
        spec, secrets = _inputs(tmp_path, s3_server.endpoint_url, bucket, dsn)

        # 1. Killed inside the application's transaction: the batch was planned in the
        #    ledger, some of its rows updated, nothing committed.
        when = f"NEW.location_key = '{BEFORE_COMMIT}'"
        await _killed_at(dsn, "files", when, spec, secrets, database_url)
        migration_id = await ledger.find_migration("cli/backfill")
        assert migration_id is not None
        rows = {r.key: r async for r in ledger.iter_rows(migration_id)}
        assert rows[BEFORE_COMMIT].backfill is not None
        assert "plan" in (rows[BEFORE_COMMIT].backfill or {})
        assert rows[BEFORE_COMMIT].backfilled_at is None
        files = await files_of(dsn)
        assert files[BEFORE_COMMIT]["writes"] == 0
        assert all(f["writes"] <= 1 for f in files.values())
        written_first = {k for k, f in files.items() if f["writes"]}
        assert written_first, "the kill came before any batch was written"

        # 2. Killed after the application committed a batch, before the ledger recorded it.
        when = (
            f"NEW.key = '{BEFORE_RECORD}' AND NEW.backfilled_at IS NOT NULL "
            "AND OLD.backfilled_at IS NULL"
        )
        await _killed_at(database_url, "objects", when, spec, secrets, database_url)
        rows = {r.key: r async for r in ledger.iter_rows(migration_id)}
        assert rows[BEFORE_RECORD].backfilled_at is None
        assert rows[BEFORE_RECORD].backfill is not None
        assert "plan" in (rows[BEFORE_RECORD].backfill or {})
        files = await files_of(dsn)
        assert files[BEFORE_RECORD]["writes"] == 1  # committed before the kill
        assert all(f["writes"] <= 1 for f in files.values())

        # 3. Run again to the end.
        third = await _start(spec, secrets, database_url)
        output, _ = await asyncio.wait_for(third.communicate(), timeout=300)
        assert third.returncode == 0, output.decode()

        await assert_backfilled(dsn, s3_seed, bucket, modified)
    rows = {r.key: r async for r in ledger.iter_rows(migration_id)}
    existing = [r for k, r in rows.items() if k not in MISSING]
    assert all(r.state is ObjectState.VERIFIED for r in existing)
    assert {r.backfill["outcome"] for r in existing if r.backfill} == {"written"}
    assert all(r.backfilled_at is not None for r in existing)
    assert {r.skip_reason for k, r in rows.items() if k in MISSING} == {"NotFound"}
    steps = await ledger.step_counts(
        migration_id, missing_reason="NotFound", hook_pending_reason="HookPending"
    )
    assert (steps.backfill_written, steps.backfill_already_set, steps.missing) == (55, 0, 5)
