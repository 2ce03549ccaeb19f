"""The ledger: per-object state of every migration, in PostgreSQL (asyncpg).

Workers, the operator and the CLI share one ``Ledger`` API. Work is handed out with leases:
``claim`` locks a batch of rows with ``FOR UPDATE SKIP LOCKED`` and stamps them with an owner
and an expiry; ``record`` writes the outcome only if the caller still owns the lease. A
worker that dies simply stops renewing; once its leases expire the rows are claimable again,
so nothing is lost and nothing is done twice *as far as the ledger is concerned* (the steps
themselves re-check before they act, which covers the window in between).

All SQL is parameterised; the only identifiers built in Python are fixed strings.

The methods live in one module per concern (``migrations``, ``inventory``, ``leases``,
``cutover``, ``reads``, ``cleanups``, ``steps``, ``activity``), each a mixin over
``LedgerBase``; this module composes them into ``Ledger`` and owns its lifecycle (pool,
schema, closing).
"""

from __future__ import annotations

import json
from types import TracebackType
from typing import Self

import asyncpg

from objmig.ledger.activity import ActivityMixin
from objmig.ledger.base import LedgerError, MigrationConflict, UnknownMigration
from objmig.ledger.cleanups import CleanupsMixin
from objmig.ledger.cutover import CutoverMixin
from objmig.ledger.inventory import InventoryMixin
from objmig.ledger.leases import LeasesMixin
from objmig.ledger.migrations import MigrationsMixin
from objmig.ledger.reads import AsyncSink, ReadsMixin
from objmig.ledger.schema import apply_schema
from objmig.ledger.steps import StepsMixin

__all__ = [
    "AsyncSink",
    "Ledger",
    "LedgerError",
    "MigrationConflict",
    "UnknownMigration",
]


async def _init_connection(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    # jsonb as Python objects (migrations.state) instead of JSON text.
    await conn.set_type_codec("jsonb", schema="pg_catalog", encoder=json.dumps, decoder=json.loads)


class Ledger(
    MigrationsMixin,
    InventoryMixin,
    LeasesMixin,
    CutoverMixin,
    ReadsMixin,
    CleanupsMixin,
    StepsMixin,
    ActivityMixin,
):
    """Per-object state of migrations, shared by the operator, the workers and the CLI.

    Create with :meth:`connect` (which applies the schema) and close with :meth:`close`, or
    wrap an existing pool with ``Ledger(pool)`` after calling ``apply_schema`` yourself.
    Every method is safe to call concurrently from many tasks and processes.
    """

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
