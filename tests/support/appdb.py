"""An application's own database with a `files` table, as the backfill write-up has it.

The table keys files by a generated id and holds each file's object key (unique); the
backfill fills `hash`, `last_modified` (epoch milliseconds) and `size`. A trigger counts,
per row, the updates that changed anything, so a test can prove no row was written twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg

from objmig.local.postgres import EmbeddedPostgres
from tests.fixtures.postgres import scratch_database

FILES_DDL = """
CREATE TABLE files (
    id            bigserial PRIMARY KEY,
    location_key  text NOT NULL UNIQUE,
    hash          text,
    last_modified bigint,
    size          bigint,
    location      text
);
CREATE TABLE file_writes (file_id bigint PRIMARY KEY, writes integer NOT NULL);
CREATE FUNCTION count_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO file_writes VALUES (NEW.id, 1)
    ON CONFLICT (file_id) DO UPDATE SET writes = file_writes.writes + 1;
    RETURN NEW;
END $$;
CREATE TRIGGER count_write AFTER UPDATE ON files FOR EACH ROW
    WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION count_write();
"""

#: The worklist query of the write-up: every file, with its row id.
FILES_QUERY = "SELECT location_key AS key, id FROM files ORDER BY id"


@contextlib.asynccontextmanager
async def files_database(
    server: EmbeddedPostgres,
    keys: Sequence[str],
    preset: dict[str, str] | None = None,
    *,
    bucket: str | None = None,
) -> AsyncIterator[str]:
    """A fresh database whose `files` table has one row per key (ids in key order);
    ``preset`` gives some rows a hash already, as the application wrote it; ``bucket``
    gives each row its location there (``s3://bucket/key``), for a catalog cutover."""
    async with scratch_database(server, "app") as dsn:
        app = await asyncpg.connect(dsn)
        try:
            await app.execute(FILES_DDL)
            await app.executemany(
                "INSERT INTO files (location_key, hash, location) VALUES ($1, $2, $3)",
                [
                    (key, (preset or {}).get(key), f"s3://{bucket}/{key}" if bucket else None)
                    for key in keys
                ],
            )
        finally:
            await app.close()
        yield dsn


async def files_of(dsn: str) -> dict[str, dict[str, Any]]:
    """Every file row by key, with the number of writes that changed it."""
    app = await asyncpg.connect(dsn)
    try:
        records = await app.fetch(
            """
            SELECT f.*, coalesce(w.writes, 0) AS writes
            FROM files f LEFT JOIN file_writes w ON w.file_id = f.id
            """
        )
    finally:
        await app.close()
    return {r["location_key"]: dict(r) for r in records}


async def execute(dsn: str, statement: str, *args: Any) -> None:
    """Run one statement in the application's database (as the application would)."""
    app = await asyncpg.connect(dsn)
    try:
        await app.execute(statement, *args)
    finally:
        await app.close()


def backfill_action(**overrides: Any) -> dict[str, Any]:
    """spec.backfill of the write-up: ETag as hash, last-modified in epoch ms, size."""
    return {
        "dsnSecretRef": {"name": "app-db", "key": "dsn"},
        "table": "files",
        "keyColumn": "id",
        "match": "id",
        "columns": {"hash": "hash", "lastModified": "last_modified", "size": "size"},
        **overrides,
    }
