"""What every part of the ledger shares: the pool holder, the errors, column lists.

``LedgerBase`` holds the asyncpg pool; the concern modules (``migrations``, ``inventory``,
``leases``, ``cutover``, ``reads``, ``cleanups``) each add their methods to it as a mixin,
and ``objmig.ledger.store.Ledger`` composes them. The underscored names here are private
to the ``objmig.ledger`` package.
"""

from __future__ import annotations

import asyncpg

from objmig.ledger.errors import LedgerError, MigrationConflict, UnknownMigration
from objmig.ledger.models import OBJECT_COLUMNS
from objmig.ledger.outage import LedgerWait

__all__ = ["LedgerBase", "LedgerError", "MigrationConflict", "UnknownMigration"]

_COLUMNS = ", ".join(OBJECT_COLUMNS)
_O_COLUMNS = ", ".join(f"o.{c}" for c in OBJECT_COLUMNS)


def _affected(status: str) -> int:
    # asyncpg returns the command tag, e.g. "UPDATE 42" or "INSERT 0 7".
    return int(status.rsplit(" ", 1)[-1])


class LedgerBase:
    """The state all ledger mixins share: the connection pool, and how long calls wait for
    a database that cannot be reached."""

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record], wait: LedgerWait | None = None) -> None:
        self._pool = pool
        self._wait = wait or LedgerWait()
