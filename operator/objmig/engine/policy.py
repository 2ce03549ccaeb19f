"""Pure decisions: retry delays, the failure budget and the cutover gate.

Nothing here does I/O. Both drivers (``objmig run`` and the operator) gather their inputs —
the spec, the ledger's counts, what the scan and catch-up rounds saw — and call these, so
the rules that decide whether an application is switched over are written, and tested,
exactly once.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from objmig.api.migration import BackoffSpec, FailurePolicySpec, ObjectMigrationSpec
from objmig.api.types import parse_duration


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
    outstanding: int  # pending, restoring, copied, or leased: work not yet finished

    @property
    def finished(self) -> int:
        """Objects that reached an end state."""
        return self.verified + self.failed + self.source_changed + self.skipped

    @property
    def failures(self) -> int:
        """Objects that count against the failure budget."""
        return self.failed + self.source_changed


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


def failure_budget(tally: Tally, policy: FailurePolicySpec, *, final: bool = False) -> Gate:
    """Whether failures so far stay within ``maxFailedObjects`` and ``maxFailureRatio``.

    While objects are still being copied the ratio waits for ``minObjects`` finished ones
    (a few early failures are no trend); ``final``: every object has finished, and the
    ratio is the migration's own, however few objects it has.
    """
    if policy.max_failed_objects is not None and tally.failures > policy.max_failed_objects:
        return Gate(
            False,
            "FailureBudgetExceeded",
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
            "FailureRatioExceeded",
            f"{tally.failures} of {tally.finished} finished objects failed ({ratio:.1%}), "
            f"more than maxFailureRatio ({policy.max_failure_ratio:.1%})",
        )
    return Gate(True, "WithinBudget", f"{tally.failures} failed objects, within budget")


@dataclass(frozen=True)
class CatchUp:
    """What the catch-up re-scans found so far: the ledger state's ``catchUp`` section.

    Both drivers run the rounds their own way (in process, or as one scan Job per round)
    and ask this whether another one is due, so the stopping rule is written once.
    """

    rounds: int = 0
    last_delta: int | None = None  # objects the last re-scan found new or changed; None: none ran
    # Rounds counted when the cutover was last rolled back (None: never): applications wrote
    # to the source again since, so a cutover after a rollback waits for a fresh re-scan
    # (with or without spec.cutover.catchUp), and maxCatchUpRounds counts from here.
    rolled_back_at_round: int | None = None

    @classmethod
    def of(cls, state: Mapping[str, Any]) -> CatchUp:
        """Read the section from a migration's state."""
        section = state.get("catchUp") or {}
        delta = section.get("lastDelta")
        base = section.get("rolledBackAtRound")
        return cls(
            int(section.get("rounds", 0)),
            None if delta is None else int(delta),
            None if base is None else int(base),
        )

    @property
    def owed_after_rollback(self) -> bool:
        """A rollback happened and no re-scan has run since."""
        return self.rolled_back_at_round is not None and self.rounds <= self.rolled_back_at_round

    def due(self, spec: ObjectMigrationSpec) -> bool:
        """Whether another re-scan must run before the cutover gate can hold."""
        if spec.dry_run:
            return False
        if self.owed_after_rollback:
            return True
        return (
            spec.cutover.catch_up
            and self.last_delta != 0
            and self.rounds - (self.rolled_back_at_round or 0) < spec.cutover.max_catch_up_rounds
        )

    def recorded(self, round_: int, delta: int) -> dict[str, Any]:
        """The state patch saying catch-up round ``round_`` (from 1) found ``delta`` objects."""
        return {"catchUp": self._section(round_, delta, self.rolled_back_at_round)}

    def after_rollback(self) -> dict[str, Any]:
        """The state patch a rollback leaves: the next cutover waits for another re-scan."""
        return {"catchUp": self._section(self.rounds, None, self.rounds)}

    @staticmethod
    def _section(rounds: int, delta: int | None, rolled_back_at: int | None) -> dict[str, Any]:
        section: dict[str, Any] = {"rounds": rounds, "lastDelta": delta}
        if rolled_back_at is not None:
            section["rolledBackAtRound"] = rolled_back_at
        return section


