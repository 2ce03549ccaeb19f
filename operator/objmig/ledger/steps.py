"""The application's steps on object rows: the backfill's record of what it writes into the
application's table, and the counts the status shows of them and of the hooks.

The backfill records what it will write (``plan_backfill``) before it writes it, and what
it wrote (``finish_backfill``) after the application's transaction committed: a crash in
between leaves the plan, from which the next attempt (or a rollback) tells what stands.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from objmig.ledger.base import LedgerBase
from objmig.ledger.models import BackfillRecord, StepCounts

#: Rows per page when reading back what a backfill wrote (for a rollback).
_PAGE = 1_000


class StepsMixin(LedgerBase):
    """The backfill's records and the counts of the application's steps."""

    async def plan_backfill(
        self, owner: str | None, plans: Mapping[int, Mapping[str, list[Any]]]
    ) -> set[int]:
        """Record what the backfill is about to write: ``{id: {column: [before, after]}}``.

        Only rows ``owner`` still holds are recorded (``None``: no lease is involved, as at
        cutover); returns their ids. Write only those rows.
        """
        if not plans:
            return set()
        records = await self._pool.fetch(
            """
            UPDATE objects o SET backfill = jsonb_build_object('plan', p.plan)
            FROM unnest($1::bigint[], $2::jsonb[]) AS p(id, plan)
            WHERE o.id = p.id AND ($3::text IS NULL OR o.lease_owner = $3::text)
            RETURNING o.id
            """,
            list(plans),
            [dict(plan) for plan in plans.values()],
            owner,
        )
        return {int(r["id"]) for r in records}

    async def finish_backfill(
        self, owner: str | None, outcomes: Mapping[int, Mapping[str, Any]]
    ) -> set[int]:
        """Record what the backfill did for each row (its outcome and the values written)
        and stamp ``backfilled_at``; only rows ``owner`` holds (``None``: any). Returns them.
        """
        if not outcomes:
            return set()
        records = await self._pool.fetch(
            """
            UPDATE objects o SET backfill = r.record, backfilled_at = now()
            FROM unnest($1::bigint[], $2::jsonb[]) AS r(id, record)
            WHERE o.id = r.id AND ($3::text IS NULL OR o.lease_owner = $3::text)
            RETURNING o.id
            """,
            list(outcomes),
            [dict(outcome) for outcome in outcomes.values()],
            owner,
        )
        return {int(r["id"]) for r in records}

    async def backfill_records(self, migration_id: int) -> AsyncIterator[list[BackfillRecord]]:
        """Pages of the rows a backfill wrote or may have written (done, or planned when it
        stopped), in id order, holding no connection between pages."""
        after = 0
        while True:
            records = await self._pool.fetch(
                """
                SELECT id, key, row_id, backfill FROM objects
                WHERE migration_id = $1 AND backfill IS NOT NULL AND id > $2
                ORDER BY id LIMIT $3
                """,
                migration_id,
                after,
                _PAGE,
            )
            if not records:
                return
            yield [
                BackfillRecord(int(r["id"]), r["key"], r["row_id"], dict(r["backfill"]))
                for r in records
            ]
            after = int(records[-1]["id"])

    async def forget_backfill(self, ids: list[int]) -> int:
        """Drop the backfill records of ``ids`` (their values were put back); returns how
        many rows changed."""
        if not ids:
            return 0
        records = await self._pool.fetch(
            """
            UPDATE objects SET backfill = NULL, backfilled_at = NULL
            WHERE id = ANY($1::bigint[]) RETURNING id
            """,
            ids,
        )
        return len(records)

    async def step_counts(
        self, migration_id: int, *, missing_reason: str, hook_pending_reason: str
    ) -> StepCounts:
        """Objects by where their application steps stand, from one scan of the migration's
        rows (only migrations with such steps ask).

        ``missing_reason`` is the skip reason (or, failed, the error code) of objects that
        do not exist; ``hook_pending_reason`` the skip reason of objects a verify-only run
        found without their hook done.
        """
        record = await self._pool.fetchrow(
            """
            SELECT
                count(*) FILTER (WHERE skip_reason = $2
                                 OR (state = 'failed' AND error_code = $2)) AS missing,
                count(*) FILTER (WHERE hook_done_at IS NOT NULL) AS hooks_done,
                count(*) FILTER (WHERE hook_done_at IS NULL
                                 AND (state = 'finishing' OR skip_reason = $3)) AS hooks_pending,
                count(*) FILTER (WHERE backfill->>'outcome' = 'written') AS written,
                count(*) FILTER (WHERE backfill->>'outcome' = 'alreadySet') AS already_set,
                count(*) FILTER (WHERE backfill->>'outcome' = 'noRow') AS no_row,
                count(*) FILTER (WHERE backfill->>'outcome' = 'conflict') AS conflicts
            FROM objects WHERE migration_id = $1
            """,
            migration_id,
            missing_reason,
            hook_pending_reason,
        )
        assert record is not None  # an aggregate always answers
        return StepCounts(
            missing=int(record["missing"]),
            hooks_done=int(record["hooks_done"]),
            hooks_pending=int(record["hooks_pending"]),
            backfill_written=int(record["written"]),
            backfill_already_set=int(record["already_set"]),
            backfill_no_row=int(record["no_row"]),
            backfill_conflicts=int(record["conflicts"]),
        )
