"""The application's own step for each verified object: its per-object hook.

Runs after verification (with copy.mode none: after the object was looked at), or for a
row claimed in `finishing` (verified before, its hook not done). A hook done is recorded
with the row's result and never sent again; a hook that fails leaves the row `finishing`
for a retry under `spec.retry`, or fails it (see `objmig.engine.hooks`). The backfill,
the other step, is written in batches by the claim loop (`objmig.engine.backfill`).

A verify-only run calls no hook: an object whose hook is not done is skipped with reason
`HookPending`, so the status and the report show which ones.
"""

from __future__ import annotations

from objmig.engine.hooks import HookClient, HookError, hook_document, idempotency_key
from objmig.engine.pipeline import outcomes
from objmig.engine.pipeline.sides import Sides
from objmig.ledger.models import ObjectRow, StepResult


class ApplicationSteps:
    """What runs for each verified object of one migration, after the verification."""

    def __init__(self, sides: Sides, hooks: HookClient | None) -> None:
        self._sides = sides
        self._hooks = hooks

    async def run(self, row: ObjectRow, result: StepResult) -> StepResult:
        """``result`` (verified) after the steps: verified, `finishing`, skipped or failed."""
        sides = self._sides
        if self._hooks is None or row.hook_done_at is not None or sides.plan_only:
            return result
        if sides.spec.verify.verify_only:
            return outcomes.skipped(row, outcomes.HOOK_PENDING)
        document = hook_document(sides.ctx.name, sides.spec, row, result)
        try:
            await self._hooks.call(document, idempotency_key(sides.ctx.name, row))
        except HookError as failed:
            return outcomes.unfinished(
                row, result, failed.error, "hook", sides.spec.retry, at_least=failed.retry_after
            )
        return result._replace(hook_done=True)

    async def close(self) -> None:
        if self._hooks is not None:
            await self._hooks.close()
