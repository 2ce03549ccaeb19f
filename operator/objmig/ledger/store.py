"""The ledger: per-object state of every migration, in PostgreSQL (asyncpg).

Workers, the operator and the CLI share one ``Ledger`` API. Work is handed out with leases:
``claim`` locks a batch of rows with ``FOR UPDATE SKIP LOCKED`` and stamps them with an owner
and an expiry; ``record`` writes the outcome only if the caller still owns the lease. A
worker that dies simply stops renewing; once its leases expire the rows are claimable again,
so nothing is lost and nothing is done twice *as far as the ledger is concerned* (the steps
themselves re-check before they act, which covers the window in between).

All SQL is parameterised; the only identifiers built in Python are fixed strings.
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Sequence,
)
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from inspect import iscoroutinefunction
from types import TracebackType
from typing import IO, Any, Literal, Protocol, Self, cast

import asyncpg

from objmig.ledger.models import (
    ACTIVE_STATES,
    OBJECT_COLUMNS,
    CleanupItem,
    CleanupOutcome,
    Counts,
    Digest,
    InventoryResult,
    InventoryRow,
    MigrationRow,
    ObjectRow,
    ObjectState,
    StateCount,
    StepResult,
)
from objmig.ledger.report import (
    REPORT_COLUMNS,
    DigestBuilder,
    ReportFormat,
    encode_report_rows,
    report_header,
)
from objmig.ledger.schema import Connection, apply_schema

__all__ = [
    "AsyncSink",
    "Ledger",
    "LedgerError",
    "MigrationConflict",
    "UnknownMigration",
]

#: Rows per COPY + merge round of ``upsert_inventory``: bounds memory and transaction size.
INVENTORY_CHUNK = 50_000
#: ``upsert_inventory`` refreshes the planner's statistics after inserting or changing at
#: least this many rows.
ANALYZE_AFTER_ROWS = 1_000
#: The first chunk of an inventory someone waits on (``on_chunk``); later ones double.
FIRST_WATCHED_CHUNK = 1_000
#: Rows fetched per round trip when streaming (reports, digest, iteration).
STREAM_BATCH = 2_000
#: ``counts`` folds the delta rows of a migration once there are more than this many.
COMPACT_DELTAS_AFTER = 256
#: Advisory lock class (two-int form) serialising delta compaction per migration ("omcg").
_COMPACT_LOCK_CLASS = 0x6F6D6367

_COLUMNS = ", ".join(OBJECT_COLUMNS)
_O_COLUMNS = ", ".join(f"o.{c}" for c in OBJECT_COLUMNS)
# The claim index orders on this exact expression; queries must spell it identically.
_NOT_BEFORE = "COALESCE(not_before, '-infinity'::timestamptz)"

#: The columns an inventory row fills, in COPY order.
_INVENTORY_COLUMNS = (
    "migration_id",
    "key",
    "version_id",
    "size",
    "etag",
    "last_modified",
    "storage_class",
    "target_key",
    "last_seen_scan",
)

#: Sorts before any real not_before, as NULL does in the claim index.
_NEVER = datetime.min.replace(tzinfo=UTC)


class LedgerError(RuntimeError):
    """Base class of ledger errors."""


class UnknownMigration(LedgerError):
    """No migration with that id."""


class MigrationConflict(LedgerError):
    """A migration of that name exists but belongs to another resource (another uid)."""


class AsyncSink(Protocol):
    """Anything with ``async def write(bytes)``: an aiofiles file, an upload stream, ..."""

    async def write(self, data: bytes, /) -> object:
        """Consume one chunk of the report."""
        ...


ReportOutput = IO[bytes] | IO[str] | AsyncSink


def _affected(status: str) -> int:
    # asyncpg returns the command tag, e.g. "UPDATE 42" or "INSERT 0 7".
    return int(status.rsplit(" ", 1)[-1])


async def _init_connection(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    # jsonb as Python objects (migrations.state) instead of JSON text.
    await conn.set_type_codec("jsonb", schema="pg_catalog", encoder=json.dumps, decoder=json.loads)


async def _analyze(conn: Connection) -> None:
    # ANALYZE samples a bounded number of rows, and without owner rights it only warns.
    await conn.execute("ANALYZE objects")


async def _chunks(
    rows: Iterable[InventoryRow] | AsyncIterable[InventoryRow], size: int, first: int | None = None
) -> AsyncIterator[list[InventoryRow]]:
    """Group rows into lists of at most ``size``; works on sync and async iterables.

    ``first``: the first list holds that many rows and each next one twice as many as the
    one before, up to ``size``.
    """
    limit = min(first or size, size)
    chunk: list[InventoryRow] = []
    if isinstance(rows, AsyncIterable):
        async for row in rows:
            chunk.append(row)
            if len(chunk) >= limit:
                yield chunk
                chunk = []
                limit = min(2 * limit, size)
    else:
        for row in rows:
            chunk.append(row)
            if len(chunk) >= limit:
                yield chunk
                chunk = []
                limit = min(2 * limit, size)
                # A long synchronous iterable must not starve the event loop.
                await asyncio.sleep(0)
    if chunk:
        yield chunk


#: Optional StepResult fields: (name, SQL type, "keep" = None keeps the stored value, or
#: "clear" = None stores NULL because the field describes only the latest step).
_RECORD_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("target_key", "text", "keep"),
    ("target_etag", "text", "keep"),
    ("target_version_id", "text", "keep"),
    ("source_checksum", "text", "keep"),
    ("target_checksum", "text", "keep"),
    ("restore_requested_at", "timestamptz", "keep"),
    ("last_error", "text", "clear"),
    ("error_code", "text", "clear"),
    ("skip_reason", "text", "clear"),
    ("not_before", "timestamptz", "clear"),
)


@functools.cache
def _record_sql(present: tuple[str, ...], increments: bool) -> str:
    """The UPDATE ... FROM unnest(...) of ``Ledger.record`` for one shape of batch.

    ``present`` names the optional fields sent as arrays (in ``_RECORD_FIELDS`` order);
    at most 2**11 shapes exist and a worker uses a handful, so caching the text keeps
    asyncpg's prepared-statement cache effective.
    """
    params = ["$2::bigint[]", "$3::text[]"]
    names = ["id", "state"]
    kinds = {name: (sql_type, mode) for name, sql_type, mode in _RECORD_FIELDS}
    for name in present:
        params.append(f"${len(params) + 2}::{kinds[name][0]}[]")
        names.append(name)
    if increments:
        params.append(f"${len(params) + 2}::bool[]")
        names.append("increment_attempts")
    sets = ["state = r.state"]
    for name, _, mode in _RECORD_FIELDS:
        if name in present:
            sets.append(
                f"{name} = COALESCE(r.{name}, o.{name})" if mode == "keep" else f"{name} = r.{name}"
            )
        elif mode == "clear":
            sets.append(f"{name} = NULL")
    if increments:
        sets.append("attempts = o.attempts + CASE WHEN r.increment_attempts THEN 1 ELSE 0 END")
    sets += [
        "verified_at = CASE WHEN r.state = 'verified' THEN now() ELSE o.verified_at END",
        "deleted_at = CASE WHEN r.state = 'deleted' THEN now() ELSE o.deleted_at END",
        "lease_owner = NULL",
        "lease_expires_at = NULL",
        "updated_at = now()",
    ]
    # The owner travels as a column of r, not as a filter on objects: statistics taken while
    # nothing was leased make "lease_owner = $1" look like one row, and the planner then
    # scans the whole table and re-runs unnest() for each leased row it finds (quadratic in
    # the batch; 5x slower records once a ledger had been analysed). As a join condition it
    # narrows nothing, so rows are found by id: through the primary key, or on a small
    # table by one hash join. IS NOT DISTINCT FROM rather than "=", so the leased-rows
    # partial index, whose dead entries linger until VACUUM, is never the way in.
    params.append("array_fill($1::text, ARRAY[cardinality($2::bigint[])])")
    names.append("owner")
    set_list = ",\n    ".join(sets)
    return (
        f"UPDATE objects o SET\n    {set_list}\n"
        f"FROM unnest({', '.join(params)}) AS r({', '.join(names)})\n"
        "WHERE o.id = r.id AND o.lease_owner IS NOT DISTINCT FROM r.owner"
    )


#: A version of a key is claimable once no older version of it is still to be done: the
#: scan lists versions newest first (a lower id), and ties in (whole-second) last-modified
#: fall back to that order.
_OLDER_VERSIONS_DONE = f"""
      AND NOT EXISTS (
          SELECT 1 FROM objects older
          WHERE older.migration_id = objects.migration_id AND older.key = objects.key
            AND (older.last_modified < objects.last_modified
                 OR (older.last_modified = objects.last_modified AND older.id > objects.id))
            AND older.state IN ({", ".join(f"'{s.value}'" for s in ACTIVE_STATES)})
      )"""  # noqa: S608 - only module constants are interpolated


@functools.cache
def _claim_sql(after_hint: bool, versions_in_order: bool = False) -> str:
    """The claim statement (see ``Ledger.claim``).

    With ``after_hint`` the scan of free rows starts after ($6 = not_before or NULL,
    $7 = id). Two statements rather than one with an OR, so that each keeps an index
    condition under a generic plan. ``versions_in_order``: see ``_OLDER_VERSIONS_DONE``.
    """
    after = (
        f"AND ({_NOT_BEFORE}, id) > (COALESCE($6::timestamptz, '-infinity'), $7::bigint)"
        if after_hint
        else ""
    )
    if versions_in_order:
        after += _OLDER_VERSIONS_DONE
    return f"""
