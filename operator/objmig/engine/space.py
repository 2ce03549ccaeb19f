"""Free space on a target directory, as the lifecycle observes it.

A write that would leave less than `target.filesystem.minFreeSpace` free is refused before
its first byte (`objmig.storage.filesystem.write`), and its object waits. The worker that
was refused records the observation in the migration's state (`target_space`, low), which
`objmig.engine.lifecycle.decide` turns into the pause with reason TargetSpaceLow; it keeps
measuring, and records that the space is back once the refused object would fit, which
ends the pause. Workers that were refused nothing write nothing, so one worker's view
never overwrites another's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from objmig.ledger import Ledger, TargetSpace
from objmig.storage.filesystem import FileStore, TargetSpaceLowError

log = logging.getLogger(__name__)

#: How often a worker that was refused space measures it again.
WATCH_SECONDS = 5.0


class SpaceWatch:
    """One worker's watch over the free space of its target directory."""

    def __init__(self, ledger: Ledger, migration_id: int, store: FileStore, minimum: int) -> None:
        self._ledger = ledger
        self._migration_id = migration_id
        self._store = store
        self._minimum = minimum
        self._needed = 0
        self._woken = asyncio.Event()

    def refused(self, error: TargetSpaceLowError) -> None:
        """A write of `error.needed` bytes was refused: measure (and record) now."""
        self._needed = max(self._needed, error.needed or 1)
        self._woken.set()

    async def run(self) -> None:
        """Record the pause while refused objects do not fit, and its end once they do."""
        recorded_low = False
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), timeout=WATCH_SECONDS)
            self._woken.clear()
            if not self._needed:
                continue
            free, total = await self._store.free_space()
            low = free - self._needed < self._minimum
            if low or recorded_low:
                await self._ledger.update_state(
                    self._migration_id,
                    target_space=TargetSpace(
                        free=free,
                        total=total,
                        minimum=self._minimum,
                        low=low,
                        at=datetime.now(UTC),
                    ),
                )
                if low != recorded_low:
                    log.warning(
                        "target %s: %d bytes free, %s",
                        self._store.root,
                        free,
                        "objects wait for room" if low else "room again",
                    )
                recorded_low = low
            if not low:
                self._needed = 0
