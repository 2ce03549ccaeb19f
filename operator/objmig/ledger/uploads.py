"""Multipart uploads objmig started and has not seen end, one row each (``uploads``).

An incomplete upload shows no metadata in S3, only its key, id and start time: the ids
recorded here, the moment CreateMultipartUpload answers, are what tells objmig's uploads
from anyone else's. An upload is forgotten when it completes or is aborted; what a killed
attempt left behind stays recorded until the next attempt of its object (or a leftovers
cleanup) aborts it.
"""

from __future__ import annotations

from collections.abc import Sequence

from objmig.ledger.base import LedgerBase
from objmig.ledger.models import OpenUpload


class UploadsMixin(LedgerBase):
    """The ``uploads`` table."""

    async def upload_started(self, object_id: int, target_key: str, upload_id: str) -> None:
        """Record an upload of ``object_id`` (before any part is sent)."""
        await self._pool.execute(
            """
            INSERT INTO uploads (object_id, upload_id, target_key) VALUES ($1, $2, $3)
            ON CONFLICT DO NOTHING
            """,
            object_id,
            upload_id,
            target_key,
        )

    async def object_uploads(self, object_id: int) -> list[OpenUpload]:
        """The recorded uploads of one object not known to have ended, oldest first."""
        records = await self._pool.fetch(
            """
            SELECT object_id, target_key, upload_id, started_at FROM uploads
            WHERE object_id = $1 ORDER BY started_at
            """,
            object_id,
        )
        return [OpenUpload(*r) for r in records]

    async def uploads_ended(self, object_id: int, upload_ids: Sequence[str]) -> None:
        """Forget uploads that completed or were aborted."""
        await self._pool.execute(
            "DELETE FROM uploads WHERE object_id = $1 AND upload_id = ANY($2::text[])",
            object_id,
            list(upload_ids),
        )

    async def open_uploads(self, migration_id: int) -> list[OpenUpload]:
        """Every recorded upload of a migration not known to have ended, oldest first."""
        records = await self._pool.fetch(
            """
            SELECT u.object_id, u.target_key, u.upload_id, u.started_at
            FROM uploads u JOIN objects o ON o.id = u.object_id
            WHERE o.migration_id = $1 ORDER BY u.started_at
            """,
            migration_id,
        )
        return [OpenUpload(*r) for r in records]
