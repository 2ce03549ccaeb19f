"""Which asyncpg errors mean "the ledger is away, wait for it" rather than "a bug"."""

from __future__ import annotations

import asyncpg
import pytest

from objmig.ledger.outage import unreachable


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connect call failed"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.InterfaceError("connection is closed"),
        # What the pool's reset of a connection the server ended mid-query raises (seen when
        # the ledger was stopped under load, in `objmig run` and in worker pods alike).
        asyncpg.InternalClientError(
            "cannot switch to state 15; another operation (2) is in progress"
        ),
    ],
)
def test_a_database_that_went_away_is_waited_for(error: BaseException) -> None:
    assert unreachable(error)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.UndefinedTableError('relation "objects" does not exist'),
        asyncpg.InterfaceError("the server expects 2 arguments, 1 was passed"),
        asyncpg.InternalClientError("PoolConnectionHolder.release() called on a free holder"),
        ValueError("a bug of ours"),
    ],
)
def test_a_wrong_statement_or_a_bug_is_not(error: BaseException) -> None:
    assert not unreachable(error)
