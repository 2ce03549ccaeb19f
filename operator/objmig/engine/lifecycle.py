"""The lifecycle of a migration: what it needs next, decided from what was observed.

One pure function, :func:`decide`, for both drivers. Each gathers an :class:`Observed` (the
spec, the ledger's counts and bookkeeping, and how its own runs of the current stage are
doing) and carries out the :class:`Decision`: the operator by creating, scaling and
suspending Jobs, ``objmig run`` by running the stage as asyncio tasks in its own process.
The ledger writes a decision implies are made by :mod:`objmig.engine.bookkeeping`, the same
for both. Because the decision depends only on observed state (level, not edge), a
restarted operator or a re-run CLI decides the same thing again and converges.

The drivers differ in one respect, stated here and nowhere else: a driver that
``copies_while_scanning`` (the local run) has its workers claim each batch of the inventory
as the scan records it; the other (the operator) runs a scan Job, then copy Jobs.

The stages, in order: ``scan`` (the inventory), ``copy`` (restore, copy and verify each
object), and, where a migration has anything only the whole target shows (a target
directory, group manifests), ``audit`` (:mod:`objmig.engine.audit`) before the cutover.

No I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Literal

from objmig.api.conditions import Reason
from objmig.api.migration import ObjectMigrationSpec
from objmig.engine.policy import (
    CatchUp,
    CutoverInputs,
    Tally,
    audited,
    audits,
    cutover_gate,
    failure_budget,
    space_low,
)
from objmig.ledger.state import MigrationState, Problem


class Outcome(StrEnum):
    """Where a migration rests when nothing is left to do now (how ``objmig run`` ends)."""

    CUT_OVER = "cut-over"
    AWAITING_CUTOVER = "awaiting-cutover"
    PLANNED = "planned"
    PAUSED = "paused"
    FAILED = "failed"
    ROLLED_BACK = "rolled-back"


@dataclass(frozen=True)
class RunObservation:
    """How a driver's run of one stage (of this round and wave) went, if it has one.

    The operator's runs are Jobs, so it reports them; the local driver runs a stage to its
    end before it decides again, and has nothing to report.
    """

    complete: bool = False
    failed_message: str | None = None  # set when the run failed for good

    @property
    def failed(self) -> bool:
        """The run failed: no pod will retry it."""
        return self.failed_message is not None


@dataclass(frozen=True)
class Observed:
    """Everything :func:`decide` looks at."""

    spec: ObjectMigrationSpec
    tally: Tally
    state: MigrationState
    copies_while_scanning: bool
    scan_run: RunObservation | None = None
    copy_run: RunObservation | None = None
    audit_run: RunObservation | None = None


Stage = Literal["scan", "copy", "audit"]


@dataclass(frozen=True)
class StageWant:
    """A stage that should be running now, as the round's and wave's run of it."""

    stage: Stage
    round: int
    wave: int
    parallelism: int
    # Scans are numbered by round: a run retried (evicted, killed, suspended and resumed)
    # repeats its round's scan instead of counting as the next round's.
    scan_id: int | None = None
    copy_meanwhile: bool = False


@dataclass(frozen=True)
class Decision:
    """What to do now. Empty fields mean "nothing of that kind"."""

    stage: StageWant | None = None
    suspend: bool = False  # stop running stages, keep their place
    pause: Problem | None = None
    clear_pause: bool = False
    fail: Problem | None = None
    cut_over: bool = False
    roll_back: bool = False
    next_round: bool = False
    #: The new round is the cutover's final check (see `CatchUp.checked_for_cutover`).
    final_check: bool = False
    next_wave: bool = False
    catch_up_result: tuple[int, int] | None = None  # (round, delta) to record
    # Set when no stage runs and nothing is to be done until something changes.
    outcome: Outcome | None = None


def decide(observed: Observed) -> Decision:
    """The next step of one migration."""
    spec, state, tally = observed.spec, observed.state, observed.tally

    if state.failed is not None:
        # Nothing new starts. The operator leaves running Jobs alone: a worker that recorded
        # the failure exits with EXIT_PERMANENT and its index fails by the podFailurePolicy,
        # as does every other worker that meets the same error; suspending them here would
        # race with that and hide the Job's own Failed condition.
        return Decision(outcome=Outcome.FAILED)
    if state.cut_over:
        if not spec.cutover.rollback:
            return Decision(outcome=Outcome.CUT_OVER)
        if state.cleanup_started and state.cutover and state.cutover.rollback_blocked:
            return Decision(outcome=Outcome.FAILED)  # refused once, and for good
        return Decision(roll_back=True)
    if spec.cutover.rollback and state.cutover_begun:
        # A cutover that stopped half-way: undo what it did instead of finishing it.
        return Decision(roll_back=True)
    if spec.suspend:
        return Decision(suspend=True, outcome=Outcome.PAUSED)

    budget = failure_budget(tally, spec.failure_policy)
    if not budget.ok:
        return Decision(
            suspend=True,
            pause=Problem(reason=budget.reason, message=budget.message),
            outcome=Outcome.PAUSED,
        )
    clear_pause = state.paused is not None

    round_, wave = state.rounds.round, state.rounds.wave
    scan = state.scan
    if not (scan.id >= round_ + 1 and scan.finished):
        run = observed.scan_run
        if run is not None and run.failed:
            cause = f"; its last try: {scan.last_error}" if scan.last_error else ""
            return Decision(
                fail=Problem(reason=Reason.SCAN_FAILED, message=(run.failed_message or "") + cause)
            )
        return Decision(
            stage=StageWant(
                "scan",
                round_,
                wave,
                parallelism=1,
                scan_id=round_ + 1,
                copy_meanwhile=observed.copies_while_scanning,
            ),
            clear_pause=clear_pause,
        )

    catch_up = CatchUp.of(state)
    if round_ > 0 and catch_up.rounds < round_:
        return Decision(catch_up_result=(round_, scan.delta), clear_pause=clear_pause)

    if tally.outstanding:
        run = observed.copy_run
        if run is not None and run.failed:
            return Decision(
                fail=Problem(reason=Reason.WORKER_JOB_FAILED, message=run.failed_message or "")
            )
        if run is not None and run.complete:
            # The workers drained the pool but work reappeared (a restore to wait for, a
            # retry with backoff, copies an audit found missing): run another wave.
            return Decision(next_wave=True)
        copy = StageWant("copy", round_, wave, parallelism=spec.workers.parallelism)
        low = space_low(spec, state)
        if low is not None:
            # The workers stay: each measures again before each file, and what they see
            # ends the pause as soon as there is room.
            return Decision(stage=copy, pause=low)
        return Decision(stage=copy, clear_pause=clear_pause)

    if spec.dry_run:
        return Decision(clear_pause=clear_pause, outcome=Outcome.PLANNED)
    if spec.cutover.rollback:
        # Asks to be (or stay) on the source: never cut over (again) while set, and no
        # catch-up re-scans either, which only a coming cutover needs.
        rested = Outcome.ROLLED_BACK if state.rolled_back else Outcome.AWAITING_CUTOVER
        return Decision(clear_pause=clear_pause, outcome=rested)
    if catch_up.due(spec):
        return Decision(next_round=True)
    if audits(spec) and not audited(state):
        run = observed.audit_run
        if run is not None and run.failed:
            return Decision(
                fail=Problem(reason=Reason.AUDIT_FAILED, message=run.failed_message or "")
            )
        return Decision(
            stage=StageWant("audit", round_, wave, parallelism=1), clear_pause=clear_pause
        )
    inputs = CutoverInputs(tally=tally, scan_complete=True, catch_up=catch_up, audit=state.audit)
    if cutover_gate(spec, inputs).ok:
        return Decision(cut_over=True, clear_pause=clear_pause)
    # The final check re-scans; objects that changed during their copy go back to be
    # copied then, so they do not keep it from running.
    if not catch_up.checked_for_cutover:
        after = cutover_gate(spec, replace(inputs, tally=tally.rescanned()))
        if after.reason == Reason.RESCANNING_BEFORE_CUTOVER:
            return Decision(next_round=True, final_check=True, clear_pause=clear_pause)
    return Decision(clear_pause=clear_pause, outcome=Outcome.AWAITING_CUTOVER)
