"""Inventory: merging a scan's listing into the ledger (``upsert_inventory``).

Owns the COPY and ``INSERT ... ON CONFLICT`` merge SQL, the chunking of listings and the
statistics refresh after large inventories.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable

import asyncpg

from objmig.ledger.base import LedgerBase, _affected
from objmig.ledger.models import InventoryResult, InventoryRow
from objmig.ledger.schema import Connection

#: Rows per COPY + merge round of ``upsert_inventory``: bounds memory and transaction size.
INVENTORY_CHUNK = 50_000
#: ``upsert_inventory`` refreshes the planner's statistics after inserting or changing at
#: least this many rows.
ANALYZE_AFTER_ROWS = 1_000
#: The first chunk of an inventory someone waits on (``on_chunk``); later ones double.
FIRST_WATCHED_CHUNK = 1_000

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
    "row_id",
    "bucket",
    "group_key",
    "last_seen_scan",
)


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


class InventoryMixin(LedgerBase):
    """Merging scan listings into the objects table."""

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

        * A new (bucket, key, version_id) is inserted as ``pending``.
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
        insert_only = not await self._wait.call(
            lambda: self._pool.fetchval(
                "SELECT EXISTS (SELECT 1 FROM objects WHERE migration_id = $1)", migration_id
            )
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
                # Each chunk waits for an unreachable ledger by itself: the listing is read
                # once, so the call as a whole cannot be tried again (and its own errors,
                # a store refusing a connection, say, are not the ledger's).
                running.add(asyncio.create_task(self._wait.call(functools.partial(merge, chunk))))
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
            await self._wait.call(self._analyze_objects)
        return result

    async def _analyze_objects(self) -> None:
        async with self._pool.acquire() as conn:
            await _analyze(conn)

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
        unique = {(r.bucket, r.key, r.version_id): r for r in chunk}
        records = [
            (
                r.key,
                r.version_id,
                r.size,
                r.etag,
                r.last_modified,
                r.storage_class,
                r.target_key,
                r.row_id,
                r.bucket,
                r.group_key,
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
                    WHERE mine.migration_id = $1 AND mine.bucket = s.bucket AND mine.key = s.key
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
            "group_key": "EXCLUDED.group_key",
            "source_metadata": "NULL",
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
                    "not_preserved",
                    "verified_at",
                    "verified_by",
                    "degraded",
                    "cut_over_at",
                    "lease_owner",
                    "lease_expires_at",
                    # The new version is another object for the application's hook. (What a
                    # backfill wrote stays recorded: a rollback still puts it back.)
                    "hook_done_at",
                    "target_last_modified",
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
                                     storage_class, target_key, row_id, bucket, group_key,
                                     last_seen_scan)
                SELECT $1, key, version_id, size, etag, last_modified, storage_class,
                       target_key, row_id, bucket, group_key, $2
                FROM objmig_inventory_stage s
                {ours}
                ON CONFLICT (migration_id, bucket, key, version_id) DO UPDATE SET
                    {assignments},
                    row_id = EXCLUDED.row_id,
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
                    target_key text,
                    row_id text,
                    bucket text COLLATE "C",
                    group_key text COLLATE "C"
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
