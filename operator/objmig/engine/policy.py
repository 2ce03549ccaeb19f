"""Pure decisions: retry delays, the failure budget and the cutover gate.

Nothing here does I/O. Both drivers (``objmig run`` and the operator) gather their inputs —
the spec, the ledger's counts, what the scan and catch-up rounds saw — and call these, so
the rules that decide whether an application is switched over are written, and tested,
exactly once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from datetime import timedelta

from objmig.api.conditions import Reason
from objmig.api.migration import BackoffSpec, FailurePolicySpec, ObjectMigrationSpec
from objmig.api.types import parse_duration
from objmig.ledger.state import AuditRecord, CatchUpRecord, MigrationState, Problem


@dataclass(frozen=True)
class Gate:
    """A decision with the words for a condition: ``ok`` plus a CamelCase reason and a message."""

    ok: bool
    reason: str
    message: str


@dataclass(frozen=True)
class Tally:
    """The object counts a gate needs, taken from the ledger."""

    total: int
    verified: int
    failed: int
    source_changed: int
    skipped: int
    outstanding: int  # pending, restoring, copied, finishing: work not yet finished
    #: Of the outstanding, objects verified whose application steps (hook, backfill) wait.
    finishing: int = 0

    @property
    def finished(self) -> int:
        """Objects that reached an end state."""
        return self.verified + self.failed + self.source_changed + self.skipped

    @property
    def failures(self) -> int:
        """Objects that count against the failure budget."""
        return self.failed + self.source_changed

    def rescanned(self) -> Tally:
        """The tally a re-scan would leave: objects that changed at the source go back to
        be copied (the re-scan lists them anew), the rest stay as they are."""
        return replace(self, total=self.total - self.source_changed, source_changed=0)


def backoff_delay(attempt: int, backoff: BackoffSpec, rng: random.Random | None = None) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (``attempt`` >= 1 failed attempts so far).

    Exponential from ``initial``, capped at ``max``; with jitter, uniformly drawn from
    [delay / 2, delay] so a crowd of workers throttled together does not retry together.
    """
    initial = parse_duration(backoff.initial).total_seconds()
    cap = parse_duration(backoff.max).total_seconds()
    delay: float = min(cap, initial * float(backoff.factor) ** max(0, attempt - 1))
    if backoff.jitter:
        delay = (rng or random).uniform(delay / 2, delay)
    return delay


#: The first look at a restore, after its request: a restore may finish at once (a
#: store that has the object at hand) or in 1-5 minutes (Expedited).
FIRST_RESTORE_LOOK = 30.0


def restore_poll_delay(since_request: float, poll_interval: float) -> float:
    """Seconds until the next look at a restore requested `since_request` seconds ago.

    Soon after the request first, then each wait as long as all the waiting so far (30 s,
    30 s, 1 min, 2 min, ...), up to `restore.pollInterval`: a restore that is quick is seen
    quickly, and a slow one (Bulk: hours) is asked about as seldom as the spec says.
    """
    return min(poll_interval, max(FIRST_RESTORE_LOOK, since_request))


def failure_budget(tally: Tally, policy: FailurePolicySpec, *, final: bool = False) -> Gate:
    """Whether failures so far stay within ``maxFailedObjects`` and ``maxFailureRatio``.

    While objects are still being copied the ratio waits for ``minObjects`` finished ones
    (a few early failures are no trend); ``final``: every object has finished, and the
    ratio is the migration's own, however few objects it has.
    """
    if policy.max_failed_objects is not None and tally.failures > policy.max_failed_objects:
        return Gate(
            False,
            Reason.FAILURE_BUDGET_EXCEEDED,
            f"{tally.failures} objects failed, more than maxFailedObjects "
            f"({policy.max_failed_objects}); see the failed objects in the report",
        )
    if (
        policy.max_failure_ratio is not None
        and (final or tally.finished >= policy.min_objects)
        and tally.failures > policy.max_failure_ratio * tally.finished
    ):
        ratio = tally.failures / tally.finished
        return Gate(
            False,
            Reason.FAILURE_RATIO_EXCEEDED,
            f"{tally.failures} of {tally.finished} finished objects failed ({ratio:.1%}), "
            f"more than maxFailureRatio ({policy.max_failure_ratio:.1%})",
        )
    return Gate(True, Reason.WITHIN_BUDGET, f"{tally.failures} failed objects, within budget")