WITH expired AS (
    -- Leases whose owner stopped renewing: the small leased index.
    SELECT id FROM objects
    WHERE migration_id = $1 AND lease_owner IS NOT NULL
      AND lease_expires_at <= now()
      AND state = $2 AND {_NOT_BEFORE} <= now()
    ORDER BY lease_expires_at, id
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), free AS (
    -- Unleased rows: the claim index holds only these, so concurrent claimers do not wade
    -- through each other's leased rows.
    SELECT id FROM objects
    WHERE migration_id = $1 AND state = $2 AND lease_owner IS NULL
      AND {_NOT_BEFORE} <= now() {after}
    ORDER BY {_NOT_BEFORE}, id
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), picked AS (
    -- Evaluated lazily: "free" is not read once "expired" filled the batch.
    (SELECT id, false AS swept FROM expired)
    UNION ALL
    (SELECT id, true FROM free)
    LIMIT $3
)
UPDATE objects o
SET lease_owner = $4, lease_expires_at = now() + $5::interval
FROM picked
WHERE o.id = picked.id
RETURNING picked.swept, {_O_COLUMNS}
"""  # noqa: S608 - only module constants are interpolated


class Ledger:
    """Per-object state of migrations, shared by the operator, the workers and the CLI.

    Create with :meth:`connect` (which applies the schema) and close with :meth:`close`, or
    wrap an existing pool with ``Ledger(pool)`` after calling ``apply_schema`` yourself.
    Every method is safe to call concurrently from many tasks and processes.
    """

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        self._pool = pool
        # claim() sweeps each (migration, state) queue from where its last claim ended:
        # the rows before that point were claimed, and their dead index entries would
        # otherwise be stepped over by every claim until VACUUM removes them.
        self._claim_hints: dict[tuple[int, str], tuple[datetime | None, int]] = {}

    # -- lifecycle ----------------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        apply_schema_on_connect: bool = True,
        command_timeout: float | None = 300.0,
    ) -> Ledger:
        """Open a connection pool to ``dsn`` and bring the schema up to date.

        Raises:
            SchemaTooNew: the database was migrated by a newer objmig.
        """
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            init=_init_connection,
            command_timeout=command_timeout,
        )
        try:
            if apply_schema_on_connect:
                await apply_schema(pool)
        except BaseException:
            await pool.close()
            raise
        return cls(pool)

    @property
    def pool(self) -> asyncpg.Pool[asyncpg.Record]:
        """The underlying asyncpg pool."""
        return self._pool

    async def close(self) -> None:
        """Close the pool, waiting for borrowed connections to come back."""
        await self._pool.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- migrations ---------------------------------------------------------------------------

    async def ensure_migration(self, name: str, uid: str = "") -> int:
        """Return the id of migration ``name``, creating it if needed.

        ``uid`` is the Kubernetes ``metadata.uid`` (``""`` when there is none, as in the
        CLI). An existing migration without a uid adopts the given one.

        Raises:
            MigrationConflict: ``name`` exists with a different non-empty uid, i.e. the
                resource was deleted and re-created while its ledger rows survived; the
                caller decides whether to ``delete_migration`` the old one.
        """
        row = await self._pool.fetchrow(
            """
            INSERT INTO migrations (name, uid) VALUES ($1, $2)
            ON CONFLICT (name) DO UPDATE
                SET uid = CASE WHEN migrations.uid = '' THEN EXCLUDED.uid
                               ELSE migrations.uid END
            RETURNING id, uid
            """,
            name,
            uid,
        )
        assert row is not None  # INSERT ... RETURNING always returns the row
        if uid and row["uid"] != uid:
            raise MigrationConflict(
                f"migration {name!r} already exists in the ledger for uid {row['uid']!r}, "
                f"not {uid!r}: delete the old ledger entry or use another name"
            )
        return int(row["id"])

    async def find_migration(self, name: str) -> int | None:
        """The id of migration ``name``, or None."""
        value = await self._pool.fetchval("SELECT id FROM migrations WHERE name = $1", name)
        return None if value is None else int(value)

    async def list_migrations(self) -> list[MigrationRow]:
        """All migrations, oldest first."""
        records = await self._pool.fetch(
            "SELECT id, name, uid, created_at, state FROM migrations ORDER BY id"
        )
        return [MigrationRow(**dict(r)) for r in records]

    async def delete_migration(self, migration_id: int) -> bool:
        """Delete a migration and all its rows; returns whether it existed."""
        async with self._pool.acquire() as conn, conn.transaction():
            status = await conn.execute("DELETE FROM migrations WHERE id = $1", migration_id)
            # The cascade to objects made the count trigger write deltas for this id.
            await conn.execute(
                "DELETE FROM object_count_deltas WHERE migration_id = $1", migration_id
            )
        return _affected(status) > 0

    async def get_state(self, migration_id: int) -> dict[str, Any]:
        """The migration's engine bookkeeping (a JSON object).

        Raises:
            UnknownMigration: no such migration.
        """
        state = await self._pool.fetchval(
            "SELECT state FROM migrations WHERE id = $1", migration_id
        )
        if state is None:
            raise UnknownMigration(f"no migration with id {migration_id}")
        return cast(dict[str, Any], state)

    async def update_state(self, migration_id: int, patch: dict[str, Any]) -> dict[str, Any]:
        """Shallow-merge ``patch`` into the migration's state atomically; returns the result.

        Top-level keys of ``patch`` replace those of the stored object (``jsonb ||``); a key
        set to None is stored as JSON null. Concurrent patches of different keys both land.

        Raises:
            UnknownMigration: no such migration.
        """
        state = await self._pool.fetchval(
            "UPDATE migrations SET state = state || $2::jsonb WHERE id = $1 RETURNING state",
            migration_id,
            patch,
        )
        if state is None:
            raise UnknownMigration(f"no migration with id {migration_id}")
        return cast(dict[str, Any], state)

    async def start_cleanup(self, migration_id: int) -> bool:
        """Record that source objects may be deleted from now on; False if not allowed.

        Allowed only while the migration is cut over, not rolled back, and no rollback has
        begun (see `start_rollback`): one statement decides between the two, so a cleanup
        and a rollback started at the same moment cannot both go ahead.
        """
        started = await self._pool.fetchval(
            """
            UPDATE migrations SET state = state || '{"cleanupStarted": true}'::jsonb
            WHERE id = $1
              AND state->'cutover'->>'at' IS NOT NULL
              AND state->'cutover'->>'rolledBackAt' IS NULL
              AND coalesce(state->>'rollbackStarted', 'false') <> 'true'
            RETURNING true
            """,
            migration_id,
        )
        return bool(started)

    async def start_rollback(self, migration_id: int) -> bool:
        """Record that the cutover is being reverted; False once a cleanup has started.

        The mark stays until the rollback finishes (a half-done rollback keeps cleanups
        out, see `start_cleanup`); clear it with ``update_state({"rollbackStarted": None})``.
        """
        started = await self._pool.fetchval(
            """
            UPDATE migrations SET state = state || '{"rollbackStarted": true}'::jsonb
            WHERE id = $1 AND coalesce(state->>'cleanupStarted', 'false') <> 'true'
            RETURNING true
            """,
            migration_id,
        )
        return bool(started)

    # -- inventory ----------------------------------------------------------------------------

    async def upsert_inventory(
        self,
        migration_id: int,
        rows: Iterable[InventoryRow] | AsyncIterable[InventoryRow],
        scan_id: int,
        *,
        chunk_size: int = INVENTORY_CHUNK,
        parallelism: int = 2,
        on_chunk: Callable[[], None] | None = None,
        in_place: bool = False,
    ) -> InventoryResult:
        """Merge a scan's listing into the ledger; idempotent, memory bounded by the chunks.

        Per chunk: COPY into a temporary table, then one ``INSERT ... ON CONFLICT`` merge
        (while the migration had no rows before this call: COPY straight into the table).

        * A new (key, version_id) is inserted as ``pending``.
        * A row whose (etag, size, last_modified) differs gets the new attributes and its
          ``target_key`` and goes back to ``pending``: target, checksum, verification,
          cut-over, error, skip, restore and attempt fields are cleared, and so is its lease
          (a worker copying the old version must not record its now-stale result). This
          includes ``source_changed`` rows. Rows in state ``deleted`` are never revived.
        * Every listed row gets ``last_seen_scan = scan_id``; nothing else changes on
          unchanged rows (so ``updated_at`` still says when its state last moved).
        * ``in_place`` (source and target are one bucket): a listed object that is a row's
          own verified copy (its target key and ETag, or its target version) is neither
          a change of that row nor a new object; otherwise every re-scan after copies
          onto their own keys would find all of them changed.

        A key listed twice within one chunk counts once (the last listing wins). Up to
        ``parallelism`` chunks (each on its own pooled connection) are written at once, so
        at most ``parallelism + 1`` chunks are held in memory.

        ``on_chunk`` is called each time a chunk is committed, for workers claiming rows
        while the scan goes on; the chunks then start at ``FIRST_WATCHED_CHUNK`` rows and
        double, so the first rows are claimable after one listing page, not after the
        whole inventory.
        """
        if parallelism < 1:
            raise ValueError("parallelism must be at least 1")
        # A migration's first scan only inserts: COPY straight into the table costs about a
        # third less than staging plus the ON CONFLICT merge. Any conflict (a key listed
        # twice, a concurrent scan) fails that chunk's COPY as a whole and the chunk is
        # merged instead; later chunks then merge too.
        insert_only = not await self._pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM objects WHERE migration_id = $1)", migration_id
        )
        result = InventoryResult()
        # Rows new or changed when the statistics were last refreshed (see `_analyze`).
        analysed = 0

        async def merge(chunk: list[InventoryRow]) -> None:
            nonlocal insert_only, result, analysed
            async with self._pool.acquire() as conn:
                merged, still = await self._merge_chunk(
                    conn, migration_id, chunk, scan_id, insert_only=insert_only, in_place=in_place
                )
                insert_only = insert_only and still
                result += merged
                moved = result.new + result.changed
                if on_chunk is not None and not analysed and moved >= ANALYZE_AFTER_ROWS:
                    # Workers claim while the scan goes on: give the planner the
                    # migration's rows now, not only at the end (see below).
                    analysed = moved
                    await _analyze(conn)
            if on_chunk is not None:
                on_chunk()

        # Chunks are independent (distinct keys, or duplicates that the merge resolves), so
        # up to ``parallelism`` of them are written at once on their own connections: the
        # server's work, which dominates, spreads over its CPUs while the next chunk is read.
        running: set[asyncio.Task[None]] = set()
        try:
            first = FIRST_WATCHED_CHUNK if on_chunk is not None else None
            async for chunk in _chunks(rows, chunk_size, first):
                if len(running) >= parallelism:
                    done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        task.result()  # re-raise the first failure
                running.add(asyncio.create_task(merge(chunk)))
            await asyncio.gather(*running)
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        if result.new + result.changed >= max(ANALYZE_AFTER_ROWS, 2 * analysed):
            # The copy starts right after the scan (or during it), long before autovacuum
            # would analyse: until then the planner takes a new migration for a handful of
            # rows, and each claim reads its rows through the wrong index and sorts them
            # (claims 5x slower in the second migration of a ledger).
            async with self._pool.acquire() as conn:
                await _analyze(conn)
        return result

    async def _merge_chunk(
        self,
        conn: Connection,
        migration_id: int,
        chunk: list[InventoryRow],
        scan_id: int,
        *,
        insert_only: bool,
        in_place: bool = False,
    ) -> tuple[InventoryResult, bool]:
        """Merge one chunk; returns its result and whether ``insert_only`` still holds."""
        # ON CONFLICT DO UPDATE may not touch one row twice in a statement: de-duplicate.
        unique = {(r.key, r.version_id): r for r in chunk}
        records = [
            (
                r.key,
                r.version_id,
                r.size,
                r.etag,
                r.last_modified,
                r.storage_class,
                r.target_key,
            )
            for r in unique.values()
        ]
        if insert_only:
            # COPY straight into objects: no staging table, the cheapest way in. One
            # conflict fails the whole COPY (its own transaction) and nothing of it stays.
            try:
                async with conn.transaction():
                    status = await conn.copy_records_to_table(
                        "objects",
                        records=[(migration_id, *r, scan_id) for r in records],
                        columns=_INVENTORY_COLUMNS,
                    )
                return InventoryResult(new=_affected(status)), True
            except asyncpg.UniqueViolationError:
                pass
        changed = """
            objects.state <> 'deleted'
            AND (objects.etag, objects.size, objects.last_modified)
                IS DISTINCT FROM (EXCLUDED.etag, EXCLUDED.size, EXCLUDED.last_modified)
        """
        ours = ""
        if in_place:
            changed += """
            AND NOT coalesce(
                objects.target_key = objects.key
                AND objects.target_etag = EXCLUDED.etag AND objects.size = EXCLUDED.size,
                false)
            """
            # A versioned bucket lists the copy as its key's newest version.
            ours = """
                WHERE NOT EXISTS (
                    SELECT 1 FROM objects mine
                    WHERE mine.migration_id = $1 AND mine.key = s.key
                      AND mine.target_key = s.key AND mine.target_version_id = s.version_id
                )
            """

        def on_change(column: str, new: str) -> str:
            return f"{column} = CASE WHEN {changed} THEN {new} ELSE objects.{column} END"

        reset = {
            "size": "EXCLUDED.size",
            "etag": "EXCLUDED.etag",
            "last_modified": "EXCLUDED.last_modified",
            "storage_class": "EXCLUDED.storage_class",
            "target_key": "EXCLUDED.target_key",
            "state": "'pending'",
            "attempts": "0",
            "updated_at": "now()",
            **{
                c: "NULL"
                for c in (
                    "target_etag",
                    "target_version_id",
                    "source_checksum",
                    "target_checksum",
                    "last_error",
                    "error_code",
                    "skip_reason",
                    "not_before",
                    "restore_requested_at",
                    "verified_at",
                    "cut_over_at",
                    "lease_owner",
                    "lease_expires_at",
                )
            },
        }
        assignments = ",\n".join(on_change(c, v) for c, v in reset.items())
        # Classification without a second join: a freshly inserted row has xmax = 0 (the
        # standard ON CONFLICT idiom); a changed row has updated_at = now() (this
        # transaction's start), which an unchanged row cannot have because each chunk is
        # its own transaction.
        merge = f"""
            WITH merged AS (
                INSERT INTO objects (migration_id, key, version_id, size, etag, last_modified,
                                     storage_class, target_key, last_seen_scan)
                SELECT $1, key, version_id, size, etag, last_modified, storage_class,
                       target_key, $2
                FROM objmig_inventory_stage s
                {ours}
                ON CONFLICT (migration_id, key, version_id) DO UPDATE SET
                    {assignments},
                    last_seen_scan = EXCLUDED.last_seen_scan
                RETURNING (xmax = 0) AS inserted, (updated_at = now()) AS touched
            )
            SELECT count(*) FILTER (WHERE inserted) AS new,
                   count(*) FILTER (WHERE touched AND NOT inserted) AS changed,
                   count(*) FILTER (WHERE NOT touched) AS unchanged
            FROM merged
        """  # noqa: S608 - only module constants are interpolated
        async with conn.transaction():
            await conn.execute(
                """
                CREATE TEMP TABLE objmig_inventory_stage (
                    key text COLLATE "C",
                    version_id text COLLATE "C",
                    size bigint,
                    etag text,
                    last_modified timestamptz,
                    storage_class text,
                    target_key text
                ) ON COMMIT DROP
                """
            )
            await conn.copy_records_to_table("objmig_inventory_stage", records=records)
            row = await conn.fetchrow(merge, migration_id, scan_id)
        assert row is not None
        result = InventoryResult(
            new=int(row["new"]), changed=int(row["changed"]), unchanged=int(row["unchanged"])
        )
        return result, False

    # -- leases -------------------------------------------------------------------------------

    async def claim(
        self,
        migration_id: int,
        owner: str,
        states: Sequence[ObjectState],
        limit: int,
        lease: timedelta,
        *,
        versions_in_order: bool = False,
    ) -> list[ObjectRow]:
        """Lease up to ``limit`` claimable rows in ``states`` to ``owner``.

        Claimable: in one of ``states``, ``not_before`` NULL or past, and no live lease (an
        expired lease counts as free even if ``return_expired_leases`` never ran). Rows
        locked by a concurrent claimer are skipped (``FOR UPDATE SKIP LOCKED``), so
        concurrent claimers never receive the same row. Order: ``states`` in the given
        priority; within a state, rows whose lease expired, then unleased rows by (time they
        became eligible, id). Unleased rows are taken as a sweep: each claim continues after
        the last row this Ledger claimed in that state, and starts again from the front
        when the sweep reaches the end (so a row released behind the sweep waits at most one
        pass). Only the lease columns change; ``attempts`` is counted by ``record``.

        ``owner`` must be unique per worker incarnation (e.g. pod name plus a random
        suffix): a restarted worker must not be able to record results for leases its
        previous life held.

        ``versions_in_order`` (a migration of every version of each key): a version is
        claimable only once every older version of its key is done, so that versions
        reach their one target key oldest first and never two at once.
        """
        if limit <= 0:
            return []
        claimed: list[ObjectRow] = []
        async with self._pool.acquire() as conn:
            for state in dict.fromkeys(states):  # de-duplicated, order kept
                value = str(ObjectState(state))
                hint_key = (migration_id, value)
                hint = self._claim_hints.get(hint_key)
                while (remaining := limit - len(claimed)) > 0:
                    args: tuple[object, ...] = (migration_id, value, remaining, owner, lease)
                    if hint is not None:
                        args += hint
                    records = await conn.fetch(
                        _claim_sql(hint is not None, versions_in_order), *args
                    )
                    # RETURNING has no order; restore the claim order.
                    pairs = sorted(
                        ((ObjectRow.from_record(r), bool(r["swept"])) for r in records),
                        key=lambda pair: (pair[0].not_before or _NEVER, pair[0].id),
                    )
                    rows = [row for row, _ in pairs]
                    claimed.extend(rows)
                    swept = [row for row, from_sweep in pairs if from_sweep]
                    if swept:
                        # The sweep's last row: expired leases found elsewhere don't move it.
                        self._claim_hints[hint_key] = (swept[-1].not_before, swept[-1].id)
                    if len(rows) >= remaining or hint is None:
                        break
                    # The sweep reached the end: start again from the front once, for
                    # rows released or re-queued behind the hint.
                    hint = None
                    self._claim_hints.pop(hint_key, None)
        return claimed

    async def heartbeat(self, owner: str, ids: Sequence[int], lease: timedelta) -> set[int]:
        """Extend ``owner``'s leases on ``ids`` to now + ``lease``.

        Returns the ids still held: an id missing from the result was lost (another worker
        claimed it after our lease expired) and its work must be abandoned.
        """
        if not ids:
            return set()
        records = await self._pool.fetch(
            """
            UPDATE objects SET lease_expires_at = now() + $3::interval
            WHERE id = ANY($2::bigint[]) AND lease_owner IS NOT DISTINCT FROM $1::text
            RETURNING id
            """,
            owner,
            list(ids),
            lease,
        )
        return {int(r["id"]) for r in records}

    async def release(
        self,
        owner: str,
        ids: Sequence[int],
        not_before: datetime | None = None,
    ) -> int:
        """Give rows back without a result (e.g. on shutdown); returns how many were held.

        ``not_before`` (a datetime), when given, delays the next claim of these rows.
        """
        if not ids:
            return 0
        status = await self._pool.execute(
            """
            UPDATE objects
            SET lease_owner = NULL, lease_expires_at = NULL,
                not_before = COALESCE($3::timestamptz, not_before)
            WHERE id = ANY($2::bigint[]) AND lease_owner IS NOT DISTINCT FROM $1::text
            """,
            owner,
            list(ids),
            not_before,
        )
        return _affected(status)

    async def return_expired_leases(self, migration_id: int) -> int:
        """Clear leases that have expired; returns how many.

        Not needed for correctness (``claim`` ignores expired leases), but it makes counts
        and the status window stop showing dead workers' rows as in flight sooner.
        """
        status = await self._pool.execute(
            """
            UPDATE objects SET lease_owner = NULL, lease_expires_at = NULL
            WHERE migration_id = $1 AND lease_owner IS NOT NULL AND lease_expires_at <= now()
            """,
            migration_id,
        )
        return _affected(status)

    # -- results ------------------------------------------------------------------------------

    async def record(self, owner: str, results: Sequence[StepResult]) -> int:
        """Write step results in one round trip; returns how many were applied.

        A result applies only while ``owner`` still holds the row's lease (even an expired
        one nobody else has claimed since): once another worker has claimed the row, a late
        result from a worker that lost its lease is dropped. Applying clears the lease and
        sets ``updated_at``. See :class:`StepResult` for which fields overwrite and which
        accumulate.
        """
        if not results:
            return 0
        # Only columns that some result sets travel as unnest() arrays: a typical batch
        # sets two or three of the ten optional fields, and every array costs encoding on
        # our side and unnesting on the server's. (list.count runs in C: cheaper than a
        # generator of "is not None" tests.) str() of an ObjectState is its value; a bad
        # plain string is refused by the table's CHECK constraint.
        arrays: list[list[Any]] = [
            [r.id for r in results],
            [str(r.state) for r in results],
        ]
        present: list[str] = []
        total = len(results)
        for name, _, _ in _RECORD_FIELDS:
            column = [getattr(r, name) for r in results]
            if column.count(None) != total:
                present.append(name)
                arrays.append(column)
        increments = [r.increment_attempts for r in results]
        has_increments = any(increments)
        if has_increments:
            arrays.append(increments)
        sql = _record_sql(tuple(present), has_increments)
        status = await self._pool.execute(sql, owner, *arrays)
        return _affected(status)

    async def mark_cut_over(self, migration_id: int) -> int:
        """Stamp ``cut_over_at = now()`` on verified rows not yet stamped; returns how many."""
        status = await self._pool.execute(
            """
            UPDATE objects SET cut_over_at = now(), updated_at = now()
            WHERE migration_id = $1 AND state = 'verified' AND cut_over_at IS NULL
            """,
            migration_id,
        )
        return _affected(status)

    async def clear_cut_over(self, migration_id: int) -> int:
        """Undo :meth:`mark_cut_over` (cutover rollback); returns how many rows changed."""
        status = await self._pool.execute(
            """
            UPDATE objects SET cut_over_at = NULL, updated_at = now()
            WHERE migration_id = $1 AND cut_over_at IS NOT NULL
            """,
            migration_id,
        )
        return _affected(status)

    async def mark_deleted(self, ids: Sequence[int]) -> int:
        """Record that the source objects of ``ids`` were deleted; returns how many changed.

        Sets state ``deleted`` and ``deleted_at``, and drops any lease. Idempotent.
        """
        if not ids:
            return 0
        status = await self._pool.execute(
            """
            UPDATE objects
            SET state = 'deleted', deleted_at = now(), updated_at = now(),
                lease_owner = NULL, lease_expires_at = NULL
            WHERE id = ANY($1::bigint[]) AND state <> 'deleted'
            """,
            list(ids),
        )
        return _affected(status)

    async def fail_target_collisions(self, migration_id: int) -> int:
        """Fail every row whose target key is also another source key's; returns how many.

        A key template that drops part of the key (``{basename}``, dates) can map several
        source keys onto one target key: each copy would overwrite the one before, and
        all of them would pass as verified. Versions of one key sharing it are fine. The
        rows' leases are ended, so a worker copying one cannot record it verified.
        """
        status = await self._pool.execute(
            """
            WITH shared AS (
                SELECT target_key FROM objects
                WHERE migration_id = $1 AND state <> 'deleted'
                GROUP BY target_key HAVING count(DISTINCT key) > 1
            )
            UPDATE objects o
            SET state = 'failed', error_code = 'TargetKeyCollision',
                last_error = 'the key template maps other source keys onto target key '
                             || o.target_key || ' too',
                updated_at = now(), lease_owner = NULL, lease_expires_at = NULL
            FROM shared
            WHERE o.migration_id = $1 AND o.target_key = shared.target_key
              AND o.state <> 'deleted'
            """,
            migration_id,
        )
        return _affected(status)

    async def requeue(
        self,
        migration_id: int,
        states: Sequence[ObjectState],
        *,
        skip_reasons: Sequence[str] | None = None,
    ) -> int:
        """Send rows in ``states`` back to ``pending`` with a clean slate; returns how many.

        Used when the meaning of an end state no longer holds: a dry run's plan rows when
        the real run starts (``skip_reasons`` narrows to those), or failed rows the user
        asked to retry. Leased rows are left alone: their worker is still on them.
        """
        status = await self._pool.execute(
            """
            UPDATE objects
            SET state = 'pending', attempts = 0, last_error = NULL, error_code = NULL,
                skip_reason = NULL, not_before = NULL, updated_at = now(),
                lease_owner = NULL, lease_expires_at = NULL
            WHERE migration_id = $1 AND state = ANY($2::text[])
              AND ($3::text[] IS NULL OR skip_reason = ANY($3::text[]))
              AND (lease_expires_at IS NULL OR lease_expires_at <= now())
            """,
            migration_id,
            [str(ObjectState(s)) for s in states],
            list(skip_reasons) if skip_reasons is not None else None,
        )
        return _affected(status)

    async def lease_owners(self, migration_id: int) -> list[str]:
        """Owners holding live leases on the migration's rows."""
        records = await self._pool.fetch(
            """
            SELECT DISTINCT lease_owner FROM objects
            WHERE migration_id = $1 AND lease_owner IS NOT NULL AND lease_expires_at > now()
            """,
            migration_id,
        )
        return [r["lease_owner"] for r in records]

    async def expire_leases(self, migration_id: int, owners: Sequence[str]) -> int:
        """End the leases of ``owners`` now (they are known to be dead); returns how many."""
        status = await self._pool.execute(
            """
            UPDATE objects SET lease_owner = NULL, lease_expires_at = NULL
            WHERE migration_id = $1 AND lease_owner = ANY($2::text[])
            """,
            migration_id,
            list(owners),
        )
        return _affected(status)

    async def breakdown(
        self, migration_id: int, column: Literal["skip_reason", "storage_class", "error_code"]
    ) -> dict[str, StateCount]:
        """Objects and bytes grouped by one column (plans, skip and error summaries)."""
        if column not in ("skip_reason", "storage_class", "error_code"):
            # The column name is interpolated into SQL: refuse anything but the three.
            raise ValueError(f"cannot break down by {column!r}")
        records = await self._pool.fetch(
            f"""
            SELECT coalesce({column}, '') AS value, count(*) AS objects,
                   coalesce(sum(size), 0) AS bytes
            FROM objects WHERE migration_id = $1
            GROUP BY 1 ORDER BY 1
            """,  # noqa: S608 - column is one of three literals
            migration_id,
        )
        return {
            r["value"]: StateCount(objects=int(r["objects"]), bytes=int(r["bytes"]))
            for r in records
            if r["value"]
        }

    # -- reading ------------------------------------------------------------------------------

    async def get_object(self, object_id: int) -> ObjectRow | None:
        """One row by id, or None."""
        record = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM objects WHERE id = $1",  # noqa: S608 - constants only
            object_id,
        )
        return None if record is None else ObjectRow.from_record(record)

    async def find_object(
        self, migration_id: int, key: str, version_id: str = ""
    ) -> ObjectRow | None:
        """One row by its identity, or None."""
        record = await self._pool.fetchrow(
            f"""
            SELECT {_COLUMNS} FROM objects
            WHERE migration_id = $1 AND key = $2 AND version_id = $3
            """,  # noqa: S608 - only module constants are interpolated
            migration_id,
            key,
            version_id,
        )
        return None if record is None else ObjectRow.from_record(record)

    async def counts(self, migration_id: int) -> Counts:
        """Exact objects and bytes per state, and those in flight, from one snapshot.

        Per-state totals come from ``object_count_deltas`` (kept exact by triggers in the
        same transactions that change rows), in-flight totals from the small partial index
        of leased rows, so the cost does not grow with the number of objects. When the
        delta rows pile up they are folded afterwards (a write, serialised per migration).
        """
        async with self._pool.acquire() as conn:
            records = await conn.fetch(
                """
                SELECT 'state' AS kind, state, sum(objects)::bigint AS objects,
                       sum(bytes)::bigint AS bytes, count(*) AS n
                FROM object_count_deltas WHERE migration_id = $1
                GROUP BY state
                UNION ALL
                SELECT 'leased', state, count(*), coalesce(sum(size), 0)::bigint, 0
                FROM objects
                WHERE migration_id = $1 AND lease_owner IS NOT NULL
                  AND lease_expires_at > now()
                GROUP BY state
                """,
                migration_id,
            )
            by_state: dict[ObjectState, StateCount] = {}
            in_flight_by_state: dict[ObjectState, StateCount] = {}
            delta_rows = 0
            for r in records:
                count = StateCount(objects=int(r["objects"]), bytes=int(r["bytes"]))
                state = ObjectState(r["state"])
                if r["kind"] == "state":
                    delta_rows += int(r["n"])
                    if count.objects or count.bytes:
                        by_state[state] = count
                else:
                    in_flight_by_state[state] = count
            if delta_rows > COMPACT_DELTAS_AFTER:
                await self._compact_deltas(conn, migration_id)
        in_flight = StateCount()
        for count in in_flight_by_state.values():
            in_flight += count
        return Counts(by_state=by_state, in_flight=in_flight, in_flight_by_state=in_flight_by_state)

    async def _compact_deltas(self, conn: Connection, migration_id: int) -> None:
        # One compactor per migration at a time: a second DELETE racing the first would skip
        # rows the first deleted, yet not see the first's (uncommitted) replacement row.
        async with conn.transaction():
            locked = await conn.fetchval(
                "SELECT pg_try_advisory_xact_lock($1, ($2 % 2147483647)::int)",
                _COMPACT_LOCK_CLASS,
                migration_id,
            )
            if not locked:
                return
            await conn.execute(
                """
                WITH gone AS (
                    DELETE FROM object_count_deltas WHERE migration_id = $1
                    RETURNING state, objects, bytes
                )
                INSERT INTO object_count_deltas (migration_id, state, objects, bytes)
                SELECT $1, state, sum(objects), sum(bytes) FROM gone
                GROUP BY state
                HAVING sum(objects) <> 0 OR sum(bytes) <> 0
                """,
                migration_id,
            )

    async def window(self, migration_id: int, limit: int) -> tuple[list[ObjectRow], bool]:
        """A bounded list of rows for the resource status, and whether rows were left out.

        Order: ``failed`` and ``source_changed`` rows (most recently updated first), then
        leased rows (in flight; most recently claimed or renewed first, so a lease that
        expired without being cleared comes last), then all others, most recently updated
        first. ``truncated`` is True when the migration has more than ``limit``
        rows.
        """
        if limit <= 0:
            total = await self._pool.fetchval(
                "SELECT EXISTS (SELECT 1 FROM objects WHERE migration_id = $1)", migration_id
            )
            return [], bool(total)
        # Each branch fetches limit + 1 so that "more than limit in total" is decidable.
        # Rows recorded in one batch share updated_at: the id breaks ties, so the window
        # (and with it the status) does not reorder between two reads of the same data.
        records = await self._pool.fetch(
            f"""
            (SELECT 0 AS bucket, {_COLUMNS} FROM objects
             WHERE migration_id = $1 AND state IN ('failed', 'source_changed')
             ORDER BY updated_at DESC, id DESC LIMIT $2)
            UNION ALL
            (SELECT 1, {_COLUMNS} FROM objects
             WHERE migration_id = $1 AND lease_owner IS NOT NULL
               AND state NOT IN ('failed', 'source_changed')
             ORDER BY lease_expires_at DESC, id DESC LIMIT $2)
            UNION ALL
            (SELECT 2, {_COLUMNS} FROM objects
             WHERE migration_id = $1 AND lease_owner IS NULL
               AND state NOT IN ('failed', 'source_changed')
             ORDER BY updated_at DESC, id DESC LIMIT $2)
            """,  # noqa: S608 - only module constants are interpolated
            migration_id,
            limit + 1,
        )
        # UNION ALL keeps branch order in practice but SQL does not promise it: sort by
        # bucket, keeping each branch's internal order (Python's sort is stable).
        ordered = sorted(records, key=lambda r: int(r["bucket"]))
        rows = [ObjectRow.from_record(r) for r in ordered[:limit]]
        return rows, len(ordered) > limit

    async def iter_rows(
        self,
        migration_id: int,
        states: Sequence[ObjectState] | None = None,
        *,
        batch_size: int = STREAM_BATCH,
    ) -> AsyncIterator[ObjectRow]:
        """Every row of the migration (optionally only ``states``) in (key, version_id) order.

        Streams by keyset pagination: each page is a short query, and no connection or
        transaction is held while the caller works on a page, so a slow consumer (cutover,
        cleanup) neither pins a pool connection nor holds back VACUUM. Rows changed during
        the iteration are seen as they are when their page is read.
        """
        state_filter = None if states is None else [str(ObjectState(s)) for s in states]
        # A row comparison over the whole index key lets each page start with an index seek.
        # The first page uses >= from ('', ''), which is below or equal to every real key.
        query = f"""
            SELECT {_COLUMNS} FROM objects
            WHERE (migration_id, key, version_id) {{op}} ($1, $2::text, $3::text)
              AND migration_id = $1
              AND ($4::text[] IS NULL OR state = ANY($4::text[]))
            ORDER BY migration_id, key, version_id
            LIMIT $5
        """  # noqa: S608 - only module constants are interpolated
        op, last_key, last_version = ">=", "", ""
        while True:
            records = await self._pool.fetch(
                query.format(op=op), migration_id, last_key, last_version, state_filter, batch_size
            )
            for record in records:
                yield ObjectRow.from_record(record)
            if len(records) < batch_size:
                return
            op, last_key, last_version = ">", records[-1]["key"], records[-1]["version_id"]

    async def _stream(
        self, query: str, args: Sequence[object], batch_size: int
    ) -> AsyncGenerator[list[asyncpg.Record], None]:
        """Yield batches from a server-side cursor (one transaction, one connection)."""
        async with self._pool.acquire() as conn, conn.transaction(readonly=True):
            cursor = await conn.cursor(query, *args)
            while True:
                batch = await cursor.fetch(batch_size)
                if not batch:
                    return
                yield batch

    async def export_report(
        self,
        migration_id: int,
        out: ReportOutput,
        fmt: ReportFormat = "jsonl",
        *,
        only_failed: bool = False,
        batch_size: int = STREAM_BATCH,
    ) -> int:
        """Stream the per-object report of a migration to ``out``; returns rows written.

        ``out`` is a binary file-like object, a text file-like object (an ``io.TextIOBase``:
        ``open(..., "w")``, ``sys.stdout``, ``StringIO``) or an :class:`AsyncSink`. Rows come
        from a server-side cursor in batches, in (key, version_id) order, so memory stays
        bounded by the batch whatever the migration's size. ``only_failed`` keeps rows in
        state ``failed``. Formats: see :func:`objmig.ledger.report.encode_report_rows`.
        """
        if fmt not in ("jsonl", "csv"):
            raise ValueError(f"unknown report format {fmt!r}: use 'jsonl' or 'csv'")
        write = _writer(out)
        header = report_header(fmt)
        if header:
            await write(header)
        written = 0
        query = f"""
            SELECT {", ".join(REPORT_COLUMNS)} FROM objects
            WHERE migration_id = $1 AND ($2::text IS NULL OR state = $2::text)
            ORDER BY key, version_id
        """  # noqa: S608 - only module constants are interpolated
        state = str(ObjectState.FAILED) if only_failed else None
        async with aclosing(self._stream(query, (migration_id, state), batch_size)) as batches:
            async for batch in batches:
                await write(encode_report_rows(batch, fmt))
                written += len(batch)
        return written

    # -- cleanups ----------------------------------------------------------------------------

    async def migration_created_at(self, migration_id: int) -> datetime | None:
        """When the migration was first recorded (bounds which uploads can be objmig's)."""
        value = await self._pool.fetchval(
            "SELECT created_at FROM migrations WHERE id = $1", migration_id
        )
        return cast("datetime | None", value)

    async def ensure_cleanup(self, name: str, uid: str, migration_id: int) -> int:
        """The id of cleanup ``name`` of ``migration_id``, created if needed.

        Raises:
            MigrationConflict: ``name`` exists for another migration or another uid.
        """
        row = await self._pool.fetchrow(
            """
            INSERT INTO cleanups (name, uid, migration_id) VALUES ($1, $2, $3)
            ON CONFLICT (name) DO UPDATE
                SET uid = CASE WHEN cleanups.uid = '' THEN EXCLUDED.uid ELSE cleanups.uid END
            RETURNING id, uid, migration_id
            """,
            name,
            uid,
            migration_id,
        )
        assert row is not None
        if row["migration_id"] != migration_id or (uid and row["uid"] != uid):
            raise MigrationConflict(
                f"cleanup {name!r} already exists in the ledger for another migration or "
                "resource; delete it or use another name"
            )
        return int(row["id"])

    async def find_cleanup(self, name: str) -> int | None:
        """The id of cleanup ``name``, if recorded."""
        value = await self._pool.fetchval("SELECT id FROM cleanups WHERE name = $1", name)
        return int(value) if value is not None else None

    async def delete_cleanup(self, cleanup_id: int) -> bool:
        """Forget a cleanup and its per-object outcomes (not the objects)."""
        status = await self._pool.execute("DELETE FROM cleanups WHERE id = $1", cleanup_id)
        return _affected(status) > 0

    async def plan_cleanup(self, cleanup_id: int, migration_id: int) -> int:
        """Add every verified, cut-over object of the migration not yet planned; returns how many.

        Idempotent: objects already planned (whatever their outcome) are left as they are.
        """
        status = await self._pool.execute(
            """
            INSERT INTO cleanup_items (cleanup_id, object_id)
            SELECT $1, id FROM objects
            WHERE migration_id = $2 AND state = 'verified' AND cut_over_at IS NOT NULL
            ON CONFLICT DO NOTHING
            """,
            cleanup_id,
            migration_id,
        )
        return _affected(status)

    async def claim_cleanup(
        self,
        cleanup_id: int,
        owner: str,
        limit: int,
        lease: timedelta = timedelta(minutes=2),
    ) -> list[ObjectRow]:
        """Lease up to ``limit`` planned items of a cleanup; returns their object rows."""
        if limit <= 0:
            return []
        records = await self._pool.fetch(
            f"""
            WITH picked AS (
                SELECT object_id FROM cleanup_items
                WHERE cleanup_id = $1 AND outcome = 'planned'
                  AND (lease_expires_at IS NULL OR lease_expires_at <= now())
                ORDER BY object_id
                LIMIT $2
                FOR UPDATE SKIP LOCKED
            ), leased AS (
                UPDATE cleanup_items c
                SET lease_owner = $3, lease_expires_at = now() + $4::interval
                FROM picked
                WHERE c.cleanup_id = $1 AND c.object_id = picked.object_id
                RETURNING c.object_id
            )
            SELECT {_O_COLUMNS} FROM objects o JOIN leased ON o.id = leased.object_id
            ORDER BY o.id
            """,  # noqa: S608 - only module constants are interpolated
            cleanup_id,
            limit,
            owner,
            lease,
        )
        return [ObjectRow.from_record(r) for r in records]

    async def record_cleanup(
        self, cleanup_id: int, owner: str, outcomes: Sequence[CleanupOutcome]
    ) -> int:
        """Write outcomes held by ``owner``'s leases; deleted objects become ``deleted``.

        One transaction, so an object is never marked deleted in the item table but not in
        the objects table (or the other way round). Returns how many outcomes applied.
        """
        if not outcomes:
            return 0
        async with self._pool.acquire() as conn, conn.transaction():
            applied = await conn.fetch(
                """
                UPDATE cleanup_items c
                SET outcome = o.outcome, reason = o.reason, message = o.message,
                    lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
                FROM unnest($3::bigint[], $4::text[], $5::text[], $6::text[])
                    AS o(object_id, outcome, reason, message)
                WHERE c.cleanup_id = $1 AND c.object_id = o.object_id AND c.lease_owner = $2
                RETURNING c.object_id, c.outcome
                """,
                cleanup_id,
                owner,
                [o.object_id for o in outcomes],
                [o.outcome for o in outcomes],
                [o.reason for o in outcomes],
                [o.message for o in outcomes],
            )
            deleted = [r["object_id"] for r in applied if r["outcome"] == "deleted"]
            if deleted:
                await conn.execute(
                    """
                    UPDATE objects
                    SET state = 'deleted', deleted_at = now(), updated_at = now()
                    WHERE id = ANY($1::bigint[]) AND state <> 'deleted'
                    """,
                    deleted,
                )
        return len(applied)

    async def cleanup_deleted(self, cleanup_id: int) -> int:
        """Objects a cleanup has deleted (or, in a dry run, would delete)."""
        value = await self._pool.fetchval(
            """
            SELECT count(*) FROM cleanup_items
            WHERE cleanup_id = $1 AND outcome IN ('deleted', 'would_delete')
            """,
            cleanup_id,
        )
        return int(value or 0)

    async def cleanup_counts(self, cleanup_id: int) -> dict[tuple[str, str], StateCount]:
        """Objects and bytes per (outcome, reason) of a cleanup."""
        records = await self._pool.fetch(
            """
            SELECT c.outcome, coalesce(c.reason, '') AS reason, count(*) AS objects,
                   coalesce(sum(o.size), 0) AS bytes
            FROM cleanup_items c JOIN objects o ON o.id = c.object_id
            WHERE c.cleanup_id = $1
            GROUP BY 1, 2
            """,
            cleanup_id,
        )
        return {
            (r["outcome"], r["reason"]): StateCount(
                objects=int(r["objects"]), bytes=int(r["bytes"])
            )
            for r in records
        }

    async def cleanup_window(self, cleanup_id: int, limit: int) -> tuple[list[CleanupItem], bool]:
        """A bounded list of a cleanup's items: failed first, then skipped, then the rest."""
        records = await self._pool.fetch(
            """
            SELECT o.key, o.version_id, o.size, c.outcome, c.reason, c.message
            FROM cleanup_items c JOIN objects o ON o.id = c.object_id
            WHERE c.cleanup_id = $1
            ORDER BY CASE c.outcome WHEN 'failed' THEN 0 WHEN 'skipped' THEN 1 ELSE 2 END,
                     c.updated_at DESC, o.key, o.id
            LIMIT $2
            """,
            cleanup_id,
            limit + 1,
        )
        items = [
            CleanupItem(
                key=r["key"],
                version_id=r["version_id"],
                size=int(r["size"]),
                outcome=r["outcome"],
                reason=r["reason"],
                message=r["message"],
            )
            for r in records[:limit]
        ]
        return items, len(records) > limit

    async def get_cleanup_state(self, cleanup_id: int) -> dict[str, Any]:
        """A cleanup's bookkeeping."""
        value = await self._pool.fetchval("SELECT state FROM cleanups WHERE id = $1", cleanup_id)
        return cast(dict[str, Any], value or {})

    async def reopen_cleanup(self, cleanup_id: int) -> int:
        """Put every item not deleted back to ``planned``, for a new pass; returns how many.

        Items a dry run would have deleted, skipped ones (their gate may hold now) and
        failed ones are decided again; deleted ones stay deleted.
        """
        status = await self._pool.execute(
            """
            UPDATE cleanup_items
            SET outcome = 'planned', reason = NULL, message = NULL, lease_owner = NULL,
                lease_expires_at = NULL, updated_at = now()
            WHERE cleanup_id = $1 AND outcome NOT IN ('planned', 'deleted')
            """,
            cleanup_id,
        )
        return _affected(status)

    async def update_cleanup_state(self, cleanup_id: int, patch: dict[str, Any]) -> None:
        """Shallow-merge ``patch`` into a cleanup's bookkeeping."""
        await self._pool.execute(
            "UPDATE cleanups SET state = state || $2::jsonb WHERE id = $1",
            cleanup_id,
            patch,
        )

    async def verification_digest(
        self, migration_id: int, *, batch_size: int = STREAM_BATCH
    ) -> Digest:
        """The digest over the verified rows, which a cleanup approval must quote.

        SHA-256 over, in order, a fixed header and one length-prefixed record per
        ``verified`` row in ascending (key, version_id) byte order. Exact encoding::

            input  = b"objmig-verification-v1\\n" || record(row_1) || record(row_2) || ...
            record = field(key) || field(version_id) || field(size) || field(etag)
                     || field(target_key) || field(target_etag) || field(source_checksum)
            field(v) = uint32_big_endian(len(b)) || b
                       where b = UTF-8 of v, size as decimal ASCII, NULL as b""

        Returned as lowercase hex, with the number of rows and their total size. Any change
        to a verified row's listed fields, or a row entering or leaving ``verified``, changes
        the digest. (``objmig.ledger.report.DigestBuilder`` implements the encoding.)
        """
        builder = DigestBuilder()
        query = """
            SELECT key, version_id, size, etag, target_key, target_etag, source_checksum
            FROM objects
            WHERE migration_id = $1 AND state = 'verified'
            ORDER BY key, version_id
        """
        async with aclosing(self._stream(query, (migration_id,), batch_size)) as batches:
            async for batch in batches:
                for r in batch:
                    builder.add(
                        r["key"],
                        r["version_id"],
                        r["size"],
                        r["etag"],
                        r["target_key"],
                        r["target_etag"],
                        r["source_checksum"],
                    )
        return Digest(objects=builder.objects, bytes=builder.bytes, sha256=builder.hexdigest())


def _writer(out: ReportOutput) -> Callable[[str], Awaitable[None]]:
    """An ``async write(str)`` for any supported report output."""
    write = out.write
    if iscoroutinefunction(write):
        sink = cast(AsyncSink, out)

        async def write_async(text: str) -> None:
            await sink.write(text.encode("utf-8"))

        return write_async
    if isinstance(out, io.TextIOBase):
        text_out = cast(IO[str], out)

        async def write_text(text: str) -> None:
            text_out.write(text)

        return write_text
    binary_out = cast(IO[bytes], out)

    async def write_binary(text: str) -> None:
        binary_out.write(text.encode("utf-8"))

    return write_binary
