"""Versioned schema of the ledger database.

The schema is a list of SQL files, ``sql/NNNN_name.sql``, applied in order. Each file runs
in its own transaction together with the row that records it in ``objmig_schema_version``,
so a crash leaves the database at a clean version. Every process (operator, each worker, the
CLI) calls :func:`apply_schema` at start-up; a session-level advisory lock makes them take
turns, and the first one does the work.

A database whose version is *newer* than this code's is refused (:class:`SchemaTooNew`): an
old worker image must not write rows whose meaning it no longer knows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

__all__ = [
    "SCHEMA_LOCK_KEY",
    "SchemaMigration",
    "SchemaTooNew",
    "apply_schema",
    "code_schema_version",
    "database_schema_version",
    "load_schema_migrations",
]

#: Advisory lock key held while the schema is applied ("objmig" in ASCII).
SCHEMA_LOCK_KEY = 0x6F626A6D6967

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS objmig_schema_version (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""

# Strings: asyncpg's classes are generic only in its type stubs, not at run time.
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"
ConnectionOrPool: TypeAlias = "Connection | asyncpg.Pool[asyncpg.Record]"


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer objmig than this one."""

    def __init__(self, database_version: int, code_version: int) -> None:
        self.database_version = database_version
        self.code_version = code_version
        super().__init__(
            f"the ledger database is at schema version {database_version}, but this objmig "
            f"only knows versions up to {code_version}: upgrade objmig (all workers and the "
            "operator should run the same version) or point it at another database"
        )


@dataclass(frozen=True, slots=True)
class SchemaMigration:
    """One schema file."""

    version: int
    name: str
    sql: str


def load_schema_migrations() -> list[SchemaMigration]:
    """Read the packaged ``sql/NNNN_name.sql`` files, ordered by version.

    Raises:
        RuntimeError: when versions are not 1, 2, 3, ... without gaps (a packaging mistake).
    """
    found: list[SchemaMigration] = []
    for entry in resources.files("objmig.ledger").joinpath("sql").iterdir():
        match = _FILE_NAME.match(entry.name)
        if match is None:
            continue
        found.append(
            SchemaMigration(
                version=int(match.group(1)),
                name=match.group(2),
                sql=entry.read_text(encoding="utf-8"),
            )
        )
    found.sort(key=lambda m: m.version)
    expected = list(range(1, len(found) + 1))
    if [m.version for m in found] != expected:
        raise RuntimeError(
            f"ledger schema files must be numbered 1..n without gaps, got "
            f"{[m.version for m in found]}"
        )
    return found


def code_schema_version() -> int:
    """The newest schema version this code knows."""
    return len(load_schema_migrations())


async def database_schema_version(conn: Connection) -> int:
    """The schema version recorded in the database (0 for an empty database)."""
    exists = await conn.fetchval("SELECT to_regclass('objmig_schema_version') IS NOT NULL")
    if not exists:
        return 0
    version = await conn.fetchval("SELECT coalesce(max(version), 0) FROM objmig_schema_version")
    return int(version)


async def apply_schema(target: ConnectionOrPool, *, up_to: int | None = None) -> int:
    """Bring the database up to this code's schema version; safe to call from every process.

    Args:
        target: a connection, or a pool to borrow one from.
        up_to: stop at this version (what an older objmig left: upgrade tests).

    Returns:
        The schema version the database is at afterwards.

    Raises:
        SchemaTooNew: the database is at a version newer than this code's.
    """
    if isinstance(target, asyncpg.Pool):
        async with target.acquire() as conn:
            return await _apply(conn, up_to)
    return await _apply(target, up_to)


async def _apply(conn: Connection, up_to: int | None) -> int:
    migrations = load_schema_migrations()
    code_version = len(migrations)
    # A session lock, not a transaction lock: each file commits on its own, and the lock must
    # cover the version check and all the files.
    await conn.execute("SELECT pg_advisory_lock($1)", SCHEMA_LOCK_KEY)
    try:
        await conn.execute(_VERSION_TABLE)
        current = await database_schema_version(conn)
        if current > code_version:
            raise SchemaTooNew(current, code_version)
        for migration in migrations:
            if migration.version <= current or (up_to is not None and migration.version > up_to):
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO objmig_schema_version (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            current = migration.version
        return current
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", SCHEMA_LOCK_KEY)
