"""A worker's batches of the backfill (copy.mode none): objects found wait for their rows
to be written together, one transaction a batch (see `objmig.engine.backfill`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence

import asyncpg

from objmig.api.migration import ObjectMigrationSpec
from objmig.engine.appdb import (
    ApplicationDatabaseError,
    Connection,
    answer,
    connect,
    describe_error,
)
from objmig.engine.backfill import BackfillTable, backfill_items
from objmig.engine.pipeline import outcomes
from objmig.ledger import Ledger, ObjectRow, ObjectState, StepResult
from objmig.storage.errors import ErrorClass, ErrorKind

#: How long the first object of a worker's batch waits for others at most.
LINGER_SECONDS = 1.0


class BackfillQueue:
    """A worker's objects waiting for their rows to be backfilled (copy.mode none).

    The claim loop hands each object it found (its result verified, its row not
    backfilled yet) here instead of recording it; a batch goes out when ``batchSize``
    objects wait, when the first has waited `LINGER_SECONDS`, or when nothing else is on
    its way. The rows stay leased meanwhile (the claim loop's heartbeat covers them).
    """

    def __init__(self, spec: ObjectMigrationSpec, dsn: str, ledger: Ledger, owner: str) -> None:
        assert spec.backfill is not None
        self._spec = spec
        self._size = spec.backfill.batch_size
        self._dsn = dsn
        self._ledger = ledger
        self._owner = owner
        self._waiting: list[tuple[ObjectRow, StepResult]] = []
        self._since = 0.0
        self._table: BackfillTable | None = None
        self._conn: Connection | None = None

    @staticmethod
    def wants(row: ObjectRow, result: StepResult) -> bool:
        """Whether this object's row is still to be backfilled."""
        return result.state is ObjectState.VERIFIED and row.backfilled_at is None

    def add(self, row: ObjectRow, result: StepResult) -> None:
        if not self._waiting:
            self._since = time.monotonic()
        self._waiting.append((row, result))

    @property
    def held(self) -> list[int]:
        """Rows waiting here (their leases must be kept)."""
        return [row.id for row, _ in self._waiting]

    def due(self, *, idle: bool) -> bool:
        """Whether a batch should go now (``idle``: nothing else is on its way)."""
        return bool(self._waiting) and (
            idle
            or len(self._waiting) >= self._size
            or time.monotonic() - self._since >= LINGER_SECONDS
        )

    def take(self) -> list[tuple[ObjectRow, StepResult]]:
        """The next batch (at most batchSize objects)."""
        batch, self._waiting = self._waiting[: self._size], self._waiting[self._size :]
        self._since = time.monotonic()
        return batch

    def give_back(self) -> list[int]:
        """Empty the queue (the worker stops); the ids to release unrecorded."""
        ids, self._waiting = self.held, []
        return ids

    async def write(self, batch: Sequence[tuple[ObjectRow, StepResult]]) -> list[StepResult]:
        """Backfill a batch; the results to record: the objects' own for those written,
        a retry (or a failure) for each when the write did not happen.

        Raises `ApplicationError` when the table cannot take the backfill at all.
        """
        try:
            table, conn = await self._open()
            rows = [_learnt(row, result) for row, result in batch]
            done = await table.write(
                conn, self._ledger, self._owner, backfill_items(self._spec, rows)
            )
        except ApplicationDatabaseError as failed:
            await self.close()
            cause = failed.__cause__
            problem = _classify(cause if isinstance(cause, Exception) else failed)
            return [
                outcomes.unfinished(row, result, problem, "backfill", self._spec.retry)
                for row, result in batch
            ]
        # Objects missing from `done` lost their lease: whoever holds them now finishes them.
        return [result for row, result in batch if row.id in done]

    async def _open(self) -> tuple[BackfillTable, Connection]:
        if self._conn is None or self._conn.is_closed():
            self._conn = await answer(connect(self._dsn))
            self._table = None
        if self._table is None:
            assert self._spec.backfill is not None
            self._table = await BackfillTable.open(self._spec.backfill, self._conn)
        return self._table, self._conn

    async def close(self) -> None:
        conn, self._conn, self._table = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


def _learnt(row: ObjectRow, result: StepResult) -> ObjectRow:
    """The claimed row with what its verification (the look) found, not recorded yet."""
    return row._replace(
        target_etag=result.target_etag or row.target_etag,
        target_version_id=result.target_version_id or row.target_version_id,
        target_checksum=result.target_checksum or row.target_checksum,
        target_last_modified=result.target_last_modified or row.target_last_modified,
    )


#: Errors of the application's database that a later attempt may not meet again.
_TRANSIENT = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.TooManyConnectionsError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.AdminShutdownError,
)


def _classify(error: Exception) -> ErrorClass:
    """A failed write to the application's database: a dropped connection or a server
    starting up is retried; anything the server refuses (a value, a constraint) is not."""
    kind: ErrorKind = "retryable" if isinstance(error, _TRANSIENT) else "permanent"
    return ErrorClass(kind, "BackfillFailed", describe_error(error))
