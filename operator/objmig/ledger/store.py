"""The ledger: per-object state of every migration, in PostgreSQL (asyncpg).

Workers, the operator and the CLI share one ``Ledger`` API. Work is handed out with leases:
``claim`` locks a batch of rows with ``FOR UPDATE SKIP LOCKED`` and stamps them with an owner
and an expiry; ``record`` writes the outcome only if the caller still owns the lease. A
worker that dies simply stops renewing; once its leases expire the rows are claimable again,
so nothing is lost and nothing is done twice *as far as the ledger is concerned* (the steps
themselves re-check before they act, which covers the window in between).

All SQL is parameterised; the only identifiers built in Python are fixed strings.

The methods live in one module per concern (``migrations``, ``inventory``, ``leases``,
``cutover``, ``reads``, ``cleanups``, ``steps``, ``activity``, ``uploads``), each a
mixin over ``LedgerBase``; this module composes them into ``Ledger`` and owns its
lifecycle (pool, schema, closing).
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self

import asyncpg

from objmig.ledger.activity import ActivityMixin
from objmig.ledger.base import LedgerError, MigrationConflict, UnknownMigration
from objmig.ledger.cleanups import CleanupsMixin
from objmig.ledger.cutover import CutoverMixin
from objmig.ledger.inventory import InventoryMixin
from objmig.ledger.leases import LeasesMixin
from objmig.ledger.migrations import MigrationsMixin
from objmig.ledger.outage import LedgerUnavailable, LedgerWait, redact
from objmig.ledger.reads import AsyncSink, ReadsMixin
from objmig.ledger.schema import apply_schema
from objmig.ledger.steps import StepsMixin
from objmig.ledger.uploads import UploadsMixin

__all__ = [
    "AsyncSink",
    "Ledger",
    "LedgerError",
    "LedgerUnavailable",
    "LedgerWait",
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
    UploadsMixin,
):
    """Per-object state of migrations, shared by the operator, the workers and the CLI.

    Create with :meth:`connect` (which applies the schema) and close with :meth:`close`, or
    wrap an existing pool with ``Ledger(pool)`` after calling ``apply_schema`` yourself.
    Every method is safe to call concurrently from many tasks and processes, and every
    coroutine method waits (within its :class:`LedgerWait`) for a database that cannot be
    reached, then raises :class:`LedgerUnavailable` (see ``objmig.ledger.outage``).
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
        wait: LedgerWait | None = None,
    ) -> Ledger:
        """Open a connection pool to ``dsn`` and bring the schema up to date.

        ``wait`` says how long this and every later call waits for an unreachable database
        (default: ``LedgerWait`` naming ``dsn`` without its password).

        Raises:
            SchemaTooNew: the database was migrated by a newer objmig.
            LedgerUnavailable: the database could not be reached within ``wait``.
        """
        wait = wait or LedgerWait()
        wait.database = redact(dsn)

        async def open_pool() -> asyncpg.Pool[asyncpg.Record]:
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
            return pool

        return cls(await wait.call(open_pool), wait)

    @property
    def pool(self) -> asyncpg.Pool[asyncpg.Record]:
        """The underlying asyncpg pool."""
        return self._pool

    @property
    def wait(self) -> LedgerWait:
        """How long calls wait for an unreachable database (adjustable after connecting)."""
        return self._wait

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


def _waiting(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(method)
    async def call(self: Ledger, *args: Any, **kwargs: Any) -> Any:
        return await self._wait.call(lambda: method(self, *args, **kwargs))

    return call


# Every public coroutine method waits for an unreachable database (async iterators, which
# stream, and the lifecycle methods do not; `upsert_inventory` reads a listing only once,
# so each of its statements waits by itself).
for _name, _method in inspect.getmembers(Ledger, inspect.iscoroutinefunction):
    if not _name.startswith("_") and _name not in ("connect", "close", "upsert_inventory"):
        setattr(Ledger, _name, _waiting(_method))