@dataclass(frozen=True)
class CatchUp:
    """The stopping rule of the catch-up re-scans, over what they found so far.

    Both drivers run the rounds through :func:`objmig.engine.lifecycle.decide` and ask
    this whether another one is due, so the rule is written once.
    """

    record: CatchUpRecord = field(default_factory=CatchUpRecord)

    @classmethod
    def of(cls, state: MigrationState) -> CatchUp:
        """The rule over a migration's catch-up record."""
        return cls(state.catch_up)

    @property
    def rounds(self) -> int:
        """Catch-up rounds run so far."""
        return self.record.rounds

    @property
    def last_delta(self) -> int | None:
        """Objects the last re-scan found new or changed; None: none ran."""
        return self.record.last_delta

    @property
    def owed_after_rollback(self) -> bool:
        """A rollback happened and no re-scan has run since.

        Applications wrote to the source again since the rollback, so a cutover after one
        waits for a fresh re-scan (with or without spec.cutover.catchUp), and
        maxCatchUpRounds counts from there.
        """
        base = self.record.rolled_back_at_round
        return base is not None and self.rounds <= base

    @property
    def checked_for_cutover(self) -> bool:
        """The final re-scan ran: one started while every other gate held.

        Nothing is cut over whose source changed since its verification. A re-scan made
        once the cutover could go otherwise (approved, in budget, caught up) finds what
        changed since it was verified, and sends it to be copied again; what it finds is
        verified after it, which checks the source by itself. The spec taken up anew (an
        edit, another `objmig run`: an approval, a resume, a raised budget) forgets it
        (`take_up_spec`): the migration waited for the user, and the source may have
        changed meanwhile.
        """
        round_ = self.record.final_check_round
        return round_ is not None and self.rounds >= round_

    def due(self, spec: ObjectMigrationSpec) -> bool:
        """Whether another catch-up re-scan must run before the cutover gate can hold."""
        if spec.dry_run:
            return False
        if self.owed_after_rollback:
            return True
        return (
            spec.cutover.catch_up
            and self.last_delta != 0
            and self.rounds - (self.record.rolled_back_at_round or 0)
            < spec.cutover.max_catch_up_rounds
        )

    def recorded(self, round_: int, delta: int) -> CatchUpRecord:
        """The record saying catch-up round ``round_`` (from 1) found ``delta`` objects."""
        return self.record.model_copy(update={"rounds": round_, "last_delta": delta})

    def final_check(self, round_: int) -> CatchUpRecord:
        """The record saying re-scan round `round_` is the cutover's final check."""
        return self.record.model_copy(update={"final_check_round": round_})

    def forgotten(self) -> CatchUpRecord:
        """The record once the spec was taken up anew: the final check no longer counts."""
        return self.record.model_copy(update={"final_check_round": None})

    def after_rollback(self) -> CatchUpRecord:
        """The record a rollback leaves: the next cutover waits for another re-scan."""
        return CatchUpRecord(rounds=self.rounds, last_delta=None, rolled_back_at_round=self.rounds)


def audits(spec: ObjectMigrationSpec) -> bool:
    """Whether the migration is audited as a whole before cutover: a target directory
    (missing and extra files) or group manifests (see `objmig.engine.audit`)."""
    return spec.target.filesystem is not None or spec.groups is not None


def audited(state: MigrationState) -> bool:
    """Whether the audit ran for the lifecycle's current round and wave."""
    audit = state.audit
    return (
        audit is not None
        and audit.completed_at is not None
        and (audit.round, audit.wave) == (state.rounds.round, state.rounds.wave)
    )


def space_low(spec: ObjectMigrationSpec, state: MigrationState) -> Problem | None:
    """The pause a target directory short of free space calls for, if it is short."""
    space = state.target_space
    if spec.target.filesystem is None or space is None or not space.low:
        return None
    return Problem(
        reason=Reason.TARGET_SPACE_LOW,
        message=f"{space.free} bytes free on the target directory, "
        f"target.filesystem.minFreeSpace is {space.minimum}: objects wait until there is "
        "room (free some, or lower minFreeSpace)",
    )


@dataclass(frozen=True)
class CutoverInputs:
    """What the cutover gate looks at besides the spec."""

    tally: Tally
    scan_complete: bool
    catch_up: CatchUp
    audit: AuditRecord | None = None


