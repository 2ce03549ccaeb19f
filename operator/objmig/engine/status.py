"""The status of a migration, derived from the ledger: counters, conditions and phase.

Both drivers build the status the same way, from the same inputs: the ledger's counts, the
migration's bookkeeping state (scan, catch-up, pause, failure, cutover records), and the
cutover gate. The functions are pure; the drivers gather the inputs and write the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from objmig.api.conditions import (
    Condition,
    ConditionStatus,
    ConditionType,
    Reason,
    find_condition,
    set_conditions,
)
from objmig.api.migration import (
    Counters,
    CutoverStatus,
    ObjectMigrationSpec,
    ObjectMigrationStatus,
    ObjectStatus,
    Phase,
    PlanStatus,
    Progress,
    StepsStatus,
    VerificationStatus,
)
from objmig.api.types import format_duration
from objmig.engine.pipeline.outcomes import PLAN_COPY, PLAN_IDENTICAL, PLAN_RESTORE
from objmig.engine.policy import CatchUp, CutoverInputs, Gate, Tally, cutover_gate
from objmig.engine.status_stores import (
    add_audit,
    bucket_statuses,
    content_status,
    health_conditions,
    health_of,
)
from objmig.ledger.models import (
    Activity,
    ContentCounts,
    Counts,
    ObjectRow,
    ObjectState,
    StateCount,
    StepCounts,
)
from objmig.ledger.state import CutoverRecord, MigrationState

#: The conditions of an ObjectMigration, in the order the status lists them.
CONDITION_TYPES = (
    ConditionType.SCANNED,
    ConditionType.RESTORED,
    ConditionType.COPIED,
    ConditionType.VERIFIED,
    ConditionType.CUTOVER_READY,
    ConditionType.CUT_OVER,
    ConditionType.PAUSED,
    ConditionType.FAILED,
    ConditionType.DEGRADED,
    ConditionType.READY,
    ConditionType.STALLED,
    ConditionType.TARGET_SPACE_LOW,
)
_OUTSTANDING = (
    ObjectState.PENDING,
    ObjectState.RESTORING,
    ObjectState.COPIED,
    ObjectState.FINISHING,
)
#: `progress.eta` while objects wait for their restores: no rate predicts those.
WAITING_FOR_RESTORES = "waiting for restores"


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
        finishing=counts.state(ObjectState.FINISHING).objects,
    )


def cutover_inputs(counts: Counts, state: MigrationState) -> CutoverInputs:
    """Gather the cutover gate's inputs from the counts and the bookkeeping state."""
    return CutoverInputs(
        tally=tally(counts),
        scan_complete=state.scan.finished,
        catch_up=CatchUp.of(state),
        audit=state.audit,
    )


#: States whose objects are done with, one way or another (a cleanup's deletions included).
FINISHED = (
    ObjectState.VERIFIED,
    ObjectState.DELETED,
    ObjectState.FAILED,
    ObjectState.SOURCE_CHANGED,
    ObjectState.SKIPPED,
)


@dataclass(frozen=True)
class Rates:
    """Recent throughput: bytes written per second (of objects finished or not), objects
    finished per second."""

    bytes_per_second: float = 0.0
    objects_per_second: float = 0.0


