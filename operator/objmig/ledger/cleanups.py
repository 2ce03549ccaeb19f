"""Cleanups: the deletion requests of a migration and their per-object items.

Owns the ``cleanups`` and ``cleanup_items`` SQL: creating and finding a cleanup, planning
its items, leasing and recording them, and reading their outcomes. The cleanup's state
document is read and written in ``objmig.ledger.migrations``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from objmig.ledger.base import _O_COLUMNS, LedgerBase, MigrationConflict, _affected
from objmig.ledger.models import CleanupItem, CleanupOutcome, ObjectRow, StateCount


class CleanupsMixin(LedgerBase):
    """Cleanups and their items."""

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

    async def plan_cleanup(
        self, cleanup_id: int, migration_id: int, *, bucket: str | None = None
    ) -> int:
        """Add every verified, cut-over object of the migration (of one ``bucket`` of it,
        if given) not yet planned; returns how many.

        Idempotent: objects already planned (whatever their outcome) are left as they are.
        """
        status = await self._pool.execute(
            """
            INSERT INTO cleanup_items (cleanup_id, object_id)
            SELECT $1, id FROM objects
            WHERE migration_id = $2 AND state = 'verified' AND cut_over_at IS NOT NULL
              AND ($3::text IS NULL OR bucket = $3::text)
            ON CONFLICT DO NOTHING
            """,
            cleanup_id,
            migration_id,
            bucket,
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
            SELECT o.bucket, o.key, o.version_id, o.size, c.outcome, c.reason, c.message
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
                bucket=r["bucket"],
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
