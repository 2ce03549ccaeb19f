"""Time passing for the ledger's leases and retry times, without waiting for it.

The ledger judges leases (``lease_expires_at``) and retries (``not_before``) against the
database's ``now()``. A test that waited for a one-second lease to run out spent the second,
and bet that the claim right after taking the lease came within it: on a busy machine it may
not. Instead, tests take leases that cannot run out by accident (minutes) and move them into
the past when the story says time has passed.
"""

from __future__ import annotations

from datetime import timedelta

from objmig.ledger import Ledger


async def let_time_pass(ledger: Ledger, by: timedelta) -> None:
    """As if ``by`` had passed: every lease expiry and not-before time moves ``by`` earlier."""
    await ledger.pool.execute(
        """
        UPDATE objects
        SET lease_expires_at = lease_expires_at - $1::interval,
            not_before = not_before - $1::interval
        WHERE lease_expires_at IS NOT NULL OR not_before IS NOT NULL
        """,
        by,
    )
