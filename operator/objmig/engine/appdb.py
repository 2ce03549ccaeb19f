"""The application's own PostgreSQL database, as every part of objmig that talks to it does.

Three things read or write it: the SQL worklist (`selection.manifest.sql`, read by the
scan), the catalog's location swap at cutover (`cutover.catalog`, `engine.cutover`) and the
backfill (`spec.backfill`, `engine.backfill`). They share what is here: how a connection is
opened (UTC, so times read back as text compare alike), how identifiers are quoted, how rows
are grouped into one transaction's batch, and how a column's type is learnt so that values
travel as text and are cast by the server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeAlias, TypeVar

import asyncpg

from objmig.api.conditions import Reason
from objmig.engine.pipeline.outcomes import ApplicationError

T = TypeVar("T")

#: Rows a worklist cursor fetches per round trip.
WORKLIST_PREFETCH = 2_000
#: How long objmig waits for the application's database to accept a connection.
CONNECT_TIMEOUT = 30.0

# A string: asyncpg's classes are generic only in its type stubs, not at run time.
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record]"


class ApplicationDatabaseError(Exception):
    """The application's database failed a request (its cause says how); kept apart from
    the ledger's failures, which stop a worker instead of failing objects."""


async def answer(request: Awaitable[T]) -> T:
    """The application's database's answer to ``request``; its failures become
    `ApplicationDatabaseError`."""
    try:
        return await request
    except Exception as error:
        raise ApplicationDatabaseError(describe_error(error)) from error


def quote_identifier(name: str) -> str:
    """``schema.table`` or ``column`` as a quoted identifier.

    The API models restrict names to ``[A-Za-z_][A-Za-z0-9_]*`` (optionally
    ``schema.table``); quoting keeps mixed case intact and makes the SQL safe by
    construction anyway.
    """
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


async def connect(dsn: str) -> Connection:
    """A connection to the application's database (close it).

    The session runs in UTC: timestamps read back as text then compare with what objmig
    wrote, whatever the server's default time zone.
    """
    conn: Connection = await asyncpg.connect(
        dsn,
        timeout=CONNECT_TIMEOUT,
        server_settings={"timezone": "UTC", "application_name": "objmig"},
    )
    return conn


@asynccontextmanager
async def connection(dsn: str) -> AsyncIterator[Connection]:
    """One connection to the application's database (see `connect`), closed after."""
    conn = await connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def batches(rows: AsyncIterator[T], size: int) -> AsyncIterator[list[T]]:
    """``rows`` in lists of ``size`` (the last one shorter): one transaction's worth each."""
    batch: list[T] = []
    async for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass(frozen=True)
class Table:
    """A table of the application's database and the types of the columns objmig uses."""

    name: str
    types: dict[str, str]  # column -> its type as format_type() spells it

    @property
    def quoted(self) -> str:
        return quote_identifier(self.name)


async def describe_table(conn: Connection, table: str, columns: Sequence[tuple[str, str]]) -> Table:
    """The table and its columns' types; ``columns`` are (column, the spec field naming it).

    Raises `ApplicationError` (``BackfillInvalid``) naming the field when the table or a
    column does not exist, before anything is written.
    """
    records = await conn.fetch(
        """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type
        FROM pg_attribute a
        WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
        """,
        quote_identifier(table),
    )
    if not records:
        raise ApplicationError(
            Reason.BACKFILL_INVALID,
            f"spec.backfill.table: table {table!r} does not exist in the application's "
            "database (or this user cannot see it)",
        )
    types = {r["attname"]: r["type"] for r in records}
    for column, field in columns:
        if column not in types:
            raise ApplicationError(
                Reason.BACKFILL_INVALID,
                f"{field}: column {column!r} does not exist in table {table!r} "
                f"(it has {', '.join(sorted(types))})",
            )
    return Table(table, {column: types[column] for column, _ in columns})


@dataclass(frozen=True)
class WorklistRow:
    """One row of a SQL worklist: the object's key and, if the query returned one, its id."""

    key: str
    row_id: str | None


_QUERY_FIELD = "spec.selection.manifest.sql.query"


async def stream_worklist(dsn: str, query: str) -> AsyncIterator[WorklistRow]:
    """The rows of the worklist query, streamed through a cursor in a read-only transaction.

    The query must return a column ``key`` (and may return ``id``). A query the database
    refuses, or one without a ``key`` column, raises `ApplicationError`
    (``WorklistQueryFailed``) naming the field; it fails at its first fetch, before any
    row reached the ledger.
    """
    try:
        async with connection(dsn) as conn, conn.transaction(readonly=True):
            first = True
            async for record in conn.cursor(query, prefetch=WORKLIST_PREFETCH):
                if first:
                    _check_worklist_columns(record)
                    first = False
                key = record["key"]
                if key is None:
                    continue
                row_id = record.get("id")
                yield WorklistRow(str(key), None if row_id is None else str(row_id))
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
        raise ApplicationError(
            Reason.WORKLIST_QUERY_FAILED,
            f"{_QUERY_FIELD}: the application's database refused it: {describe_error(error)}",
        ) from None


def describe_error(error: BaseException) -> str:
    """A database error as one line: its class and message (a DSN is never part of it)."""
    return f"{type(error).__name__}: {error}".splitlines()[0]


def _check_worklist_columns(record: asyncpg.Record) -> None:
    if "key" not in record:
        raise ApplicationError(
            Reason.WORKLIST_QUERY_FAILED,
            f"{_QUERY_FIELD}: the query must return a column named key (and may return id); "
            f"it returned {', '.join(record.keys())}",
        )
