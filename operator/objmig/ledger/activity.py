"""Worker activity: what each worker reports every few seconds, and the totals of a migration.

Owns the ``worker_activity`` SQL. Object states say what is finished; these reports say what
is under way: bytes moving inside unfinished objects, retries and their last error, and
which lease owners are alive (an owner that stopped reporting is gone, whatever its leases
say until they expire).
"""

from __future__ import annotations

from datetime import timedelta

from objmig.ledger.base import LedgerBase
from objmig.ledger.models import Activity, StateCount, WorkerReport

#: An owner that has not reported for this long is taken for gone: its leases are stalled.
#: Workers report every two seconds; this leaves room for a busy ledger.
ALIVE_WITHIN = timedelta(seconds=20)


class ActivityMixin(LedgerBase):
    """Workers' reports, and their sum for the status."""

    async def report_activity(self, migration_id: int, owner: str, report: WorkerReport) -> None:
        """Store ``owner``'s latest report (its counters are totals, not increments)."""
        await self._pool.execute(
            """
            INSERT INTO worker_activity AS w (migration_id, owner, bytes_moved, bytes_in_flight,
                                              retries, last_error, last_error_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (migration_id, owner) DO UPDATE
            SET bytes_moved = EXCLUDED.bytes_moved, bytes_in_flight = EXCLUDED.bytes_in_flight,
                retries = EXCLUDED.retries,
                last_error = coalesce(EXCLUDED.last_error, w.last_error),
                last_error_at = coalesce(EXCLUDED.last_error_at, w.last_error_at),
                updated_at = now()
            """,
            migration_id,
            owner,
            report.bytes_moved,
            report.bytes_in_flight,
            report.retries,
            report.last_error,
            report.last_error_at,
        )

    async def activity(self, migration_id: int, alive_within: timedelta = ALIVE_WITHIN) -> Activity:
        """The sum of every worker's reports, and the leases held by owners gone silent.

        A lease counts as stalled when it expired, or when its owner reported before but not
        within ``alive_within`` (a killed worker's leases stay live for minutes). Owners
        that never reported (an older worker) are given the benefit of the doubt.
        """
        async with self._pool.acquire() as conn:
            totals = await conn.fetchrow(
                """
                SELECT coalesce(sum(bytes_moved), 0)::bigint AS moved,
                       coalesce(sum(bytes_in_flight)
                                FILTER (WHERE updated_at > now() - $2::interval), 0)::bigint
                           AS in_flight,
                       coalesce(sum(retries), 0)::bigint AS retries,
                       (array_agg(last_error ORDER BY last_error_at DESC NULLS LAST))[1]
                           AS last_error
                FROM worker_activity WHERE migration_id = $1
                """,
                migration_id,
                alive_within,
            )
            stalled = await conn.fetchrow(
                """
                SELECT count(*) AS objects, coalesce(sum(size), 0)::bigint AS bytes
                FROM objects o
                WHERE o.migration_id = $1 AND o.lease_owner IS NOT NULL
                  AND o.lease_expires_at > now()
                  AND EXISTS (SELECT 1 FROM worker_activity w
                              WHERE w.migration_id = $1 AND w.owner = o.lease_owner
                                AND w.updated_at <= now() - $2::interval)
                """,
                migration_id,
                alive_within,
            )
        assert totals is not None
        assert stalled is not None
        return Activity(
            bytes_moved=int(totals["moved"]),
            bytes_in_flight=int(totals["in_flight"]),
            retries=int(totals["retries"]),
            last_error=totals["last_error"],
            stalled=StateCount(objects=int(stalled["objects"]), bytes=int(stalled["bytes"])),
        )