def progress_of(
    counts: Counts, activity: Activity, rates: Rates, *, by_objects: bool = False
) -> Progress:
    """Objects and bytes by state, how far along, and the time left at the recent rates.

    Bytes already written of objects not finished yet count as done for the percentage
    and the ETA: a few large objects in flight are most of a migration's bytes.
    ``by_objects``: a run that moves no bytes (``copy.mode: none``) goes by objects alone.
    """
    stalled = activity.stalled

    def counters(unit: str) -> Counters:
        def n(*states: ObjectState) -> int:
            return sum(int(getattr(counts.state(s), unit)) for s in states)

        in_flight = int(getattr(counts.in_flight, unit))
        stuck = min(in_flight, int(getattr(stalled, unit)))
        total = int(getattr(counts.total, unit))
        succeeded = n(ObjectState.VERIFIED, ObjectState.DELETED)
        failed = n(ObjectState.FAILED, ObjectState.SOURCE_CHANGED)
        skipped = n(ObjectState.SKIPPED)
        processed = succeeded + failed + skipped
        return Counters(
            total=total,
            pending=max(0, n(*_OUTSTANDING) - in_flight),
            in_progress=in_flight - stuck,
            stalled=stuck,
            succeeded=succeeded,
            failed=failed,
            skipped=skipped,
            processed=processed,
            remaining=max(0, total - processed),
        )

    objects, size = counters("objects"), counters("bytes")
    # Written bytes of objects under way, never more than those objects hold.
    moving = min(max(0, activity.bytes_in_flight), size.remaining)
    left_bytes = 0 if by_objects else size.remaining - moving
    return Progress(
        objects=objects,
        bytes=size,
        objects_done=f"{objects.processed}/{objects.total}",
        percent=_percent(
            objects.processed,
            objects.total,
            size.processed + moving,
            0 if by_objects else size.total,
        ),
        bytes_per_second=max(0, int(rates.bytes_per_second)),
        objects_per_second=max(0, int(rates.objects_per_second)),
        # A restore takes from seconds to hours, and nothing copied so far says which.
        eta=(
            WAITING_FOR_RESTORES
            if counts.state(ObjectState.RESTORING).objects
            else _eta(objects.remaining, left_bytes, rates)
        ),
        retries=max(0, activity.retries),
        last_retryable_error=activity.last_error,
    )


def _percent(done_objects: int, objects: int, done_bytes: int, size: int) -> int:
    """The mean of the objects' and the bytes' shares done (objects alone when no bytes)."""
    if not objects:
        return 0
    share = done_objects / objects
    if size:
        share = (share + min(1.0, done_bytes / size)) / 2
    return max(0, min(100, int(share * 100)))


def _eta(left_objects: int, left_bytes: int, rates: Rates) -> str | None:
    """The longer of the bytes' and the objects' time left; None when nothing moves."""
    seconds = [
        left / rate
        for left, rate in (
            (left_bytes, rates.bytes_per_second),
            (left_objects, rates.objects_per_second),
        )
        if left > 0 and rate > 0
    ]
    if not seconds:
        return None
    return format_duration(timedelta(seconds=max(seconds)))


@dataclass(frozen=True)
class StatusInputs:
    """Everything a status is computed from."""

    spec: ObjectMigrationSpec
    generation: int | None
    counts: Counts
    state: MigrationState
    window: Sequence[ObjectRow]
    window_truncated: bool
    now: datetime
    activity: Activity = field(default_factory=Activity)
    rates: Rates = field(default_factory=Rates)
    #: The driver starts (or runs) a scan now: show Scanning before the scan reports itself.
    scan_starting: bool = False
    plan_reasons: dict[str, StateCount] | None = None
    plan_classes: dict[str, StateCount] | None = None
    steps: StepCounts | None = None  # for specs with application steps
    #: Verified objects not proven by their ETag, by what proved them (etag mode only).
    etag_unproven: dict[str, int] | None = None
    #: Per bucket and state (migrations of several buckets), at most BUCKETS_SHOWN + 1.
    buckets: dict[str, dict[ObjectState, StateCount]] | None = None
    #: Deduplication (content-addressed layouts).
    content: ContentCounts | None = None
    #: False when the rates were not measured (a status read by another process).
    rates_measured: bool = True


def build_status(inputs: StatusInputs, previous: ObjectMigrationStatus) -> ObjectMigrationStatus:
    """The new status; conditions keep their transition times where their status held."""
    spec, counts, state = inputs.spec, inputs.counts, inputs.state
    gate = cutover_gate(spec, cutover_inputs(counts, state))
    view = tally(counts)
    health = health_of(inputs, view, previous.health)
    conditions = set_conditions(
        previous.conditions,
        [
            *_stage_conditions(spec, counts, state, view, gate, scan_starting=inputs.scan_starting),
            *health_conditions(inputs, view, health),
        ],
        now=inputs.now,
        observed_generation=inputs.generation,
    )

    result = ObjectMigrationStatus(
        observed_generation=inputs.generation,
        phase=derive_phase(conditions, dry_run=spec.dry_run),
        conditions=conditions,
        progress=progress_of(
            counts, inputs.activity, inputs.rates, by_objects=not spec.copy_.writes
        ),
        objects=[_object_status(row) for row in inputs.window],
        objects_truncated=inputs.window_truncated,
        jobs=previous.jobs,
        verification=VerificationStatus(
            objects=view.verified,
            bytes=counts.state(ObjectState.VERIFIED).bytes
            + counts.state(ObjectState.DELETED).bytes,
            mismatched=counts.state(ObjectState.FAILED).objects,
            algorithm=spec.verify.mode,
            digest=state.verification.digest if state.verification is not None else None,
            etag_unproven=sum((inputs.etag_unproven or {}).values()),
            etag_unproven_by=inputs.etag_unproven or {},
        ),
        cutover=_cutover_status(state),
        report=previous.report,
        plan=_plan(inputs) if spec.dry_run else None,
        steps=_steps(inputs.steps, spec) if inputs.steps is not None else None,
        health=health,
        content=content_status(inputs.content) if inputs.content is not None else None,
    )
    add_audit(result, state)
    if inputs.buckets is not None:
        result.buckets, result.buckets_truncated = bucket_statuses(inputs.buckets, state)
    if previous.progress.started_at is not None:
        result.progress.started_at = previous.progress.started_at
    elif result.progress.objects.total:
        result.progress.started_at = inputs.now
    return result


