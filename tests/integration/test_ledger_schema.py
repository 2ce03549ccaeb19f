"""Schema versioning of the ledger database against a real PostgreSQL."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from objmig.ledger import (
    InventoryRow,
    Ledger,
    ObjectState,
    SchemaTooNew,
    StateCount,
    apply_schema,
    code_schema_version,
)
from objmig.ledger import schema as ledger_schema
from objmig.ledger.report import DigestBuilder
from objmig.ledger.schema import database_schema_version, load_schema_migrations


def test_schema_files_are_numbered_from_one_without_gaps() -> None:
    migrations = load_schema_migrations()

    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert code_schema_version() == len(migrations) >= 1


async def test_apply_schema_is_idempotent(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        first = await apply_schema(conn)
        second = await apply_schema(conn)
        applied = await conn.fetchval("SELECT count(*) FROM objmig_schema_version")
    finally:
        await conn.close()

    assert first == second == code_schema_version()
    assert applied == code_schema_version()


async def test_a_ledger_one_version_behind_is_upgraded_with_its_rows(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The ledger an objmig one release older made (every schema file but the last: up to
    # main's 0006_buckets), with a migration and an object in it: the next start-up applies
    # the last file (0007_writes), and the row reads with every column this code selects.
    migrations = load_schema_migrations()
    older = migrations[:-1]
    monkeypatch.setattr(ledger_schema, "load_schema_migrations", lambda: older)
    conn = await asyncpg.connect(database_url)
    try:
        assert await apply_schema(conn) == len(older)
        migration_id = await conn.fetchval(
            "INSERT INTO migrations (name) VALUES ('default/older') RETURNING id"
        )
        object_id = await conn.fetchval(
            "INSERT INTO objects (migration_id, key, size, etag, state)"
            " VALUES ($1, 'a/b.txt', 3, 'abc', 'verified') RETURNING id",
            migration_id,
        )
    finally:
        await conn.close()
    monkeypatch.undo()

    ledger = await Ledger.connect(database_url, min_size=1, max_size=2)
    try:
        versions = await ledger.pool.fetch(
            "SELECT version, name FROM objmig_schema_version ORDER BY version"
        )
        row = await ledger.get_object(object_id)
    finally:
        await ledger.close()

    assert [(r["version"], r["name"]) for r in versions] == [
        (m.version, m.name) for m in migrations
    ]
    assert row is not None
    assert (row.migration_id, row.key, row.size, row.etag) == (migration_id, "a/b.txt", 3, "abc")


async def test_concurrent_start_ups_apply_the_schema_once(database_url: str) -> None:
    ledgers = await asyncio.gather(
        *(Ledger.connect(database_url, min_size=1, max_size=2) for _ in range(6))
    )
    try:
        versions = await ledgers[0].pool.fetch("SELECT version FROM objmig_schema_version")
    finally:
        await asyncio.gather(*(ledger.close() for ledger in ledgers))

    assert sorted(r["version"] for r in versions) == list(range(1, code_schema_version() + 1))


async def test_database_with_a_newer_schema_is_refused(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await apply_schema(conn)
        newer = code_schema_version() + 1
        await conn.execute(
            "INSERT INTO objmig_schema_version (version, name) VALUES ($1, 'from_the_future')",
            newer,
        )
        assert await database_schema_version(conn) == newer
    finally:
        await conn.close()

    with pytest.raises(SchemaTooNew, match=rf"schema version {newer}.*upgrade objmig"):
        await Ledger.connect(database_url)


async def test_schema_lock_is_released_after_a_refusal(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await apply_schema(conn)
        await conn.execute(
            "INSERT INTO objmig_schema_version (version, name) VALUES ($1, 'future')",
            code_schema_version() + 1,
        )
        with pytest.raises(SchemaTooNew):
            await apply_schema(conn)
        held = await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
    finally:
        await conn.close()

    assert held == 0


async def test_a_ledger_of_schema_5_upgrades_in_order_and_keeps_its_rows(
    database_url: str,
) -> None:
    """A ledger written before schema 6 (the bucket of each object): its rows become rows
    of no bucket, with their counts, their digest and their identity as they were."""
    conn = await asyncpg.connect(database_url)
    try:
        assert await apply_schema(conn, up_to=5) == 5
        migration_id = await conn.fetchval(
            "INSERT INTO migrations (name) VALUES ('ns/old') RETURNING id"
        )
        # As version 5 wrote them: no bucket column yet.
        await conn.executemany(
            """
            INSERT INTO objects (migration_id, key, size, etag, target_key, target_etag,
                                 source_checksum, state, row_id)
            VALUES ($1, $2, $3, $4, $2, $4, $5, $6, $7)
            """,
            [
                (migration_id, "a/1", 10, "e1", "sha256:aa", "verified", "r1"),
                (migration_id, "a/2", 20, "e2", None, "verified", None),
                (migration_id, "b/3", 30, "e3", None, "pending", None),
            ],
        )
        await conn.execute(
            "INSERT INTO worker_activity (migration_id, owner, bytes_moved) VALUES ($1, 'w', 30)",
            migration_id,
        )
        assert await database_schema_version(conn) == 5

        assert await apply_schema(conn) == code_schema_version() == 7
        applied = await conn.fetch("SELECT version, name FROM objmig_schema_version ORDER BY 1")
    finally:
        await conn.close()

    assert [(r["version"], r["name"]) for r in applied][3:] == [
        (4, "worker_activity"),
        (5, "verified_by"),
        (6, "buckets"),
        (7, "writes"),
    ]
    expected = DigestBuilder()
    expected.add("a/1", "", 10, "e1", "a/1", "e1", "sha256:aa")
    expected.add("a/2", "", 20, "e2", "a/2", "e2", None)
    async with await Ledger.connect(database_url) as ledger:
        counts = await ledger.counts(migration_id)
        assert counts.state(ObjectState.VERIFIED) == StateCount(objects=2, bytes=30)
        assert counts.state(ObjectState.PENDING) == StateCount(objects=1, bytes=30)
        assert set(await ledger.bucket_counts(migration_id)) == {""}
        digest = await ledger.verification_digest(migration_id)
        assert (digest.sha256, digest.objects, digest.buckets) == (expected.hexdigest(), 2, {})
        assert (await ledger.activity(migration_id)).bytes_moved == 30

        # The same object listed again is the same row; another bucket's is another row.
        await ledger.upsert_inventory(
            migration_id,
            [InventoryRow(key="b/3", size=30, etag="e3"), InventoryRow("b/3", 5, "x", bucket="c")],
            scan_id=1,
        )
        one = await ledger.find_object(migration_id, "a/1")
        assert one is not None
        assert (one.bucket, one.row_id) == ("", "r1")
        other = await ledger.find_object(migration_id, "b/3", bucket="c")
        assert other is not None
        assert other.size == 5
        counts = await ledger.counts(migration_id)
        assert counts.total == StateCount(objects=4, bytes=65)
        assert (await ledger.bucket_counts(migration_id))["c"] == {
            ObjectState.PENDING: StateCount(objects=1, bytes=5)
        }
