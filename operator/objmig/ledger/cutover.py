"""Cutover marks on object rows: ``cut_over_at`` and the ``deleted`` state."""

from __future__ import annotations

from collections.abc import Sequence

from objmig.ledger.base import LedgerBase, _affected


class CutoverMixin(LedgerBase):
    """Stamping and clearing cutover, and recording deleted sources."""

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