def _stage_conditions(
    spec: ObjectMigrationSpec,
    counts: Counts,
    state: MigrationState,
    view: Tally,
    gate: Gate,
    *,
    scan_starting: bool = False,
) -> list[tuple[str, ConditionStatus, str, str]]:
    scan = state.scan
    restoring = counts.state(ObjectState.RESTORING).objects
    outstanding = view.outstanding
    done = view.total - outstanding
    failed, paused, cut_over = state.failed, state.paused, state.cut_over

    result: list[tuple[str, ConditionStatus, str, str]] = []
    if scan.running or (scan_starting and not state.failed):
        result.append((ConditionType.SCANNED, "False", Reason.SCANNING, "listing the source"))
    elif scan.completed_at is not None:
        selected = f"{view.total} objects selected"
        if scan.selected_differently:
            selected += (
                f"; WARNING: {scan.selected_differently} of the listed objects are selected "
                "otherwise than before: include/exclude follow rclone's filter rules (a "
                "pattern without a leading / matches at any depth), e.g. "
                + ", ".join(scan.selected_differently_examples)
            )
        result.append((ConditionType.SCANNED, "True", Reason.SCAN_COMPLETE, selected))
    else:
        result.append(
            (
                ConditionType.SCANNED,
                "False",
                Reason.NOT_STARTED,
                "the source has not been listed yet",
            )
        )

    if restoring:
        result.append(
            (
                ConditionType.RESTORED,
                "False",
                Reason.RESTORE_IN_PROGRESS,
                f"{restoring} objects being restored",
            )
        )
    else:
        result.append(
            (
                ConditionType.RESTORED,
                "True",
                Reason.NOTHING_TO_RESTORE,
                "no object waits for a restore",
            )
        )

    if outstanding or scan.completed_at is None:
        result.append(
            (
                ConditionType.COPIED,
                "False",
                Reason.COPY_IN_PROGRESS,
                f"{done} of {view.total} objects finished",
            )
        )
        result.append(
            (
                ConditionType.VERIFIED,
                "False",
                Reason.VERIFICATION_PENDING,
                f"{view.verified} objects verified",
            )
        )
    else:
        summary = f"{view.verified} verified, {view.failures} failed, {view.skipped} skipped"
        result.append((ConditionType.COPIED, "True", Reason.ALL_COPIED, summary))
        if view.failures:
            result.append((ConditionType.VERIFIED, "False", Reason.SOME_OBJECTS_FAILED, summary))
        else:
            result.append((ConditionType.VERIFIED, "True", Reason.ALL_VERIFIED, summary))

    if cut_over:
        result.append(
            (ConditionType.CUTOVER_READY, "True", Reason.CUT_OVER, "the migration has cut over")
        )
    else:
        result.append(
            (ConditionType.CUTOVER_READY, "True" if gate.ok else "False", gate.reason, gate.message)
        )

    if cut_over:
        result.append(
            (ConditionType.CUT_OVER, "True", Reason.CUT_OVER, _cutover_message(state.cutover))
        )
    elif state.rolled_back:
        result.append(
            (ConditionType.CUT_OVER, "False", Reason.ROLLED_BACK, "the cutover was rolled back")
        )
    else:
        result.append((ConditionType.CUT_OVER, "False", Reason.NOT_CUT_OVER, gate.message))

    if spec.suspend:
        result.append((ConditionType.PAUSED, "True", Reason.SUSPENDED, "spec.suspend is true"))
    elif paused is not None:
        result.append((ConditionType.PAUSED, "True", paused.reason, paused.message))
    else:
        result.append((ConditionType.PAUSED, "False", Reason.RUNNING, "not paused"))

    if failed is not None:
        result.append((ConditionType.FAILED, "True", failed.reason, failed.message))
    else:
        result.append((ConditionType.FAILED, "False", Reason.NO_ERROR, "no migration-wide error"))

    if spec.dry_run:
        planned = scan.completed_at is not None and not outstanding
        result.append(
            (
                ConditionType.READY,
                "True" if planned else "False",
                Reason.PLAN_READY if planned else Reason.PLANNING,
                "dry run: see status.plan" if planned else "planning",
            )
        )
    else:
        result.append(
            (
                ConditionType.READY,
                "True" if cut_over else "False",
                Reason.CUT_OVER if cut_over else gate.reason,
                "the migration has cut over" if cut_over else gate.message,
            )
        )
    return result


