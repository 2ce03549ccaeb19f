"""The ledger as a worker pod reaches it: waiting while it is away, and an exit code for
the Job when it stays away (see ``objmig.ledger.outage``)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from objmig.ledger import Ledger, LedgerUnavailable, LedgerWait
from objmig.pod.exit_codes import EXIT_LEDGER_UNAVAILABLE

log = logging.getLogger("objmig.worker")


async def with_ledger(
    database_url: str, wait: LedgerWait, work: Callable[[Ledger], Awaitable[int]]
) -> int:
    """Connect, run ``work``, close; returns its exit code.

    An unreachable ledger is waited for (``wait``) at connect and at every call; when it
    stays away the pod exits with ``EXIT_LEDGER_UNAVAILABLE``, which the Job's
    podFailurePolicy ignores: another pod takes over and waits again, and no retry of the
    index is spent.
    """
    try:
        ledger = await Ledger.connect(database_url, min_size=1, max_size=4, wait=wait)
    except LedgerUnavailable as error:
        log.error("%s; exiting for the Job to start another pod", error)
        return EXIT_LEDGER_UNAVAILABLE
    try:
        return await work(ledger)
    except LedgerUnavailable as error:
        log.error("%s; exiting for the Job to start another pod", error)
        return EXIT_LEDGER_UNAVAILABLE
    finally:
        await ledger.close()
