"""The status of a MigrationCleanup, from the ledger: its gates, counters and phase (pure).

The cleanup's counterpart of :mod:`objmig.engine.status`, used by both drivers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from objmig.api.conditions import ConditionStatus, ConditionType, Reason, set_conditions
from objmig.api.migration import ObjectStatus
from objmig.api.migration_cleanup import (
    CleanupCounts,
    CleanupPhase,
    MigrationCleanupSpec,
    MigrationCleanupStatus,
    UnmetGate,
)
from objmig.engine.deletion import Verdict
from objmig.ledger.models import CleanupItem, StateCount
from objmig.ledger.state import CleanupState, Leftovers


@dataclass(frozen=True)
class CleanupStatusInputs:
    """Everything a MigrationCleanup status is computed from."""

    spec: MigrationCleanupSpec
    generation: int | None
    unmet: Sequence[Verdict]
    counts: dict[tuple[str, str], StateCount]
    window: Sequence[CleanupItem]
    window_truncated: bool
    state: CleanupState
    now: datetime


def build_cleanup_status(
    inputs: CleanupStatusInputs, previous: MigrationCleanupStatus
) -> MigrationCleanupStatus:
    """The cleanup's status: gates, counters, the per-object window, and its phase."""
    counts, state = inputs.counts, inputs.state
    updates: list[tuple[str, ConditionStatus, str, str]] = []

    def put(type_: str, status: ConditionStatus, reason: str, message: str) -> None:
        updates.append((type_, status, reason, message))

    def total(outcome: str) -> StateCount:
        found = StateCount()
        for (kind, _), count in counts.items():
            if kind == outcome:
                found += count
        return found

    if inputs.unmet:
        put(
            ConditionType.GATES_PASSED,
            "False",
            inputs.unmet[0].reason,
            "; ".join(f"{v.reason}: {v.message}" for v in inputs.unmet),
        )
    else:
        put(
            ConditionType.GATES_PASSED,
            "True",
            Reason.GATES_PASSED,
            "every migration-level gate holds",
        )

    failed = state.failed
    if failed is not None:
        put(ConditionType.FAILED, "True", failed.reason, failed.message)
    else:
        put(ConditionType.FAILED, "False", Reason.NO_ERROR, "no cleanup-wide error")

    planned = total("planned").objects
    let_go = total("would_delete" if inputs.spec.dry_run else "deleted").objects
    # A pass that stopped at spec.limit leaves the rest planned: finished all the same.
    limit_reached = inputs.spec.limit is not None and let_go >= inputs.spec.limit
    complete = state.completed_at is not None and (not planned or limit_reached)
    if complete:
        put(ConditionType.COMPLETE, "True", Reason.COMPLETE, state.summary or "cleanup finished")
    else:
        put(
            ConditionType.COMPLETE,
            "False",
            Reason.IN_PROGRESS if not inputs.unmet else Reason.BLOCKED,
            "not finished",
        )

    conditions = set_conditions(
        previous.conditions, updates, now=inputs.now, observed_generation=inputs.generation
    )
    phase: CleanupPhase
    if failed is not None:
        phase = "Failed"
    elif complete:
        phase = "Completed"
    elif inputs.unmet:
        phase = "Blocked"
    elif counts:
        phase = "Deleting"
    else:
        phase = "Pending"

    deleted = total("deleted")
    skipped_by_reason: dict[str, int] = {}
    for (kind, reason), count in counts.items():
        if kind == "skipped":
            skipped_by_reason[reason] = skipped_by_reason.get(reason, 0) + count.objects
    leftovers = state.leftovers or Leftovers()
    return MigrationCleanupStatus(
        observed_generation=inputs.generation,
        phase=phase,
        conditions=conditions,
        unmet_gates=[
            UnmetGate(gate=v.gate, reason=v.reason, message=v.message) for v in inputs.unmet
        ],
        counts=CleanupCounts(
            planned=sum(c.objects for c in counts.values())
            + leftovers.uploads_aborted
            + leftovers.objects_deleted,
            deleted=deleted.objects + (0 if inputs.spec.dry_run else leftovers.objects_deleted),
            would_delete=total("would_delete").objects
            + (leftovers.objects_deleted if inputs.spec.dry_run else 0),
            left_by_limit=planned if complete else 0,
            skipped=total("skipped").objects + leftovers.objects_kept,
            failed=total("failed").objects,
            uploads_aborted=leftovers.uploads_aborted,
            bytes_freed=deleted.bytes + (0 if inputs.spec.dry_run else leftovers.bytes_freed),
            skipped_by_reason=skipped_by_reason,
        ),
        objects=[
            ObjectStatus(
                key=item.key,
                version_id=item.version_id or None,
                state=item.outcome,
                last_error=(f"{item.reason}: {item.message}" if item.message else item.reason),
            )
            for item in inputs.window
        ],
        objects_truncated=inputs.window_truncated,
        jobs=previous.jobs,
        started_at=previous.started_at or (inputs.now if counts else None),
        completed_at=state.completed_at if complete else None,
    )
