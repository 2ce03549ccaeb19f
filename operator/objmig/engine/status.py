"""The status of a migration, derived from the ledger: counters, conditions and phase.

Both drivers build the status the same way, from the same inputs: the ledger's counts, the
migration's bookkeeping state (scan, catch-up, pause, failure, cutover records), and the
cutover gate. The functions are pure; the drivers gather the inputs and write the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from objmig.api.cleanup import (
    CleanupCounts,
    CleanupPhase,
    MigrationCleanupSpec,
    MigrationCleanupStatus,
    UnmetGate,
)
from objmig.api.conditions import Condition, ConditionStatus, find_condition, set_conditions
from objmig.api.migration import (
    Counters,
    CutoverStatus,
    ObjectMigrationSpec,
    ObjectMigrationStatus,
    ObjectStatus,
    Phase,
    PlanStatus,
    Progress,
    VerificationStatus,
)
from objmig.api.types import format_duration
from objmig.engine.deletion import Verdict
from objmig.engine.pipeline import PLAN_COPY, PLAN_IDENTICAL, PLAN_RESTORE
from objmig.engine.policy import CatchUp, CutoverInputs, Gate, Tally, cutover_gate
from objmig.ledger import CleanupItem, Counts, ObjectRow, ObjectState, StateCount

CONDITION_TYPES = (
    "Scanned",
    "Restored",
    "Copied",
    "Verified",
    "CutoverReady",
    "CutOver",
    "Paused",
    "Failed",
    "Ready",
)
_OUTSTANDING = (ObjectState.PENDING, ObjectState.RESTORING, ObjectState.COPIED)


def tally(counts: Counts) -> Tally:
    """The gate's view of the ledger counts."""
    return Tally(
        total=counts.total.objects,
        verified=counts.state(ObjectState.VERIFIED).objects
        + counts.state(ObjectState.DELETED).objects,
        failed=counts.state(ObjectState.FAILED).objects,
        source_changed=counts.state(ObjectState.SOURCE_CHANGED).objects,
        skipped=counts.state(ObjectState.SKIPPED).objects,
        outstanding=sum(counts.state(s).objects for s in _OUTSTANDING),
    )


def cutover_inputs(counts: Counts, state: dict[str, Any]) -> CutoverInputs:
    """Gather the cutover gate's inputs from the counts and the bookkeeping state."""
    scan = state.get("scan", {})
    return CutoverInputs(
        tally=tally(counts),
        scan_complete=bool(scan.get("completedAt")) and not scan.get("running", False),
        catch_up=CatchUp.of(state),
    )