@dataclass(frozen=True)
class CutoverInputs:
    """What the cutover gate looks at besides the spec."""

    tally: Tally
    scan_complete: bool
    catch_up: CatchUp


def cutover_gate(spec: ObjectMigrationSpec, inputs: CutoverInputs) -> Gate:
    """Whether the migration may cut over now, and if not, the first reason why not.

    Holds when: not a dry run; the scan finished; every selected object is verified or
    ended within the failure budget (without a budget, no failure is tolerated); catch-up
    (if asked) found an empty delta; and, for the Manual policy, the user approved.
    """
    tally = inputs.tally
    if spec.dry_run:
        return Gate(False, "DryRun", "dry run: nothing is copied, so nothing can cut over")
    if not inputs.scan_complete:
        return Gate(False, "ScanIncomplete", "the source inventory has not finished")
    if tally.total == 0:
        return Gate(False, "NothingSelected", "the selection matched no objects")
    if tally.outstanding:
        return Gate(
            False,
            "NotAllVerified",
            f"{tally.verified} of {tally.total} objects verified, {tally.outstanding} still "
            "in progress",
        )
    budget = failure_budget(tally, spec.failure_policy, final=True)
    if not budget.ok:
        return budget
    policy = spec.failure_policy
    if tally.failures and policy.max_failed_objects is None and policy.max_failure_ratio is None:
        # No budget means none: cutting over without some objects must be asked for.
        return Gate(
            False,
            "ObjectsFailed",
            f"{tally.failures} objects failed or changed; fix and retry them, or set "
            "failurePolicy.maxFailedObjects / maxFailureRatio to cut over without them",
        )
    if tally.verified == 0:
        return Gate(False, "NothingVerified", "no object was verified")
    if inputs.catch_up.owed_after_rollback:
        return Gate(
            False,
            "CatchUpPending",
            "the cutover was rolled back: the source is re-scanned for what applications "
            "wrote meanwhile before cutting over again",
        )
    if spec.cutover.catch_up and inputs.catch_up.last_delta != 0:
        if not inputs.catch_up.due(spec):
            return Gate(
                False,
                "CatchUpNotConverging",
                f"{inputs.catch_up.rounds} catch-up rounds still found changes; the source is "
                "still being written to",
            )
        return Gate(False, "CatchUpPending", "waiting for a catch-up re-scan to find no changes")
    if spec.cutover.policy == "Manual" and not spec.cutover.approved:
        return Gate(
            False,
            "AwaitingApproval",
            f"all {tally.verified} objects verified; set spec.cutover.approved: true to cut "
            "over (policy Manual)",
        )
    return Gate(
        True,
        "GatesPassed",
        f"{tally.verified} objects verified, {tally.failures} failed within budget",
    )


def cutover_begun(state: Mapping[str, Any]) -> bool:
    """Whether a cutover has started and not finished: some actions may be done already."""
    progress = state.get("cutoverInProgress")
    return isinstance(progress, dict) and bool(progress.get("startedAt"))


def rollback_gate(*, cut_over: bool, cleanup_started: bool) -> Gate:
    """Whether a cutover may be reverted: only while no source object can have been deleted."""
    if not cut_over:
        return Gate(False, "NotCutOver", "the migration has not cut over; nothing to roll back")
    if cleanup_started:
        return Gate(
            False,
            "CleanupStarted",
            "a MigrationCleanup has started deleting source objects; rollback is no longer safe",
        )
    return Gate(True, "RollbackAllowed", "no source object has been deleted")


def object_timeout(spec: ObjectMigrationSpec) -> timedelta:
    """The longest one attempt on one object may take."""
    return parse_duration(spec.retry.object_timeout)