def cutover_gate(spec: ObjectMigrationSpec, inputs: CutoverInputs) -> Gate:
    """Whether the migration may cut over now, and if not, the first reason why not.

    Holds when: not a dry run; the scan finished; every selected object is verified, its
    application steps (hook, backfill) done, or ended within the failure budget (without a
    budget, no failure is tolerated); catch-up (if asked) found an empty delta; for the
    Manual policy, the user approved; and, once all that holds, a final re-scan ran
    (`CatchUp.checked_for_cutover`).
    """
    tally = inputs.tally
    if spec.dry_run:
        return Gate(False, Reason.DRY_RUN, "dry run: nothing is copied, so nothing can cut over")
    if not inputs.scan_complete:
        return Gate(False, Reason.SCAN_INCOMPLETE, "the source inventory has not finished")
    if tally.total == 0:
        return Gate(False, Reason.NOTHING_SELECTED, "the selection matched no objects")
    if tally.outstanding > tally.finishing:
        return Gate(
            False,
            Reason.NOT_ALL_VERIFIED,
            f"{tally.verified} of {tally.total} objects verified, {tally.outstanding} still "
            "in progress",
        )
    if tally.finishing:
        return Gate(
            False,
            Reason.STEPS_PENDING,
            f"{tally.finishing} verified objects wait for their per-object hook or backfill "
            "(being retried); the cutover waits for every one",
        )
    budget = failure_budget(tally, spec.failure_policy, final=True)
    if not budget.ok:
        return budget
    policy = spec.failure_policy
    if tally.failures and policy.max_failed_objects is None and policy.max_failure_ratio is None:
        # No budget means none: cutting over without some objects must be asked for.
        return Gate(
            False,
            Reason.OBJECTS_FAILED,
            f"{tally.failures} objects failed or changed; fix and retry them, or set "
            "failurePolicy.maxFailedObjects / maxFailureRatio to cut over without them",
        )
    if tally.verified == 0:
        return Gate(False, Reason.NOTHING_VERIFIED, "no object was verified")
    if audits(spec):
        unaudited = _audit_gate(inputs.audit)
        if unaudited is not None:
            return unaudited
    if inputs.catch_up.owed_after_rollback:
        return Gate(
            False,
            Reason.CATCH_UP_PENDING,
            "the cutover was rolled back: the source is re-scanned for what applications "
            "wrote meanwhile before cutting over again",
        )
    if spec.cutover.catch_up and inputs.catch_up.last_delta != 0:
        if not inputs.catch_up.due(spec):
            return Gate(
                False,
                Reason.CATCH_UP_NOT_CONVERGING,
                f"{inputs.catch_up.rounds} catch-up rounds still found changes; the source is "
                "still being written to",
            )
        return Gate(
            False, Reason.CATCH_UP_PENDING, "waiting for a catch-up re-scan to find no changes"
        )
    if spec.cutover.policy == "Manual" and not spec.cutover.approved:
        return Gate(
            False,
            Reason.AWAITING_APPROVAL,
            f"all {tally.verified} objects verified; set spec.cutover.approved: true to cut "
            "over (policy Manual)",
        )
    if not inputs.catch_up.checked_for_cutover:
        return Gate(
            False,
            Reason.RESCANNING_BEFORE_CUTOVER,
            "the source is listed once more before the cutover: nothing is cut over whose "
            "source changed since it was verified",
        )
    return Gate(
        True,
        Reason.GATES_PASSED,
        f"{tally.verified} objects verified, {tally.failures} failed within budget",
    )


def _audit_gate(audit: AuditRecord | None) -> Gate | None:
    """Why the audit keeps the cutover back, if it does."""
    if audit is None or audit.completed_at is None:
        return Gate(False, Reason.AUDIT_PENDING, "the target is audited once every object is done")
    if audit.extra:
        return Gate(
            False,
            Reason.EXTRA_FILES,
            f"{audit.extra} files in the target directory were not copied there, e.g. "
            f"{', '.join(audit.extra_examples)}: remove them, or allow them with "
            "target.filesystem.ignore",
        )
    if audit.incomplete_groups:
        return Gate(
            False,
            Reason.MANIFESTS_INCOMPLETE,
            f"{audit.incomplete_groups} groups have members not verified, so no manifest, "
            f"e.g. {', '.join(audit.incomplete_examples)}: see the failed objects",
        )
    return None


def rollback_gate(*, cut_over: bool, cleanup_started: bool) -> Gate:
    """Whether a cutover may be reverted: only while no source object can have been deleted."""
    if not cut_over:
        return Gate(
            False, Reason.NOT_CUT_OVER, "the migration has not cut over; nothing to roll back"
        )
    if cleanup_started:
        return Gate(
            False,
            Reason.CLEANUP_STARTED,
            "a MigrationCleanup has started deleting source objects; rollback is no longer safe",
        )
    return Gate(True, Reason.ROLLBACK_ALLOWED, "no source object has been deleted")


def object_timeout(spec: ObjectMigrationSpec) -> timedelta:
    """The longest one attempt on one object may take."""
    return parse_duration(spec.retry.object_timeout)