def _cutover_status(state: MigrationState) -> CutoverStatus:
    record = state.cutover or CutoverRecord()
    cutover = CutoverStatus(
        at=record.at,
        actions=list(record.actions),
        previous_config_map_data=record.previous_config_map_data or {},
        config_map_data=record.config_map_data,
        catalog_rows_swapped=record.catalog_rows_swapped,
        rolled_back_at=record.rolled_back_at,
        rollback_blocked=record.rollback_blocked,
    )
    if state.cleanup_started and cutover.rollback_blocked is None:
        cutover.rollback_blocked = (
            "a MigrationCleanup has started deleting source objects; rollback is no longer possible"
        )
    return cutover


def _cutover_message(cutover: CutoverRecord | None) -> str:
    actions = cutover.actions if cutover is not None else ()
    return "cut over" + (": " + "; ".join(actions) if actions else "")


def derive_phase(conditions: Sequence[Condition], *, dry_run: bool) -> Phase:
    """The one-word summary of the conditions, checked in priority order."""

    def true(type_: str) -> bool:
        condition = find_condition(conditions, type_)
        return condition is not None and condition.status == "True"

    def reason(type_: str) -> str:
        condition = find_condition(conditions, type_)
        return condition.reason if condition is not None else ""

    if true(ConditionType.FAILED):
        return "Failed"
    if true(ConditionType.PAUSED):
        return "Paused"
    if true(ConditionType.CUT_OVER):
        return "CutOver"
    if dry_run and true(ConditionType.READY):
        return "Completed"
    if reason(ConditionType.SCANNED) == Reason.SCANNING:
        return "Scanning"
    if not true(ConditionType.SCANNED):
        return "Pending"
    if not true(ConditionType.RESTORED):
        return "Restoring"
    if not true(ConditionType.COPIED):
        return "Copying"
    if (
        true(ConditionType.CUTOVER_READY)
        or reason(ConditionType.CUTOVER_READY) == Reason.AWAITING_APPROVAL
    ):
        return "AwaitingCutover"
    if not true(ConditionType.VERIFIED):
        return (
            "Verifying"
            if reason(ConditionType.VERIFIED) == Reason.VERIFICATION_PENDING
            else "AwaitingCutover"
        )
    return "AwaitingCutover"


def _object_status(row: ObjectRow) -> ObjectStatus:
    return ObjectStatus(
        key=row.key,
        version_id=row.version_id or None,
        state=row.state.value,
        attempts=row.attempts,
        last_error=row.last_error or row.skip_reason,
    )


def _steps(counts: StepCounts, spec: ObjectMigrationSpec) -> StepsStatus:
    # A row may wait in `finishing` for its backfill too: only a hook makes it a pending hook.
    hooked = spec.per_object_hook
    return StepsStatus(
        missing=counts.missing,
        hooks_done=counts.hooks_done if hooked else 0,
        hooks_pending=counts.hooks_pending if hooked else 0,
        backfill_written=counts.backfill_written,
        backfill_already_set=counts.backfill_already_set,
        backfill_no_row=counts.backfill_no_row,
        backfill_conflicts=counts.backfill_conflicts,
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
        selected_differently=inputs.state.scan.selected_differently,
        selected_differently_examples=list(inputs.state.scan.selected_differently_examples),
    )
