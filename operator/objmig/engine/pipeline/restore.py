"""Archived sources: request a restore once, then wait for it.

Without `spec.restore` (or for a storage class it does not name) the object is skipped
(`ArchivedNotRestored`). Otherwise RestoreObject is sent when the HEAD shows no restore
under way (a second request after a crash is harmless), and the row waits in `restoring`;
its next claim HEADs the source again, soon after the request first, then less and less
often, up to `pollInterval` (`policy.restore_poll_delay`).
"""

from __future__ import annotations

from objmig.engine.pipeline import outcomes
from objmig.engine.pipeline.outcomes import PLAN_RESTORE
from objmig.engine.pipeline.sides import Sides
from objmig.engine.policy import restore_poll_delay
from objmig.ledger.models import ObjectRow, StepResult
from objmig.storage.restore import request_restore
from objmig.storage.types import HeadResult


async def restore(sides: Sides, row: ObjectRow, source: HeadResult) -> StepResult:
    """The next state of an archived `row` whose source HEAD is `source`."""
    spec = sides.spec.restore
    if spec is None or source.storage_class not in spec.storage_classes:
        return outcomes.skipped(row, "ArchivedNotRestored")
    if sides.plan_only:
        return outcomes.skipped(row, PLAN_RESTORE)
    now = outcomes.now()
    requested_at = row.restore_requested_at
    if source.restore is None:
        await request_restore(
            await sides.src.sdk(),
            sides.source_bucket(row),
            row.key,
            row.version_id or None,
            spec.tier,
            spec.days,
            storage_class=source.storage_class,
            archive_status=source.archive_status,
        )
        requested_at = now
    elif requested_at is None:
        # Under way, asked for by someone else (or by an attempt that did not live to
        # record it): counted from now.
        requested_at = now
    since = (now - requested_at).total_seconds()
    delay = restore_poll_delay(since, sides.ctx.restore_poll_seconds)
    return outcomes.restoring(row, delay, requested_at)
