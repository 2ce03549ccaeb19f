"""A ledger that cannot be reached: waiting for it, and saying which one when it stays away.

Every public coroutine of :class:`objmig.ledger.Ledger` runs through :meth:`LedgerWait.call`:
when the database is unreachable (refused or dropped connections, a server shutting down
or starting up) the call is tried again with capped exponential backoff, up to a bounded
time, and only then fails with :class:`LedgerUnavailable`, whose message names the database
(never its password). Ledger calls are safe to repeat: each is one statement or one
transaction, and those that change rows re-check what they change (results apply only
under their lease, inventory merges by key, state documents merge by section).

Once one call has given up, the others try once and give up at once until the database
answers again, so that a stopping worker does not wait the whole time again for each of
its last writes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from objmig.ledger.errors import LedgerError

log = logging.getLogger(__name__)
T = TypeVar("T")

# asyncpg's pool logs every failed attempt to reconnect its idle connections with a
# traceback; while the ledger is away that is one per second, and `LedgerWait` says it
# once, in a line. Its errors still come through.
logging.getLogger("asyncpg.pool").setLevel(logging.ERROR)

#: How long a call waits for an unreachable ledger by default (``OBJMIG_LEDGER_WAIT``).
DEFAULT_WAIT_SECONDS = 600.0

_UNREACHABLE = (
    OSError,  # refused, reset, unreachable, DNS, timeouts (TimeoutError is an OSError)
    asyncpg.PostgresConnectionError,  # SQLSTATE 08: the connection broke or never was
    asyncpg.CannotConnectNowError,  # 57P03: the server is starting up or shutting down
    asyncpg.AdminShutdownError,  # 57P01
    asyncpg.CrashShutdownError,  # 57P02
    asyncpg.TooManyConnectionsError,  # 53300: a server restarting is often full at first
)


def unreachable(error: BaseException) -> bool:
    """Whether ``error`` says the database cannot be reached now (rather than that a
    statement was wrong): worth waiting for."""
    if isinstance(error, asyncpg.InterfaceError):
        return "closed" in str(error)  # a pooled connection the server dropped
    if isinstance(error, asyncpg.InternalClientError):
        # A session the server ended mid-query can leave asyncpg's protocol half-way
        # (MagicStack/asyncpg#784): the pool's reset of that connection then fails with
        # "cannot switch to state N; another operation (M) is in progress", and the pool
        # terminates it. The next try takes a new connection.
        return "another operation" in str(error)
    return isinstance(error, _UNREACHABLE)


def redact(dsn: str) -> str:
    """The database URL without its password (and without query options)."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "the ledger database"
    if not parts.scheme:
        return "the ledger database"
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit((parts.scheme, f"{user}{host}", parts.path, "", ""))


def describe(error: BaseException) -> str:
    """The cause in one line, without a traceback."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class LedgerUnavailable(LedgerError):
    """The ledger database stayed unreachable for as long as the caller was willing to wait."""

    def __init__(self, database: str, cause: str, waited: float) -> None:
        self.database = database
        self.cause = cause
        self.waited = waited
        super().__init__(
            f"the ledger database {database} is unreachable ({cause}); gave up after {waited:.0f} s"
        )


@dataclass
class LedgerWait:
    """How long, and how patiently, ledger calls wait for an unreachable database."""

    database: str = "the ledger database"
    timeout: float = DEFAULT_WAIT_SECONDS
    initial: float = 0.5
    maximum: float = 10.0
    #: Called before each new try while waiting (e.g. to start an embedded server again).
    on_wait: Callable[[], Awaitable[None]] | None = None
    _gave_up: bool = field(default=False, repr=False)
    _waiting_since: float | None = field(default=None, repr=False)

    async def call(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()``, tried again while the database is unreachable."""
        started = time.monotonic()
        delay = self.initial
        while True:
            try:
                result = await attempt()
            except Exception as error:
                if not unreachable(error):
                    raise
                waited = time.monotonic() - started
                if self._gave_up or waited >= self.timeout:
                    self._gave_up = True
                    raise LedgerUnavailable(self.database, describe(error), waited) from error
                self._note_outage(error)
                await asyncio.sleep(min(delay, self.timeout - waited) * random.uniform(0.5, 1))  # noqa: S311 - jitter
                delay = min(delay * 2, self.maximum)
                if self.on_wait is not None:
                    await self.on_wait()
                continue
            self._note_recovery()
            return result

    def _note_outage(self, error: BaseException) -> None:
        if self._waiting_since is None:
            self._waiting_since = time.monotonic()
            log.warning(
                "the ledger database %s is unreachable (%s); waiting up to %.0f s for it",
                self.database,
                describe(error),
                self.timeout,
            )

    def _note_recovery(self) -> None:
        self._gave_up = False
        if self._waiting_since is not None:
            log.warning(
                "the ledger database %s answers again after %.0f s",
                self.database,
                time.monotonic() - self._waiting_since,
            )
            self._waiting_since = None