def progress_of(counts: Counts, *, rate: float, objects_rate: float) -> Progress:
    """Objects and bytes by state, percent done by bytes, and the ETA at the current rate."""

    def counters(field: str) -> Counters:
        def n(*states: ObjectState) -> int:
            return sum(int(getattr(counts.state(s), field)) for s in states)

        in_flight = int(getattr(counts.in_flight, field))
        return Counters(
            total=int(getattr(counts.total, field)),
            pending=max(0, n(*_OUTSTANDING) - in_flight),
            in_progress=in_flight,
            succeeded=n(ObjectState.VERIFIED, ObjectState.DELETED),
            failed=n(ObjectState.FAILED, ObjectState.SOURCE_CHANGED),
            skipped=n(ObjectState.SKIPPED),
        )

    objects, size = counters("objects"), counters("bytes")
    finished = size.succeeded + size.failed + size.skipped
    remaining = size.total - finished
    percent = 100 if size.total == 0 and objects.total else 0
    if size.total:
        percent = min(100, finished * 100 // size.total)
    elif objects.total:
        percent = (objects.succeeded + objects.failed + objects.skipped) * 100 // objects.total
    eta = None
    if remaining > 0 and rate > 0:
        eta = format_duration(timedelta(seconds=remaining / rate))
    return Progress(
        objects=objects,
        bytes=size,
        percent=percent,
        bytes_per_second=int(rate),
        objects_per_second=int(objects_rate),
        eta=eta,
    )


@dataclass(frozen=True)
class StatusInputs:
    """Everything a status is computed from."""

    spec: ObjectMigrationSpec
    generation: int | None
    counts: Counts
    state: dict[str, Any]
    window: Sequence[ObjectRow]
    window_truncated: bool
    rate: float
    objects_rate: float
    now: datetime
    digest: str | None = None
    plan_reasons: dict[str, StateCount] | None = None
    plan_classes: dict[str, StateCount] | None = None


def build_status(inputs: StatusInputs, previous: ObjectMigrationStatus) -> ObjectMigrationStatus:
    """The new status; conditions keep their transition times where their status held."""
    spec, counts, state = inputs.spec, inputs.counts, inputs.state
    gate = cutover_gate(spec, cutover_inputs(counts, state))
    view = tally(counts)
    conditions = set_conditions(
        previous.conditions,
        _stage_conditions(spec, counts, state, view, gate),
        now=inputs.now,
        observed_generation=inputs.generation,
    )

    result = ObjectMigrationStatus(
        observed_generation=inputs.generation,
        phase=derive_phase(conditions, dry_run=spec.dry_run),
        conditions=conditions,
        progress=progress_of(counts, rate=inputs.rate, objects_rate=inputs.objects_rate),
        objects=[_object_status(row) for row in inputs.window],
        objects_truncated=inputs.window_truncated,
        jobs=previous.jobs,
        verification=VerificationStatus(
            objects=view.verified,
            bytes=counts.state(ObjectState.VERIFIED).bytes
            + counts.state(ObjectState.DELETED).bytes,
            mismatched=counts.state(ObjectState.FAILED).objects,
            algorithm=spec.verify.mode,
            digest=inputs.digest,
        ),
        cutover=_cutover_status(state),
        report=previous.report,
        plan=_plan(inputs) if spec.dry_run else None,
    )
    if previous.progress.started_at is not None:
        result.progress.started_at = previous.progress.started_at
    elif result.progress.objects.total:
        result.progress.started_at = inputs.now
    return result


def _stage_conditions(
    spec: ObjectMigrationSpec,
    counts: Counts,
    state: dict[str, Any],
    view: Tally,
    gate: Gate,
) -> list[tuple[str, ConditionStatus, str, str]]:
    scan = state.get("scan", {})
    restoring = counts.state(ObjectState.RESTORING).objects
    outstanding = view.outstanding
    done = view.total - outstanding
    failed = state.get("failed")
    paused = state.get("paused")
    cutover = state.get("cutover", {})
    cut_over = bool(cutover.get("at")) and not cutover.get("rolledBackAt")

    result: list[tuple[str, ConditionStatus, str, str]] = []
    if scan.get("running"):
        result.append(("Scanned", "False", "Scanning", "listing the source"))
    elif scan.get("completedAt"):
        result.append(("Scanned", "True", "ScanComplete", f"{view.total} objects selected"))
    else:
        result.append(("Scanned", "False", "NotStarted", "the source has not been listed yet"))

    if restoring:
        result.append(
            ("Restored", "False", "RestoreInProgress", f"{restoring} objects being restored")
        )
    else:
        result.append(("Restored", "True", "NothingToRestore", "no object waits for a restore"))

    if outstanding or not scan.get("completedAt"):
        result.append(
            ("Copied", "False", "CopyInProgress", f"{done} of {view.total} objects finished")
        )
        result.append(
            ("Verified", "False", "VerificationPending", f"{view.verified} objects verified")
        )
    else:
        summary = f"{view.verified} verified, {view.failures} failed, {view.skipped} skipped"
        result.append(("Copied", "True", "AllCopied", summary))
        if view.failures:
            result.append(("Verified", "False", "SomeObjectsFailed", summary))
        else:
            result.append(("Verified", "True", "AllVerified", summary))

    if cut_over:
        result.append(("CutoverReady", "True", "CutOver", "the migration has cut over"))
    else:
        result.append(("CutoverReady", "True" if gate.ok else "False", gate.reason, gate.message))

    if cut_over:
        result.append(("CutOver", "True", "CutOver", _cutover_message(cutover)))
    elif cutover.get("rolledBackAt"):
        result.append(("CutOver", "False", "RolledBack", "the cutover was rolled back"))
    else:
        result.append(("CutOver", "False", "NotCutOver", gate.message))

    if spec.suspend:
        result.append(("Paused", "True", "Suspended", "spec.suspend is true"))
    elif paused:
        result.append(("Paused", "True", paused["reason"], paused["message"]))
    else:
        result.append(("Paused", "False", "Running", "not paused"))

    if failed:
        result.append(("Failed", "True", failed["reason"], failed["message"]))
    else:
        result.append(("Failed", "False", "NoError", "no migration-wide error"))

    if spec.dry_run:
        planned = bool(scan.get("completedAt")) and not outstanding
        result.append(
            (
                "Ready",
                "True" if planned else "False",
                "PlanReady" if planned else "Planning",
                "dry run: see status.plan" if planned else "planning",
            )
        )
    else:
        result.append(
            (
                "Ready",
                "True" if cut_over else "False",
                "CutOver" if cut_over else gate.reason,
                "the migration has cut over" if cut_over else gate.message,
            )
        )
    return result


def _cutover_status(state: dict[str, Any]) -> CutoverStatus:
    cutover = CutoverStatus.model_validate(state.get("cutover", {}))
    if state.get("cleanupStarted") and cutover.rollback_blocked is None:
        cutover.rollback_blocked = (
            "a MigrationCleanup has started deleting source objects; rollback is no longer possible"
        )
    return cutover


def _cutover_message(cutover: dict[str, Any]) -> str:
    actions = cutover.get("actions") or []
    return "cut over" + (": " + "; ".join(actions) if actions else "")


def derive_phase(conditions: Sequence[Condition], *, dry_run: bool) -> Phase:
    """The one-word summary of the conditions, checked in priority order."""

    def true(type_: str) -> bool:
        condition = find_condition(conditions, type_)
        return condition is not None and condition.status == "True"

    def reason(type_: str) -> str:
        condition = find_condition(conditions, type_)
        return condition.reason if condition is not None else ""

    if true("Failed"):
        return "Failed"
    if true("Paused"):
        return "Paused"
    if true("CutOver"):
        return "CutOver"
    if dry_run and true("Ready"):
        return "Completed"
    if reason("Scanned") == "Scanning":
        return "Scanning"
    if not true("Scanned"):
        return "Pending"
    if not true("Restored"):
        return "Restoring"
    if not true("Copied"):
        return "Copying"
    if true("CutoverReady") or reason("CutoverReady") in ("AwaitingApproval",):
        return "AwaitingCutover"
    if not true("Verified"):
        return "Verifying" if reason("Verified") == "VerificationPending" else "AwaitingCutover"
    return "AwaitingCutover"


def _object_status(row: ObjectRow) -> ObjectStatus:
    return ObjectStatus(
        key=row.key,
        version_id=row.version_id or None,
        state=row.state.value,
        attempts=row.attempts,
        last_error=row.last_error or row.skip_reason,
    )


def _plan(inputs: StatusInputs) -> PlanStatus:
    reasons = inputs.plan_reasons or {}
    classes = inputs.plan_classes or {}
    nothing = StateCount()
    return PlanStatus(
        objects=inputs.counts.total.objects,
        bytes=inputs.counts.total.bytes,
        by_storage_class={name: count.objects for name, count in classes.items()},
        bytes_by_storage_class={name: count.bytes for name, count in classes.items()},
        need_restore=reasons.get(PLAN_RESTORE, nothing).objects,
        would_skip=reasons.get(PLAN_IDENTICAL, nothing).objects,
        would_copy=reasons.get(PLAN_COPY, nothing).objects,
    )


# -- MigrationCleanup -------------------------------------------------------------------------


@dataclass(frozen=True)
class CleanupStatusInputs:
    """Everything a MigrationCleanup status is computed from."""

    spec: MigrationCleanupSpec
    generation: int | None
    unmet: Sequence[Verdict]
    counts: dict[tuple[str, str], StateCount]
    window: Sequence[CleanupItem]
    window_truncated: bool
    state: dict[str, Any]
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
            "GatesPassed",
            "False",
            inputs.unmet[0].reason,
            "; ".join(f"{v.reason}: {v.message}" for v in inputs.unmet),
        )
    else:
        put("GatesPassed", "True", "GatesPassed", "every migration-level gate holds")

    failed = state.get("failed")
    if failed:
        put("Failed", "True", failed["reason"], failed["message"])
    else:
        put("Failed", "False", "NoError", "no cleanup-wide error")

    planned = total("planned").objects
    complete = bool(state.get("completedAt")) and not planned
    if complete:
        put("Complete", "True", "Complete", state.get("summary", "cleanup finished"))
    else:
        put("Complete", "False", "InProgress" if not inputs.unmet else "Blocked", "not finished")

    conditions = set_conditions(
        previous.conditions, updates, now=inputs.now, observed_generation=inputs.generation
    )
    phase: CleanupPhase
    if failed:
        phase = "Failed"
    elif complete:
        phase = "Completed"
    elif inputs.unmet:
        phase = "Blocked"
    elif counts:
        phase = "Deleting"
    else:
        phase = "Pending"

    deleted = total("would_delete" if inputs.spec.dry_run else "deleted")
    skipped_by_reason: dict[str, int] = {}
    for (kind, reason), count in counts.items():
        if kind == "skipped":
            skipped_by_reason[reason] = skipped_by_reason.get(reason, 0) + count.objects
    leftovers = state.get("leftovers", {})
    return MigrationCleanupStatus(
        observed_generation=inputs.generation,
        phase=phase,
        conditions=conditions,
        unmet_gates=[
            UnmetGate(gate=v.gate, reason=v.reason, message=v.message) for v in inputs.unmet
        ],
        counts=CleanupCounts(
            planned=sum(c.objects for c in counts.values())
            + int(leftovers.get("uploadsAborted", 0))
            + int(leftovers.get("objectsDeleted", 0)),
            deleted=deleted.objects + int(leftovers.get("objectsDeleted", 0)),
            skipped=total("skipped").objects,
            failed=total("failed").objects,
            bytes_freed=0 if inputs.spec.dry_run else deleted.bytes,
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
        completed_at=(datetime.fromisoformat(state["completedAt"]) if complete else None),
    )
