"""What a migration needs next, decided from what was observed. Pure: no I/O, no clock.

The operator's timer gathers the spec, the ledger's counts and bookkeeping, and the Jobs'
status; :func:`decide` turns them into one :class:`Decision`; the service carries it out.
Because the decision depends only on observed state (level, not edge), a restarted operator
decides the same thing again and converges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from objmig.api.migration import ObjectMigrationSpec
from objmig.controller.jobs import JobWant, job_name
from objmig.engine.policy import (
    CatchUp,
    CutoverInputs,
    Tally,
    cutover_begun,
    cutover_gate,
    failure_budget,
)


@dataclass(frozen=True)
class JobObservation:
    """The parts of a Job's status the decision needs."""

    name: str
    active: int = 0
    succeeded: int = 0
    failed: int = 0
    complete: bool = False
    failed_reason: str | None = None  # the Failed condition's reason, when the Job failed
    failed_message: str = ""
    suspended: bool = False
    parallelism: int = 0

    @property
    def finished(self) -> bool:
        """Complete or failed: no pod will run for it any more."""
        return self.complete or self.failed_reason is not None


@dataclass(frozen=True)
class Observed:
    """Everything :func:`decide` looks at."""

    name: str
    spec: ObjectMigrationSpec
    tally: Tally
    state: dict[str, Any]
    jobs: dict[str, JobObservation]


@dataclass(frozen=True)
class Decision:
    """What to do now. Empty fields mean "nothing of that kind"."""

    job: JobWant | None = None
    suspend_jobs: bool = False
    paused: tuple[str, str] | None = None  # (reason, message) to record
    clear_paused: bool = False
    failed: tuple[str, str] | None = None
    cut_over: bool = False
    roll_back: bool = False
    next_round: bool = False
    next_wave: bool = False
    catch_up_result: tuple[int, int] | None = None  # (round, delta) to record


def section(state: dict[str, Any], key: str) -> dict[str, Any]:
    """One part of the ledger's bookkeeping; absent and cleared (JSON null) both read as {}."""
    value = state.get(key)
    return value if isinstance(value, dict) else {}


def rounds(state: dict[str, Any]) -> tuple[int, int]:
    """The operator's (round, wave) counters: catch-up round and Job wave (attempt)."""
    operator = section(state, "operator")
    return int(operator.get("round", 0)), int(operator.get("wave", 0))


def decide(observed: Observed) -> Decision:
    """The next step of one migration."""
    spec, state, tally = observed.spec, observed.state, observed.tally
    cutover = section(state, "cutover")
    cut_over = bool(cutover.get("at")) and not cutover.get("rolledBackAt")

    if state.get("failed"):
        # Nothing new starts. Running Jobs are left alone: a worker that recorded the failure
        # exits with EXIT_PERMANENT and its index fails by the podFailurePolicy, as does every
        # other worker that meets the same error; suspending them here would race with that
        # and hide the Job's own Failed condition.
        return Decision()
    if cut_over:
        return Decision(roll_back=spec.cutover.rollback)
    if spec.cutover.rollback and cutover_begun(state):
        # A cutover that stopped half-way: undo what it did instead of finishing it.
        return Decision(roll_back=True)
    if spec.suspend:
        return Decision(suspend_jobs=True)

    budget = failure_budget(tally, spec.failure_policy)
    if not budget.ok:
        return Decision(suspend_jobs=True, paused=(budget.reason, budget.message))
    clear_paused = bool(state.get("paused"))

    round_, wave = rounds(state)
    scan = section(state, "scan")
    scan_done = (
        int(scan.get("id", 0)) >= round_ + 1
        and bool(scan.get("completedAt"))
        and (not scan.get("running"))
    )
    if not scan_done:
        # The wave is in the name so that a retry after a failure (a spec change bumps the
        # wave) gets a fresh Job instead of finding the failed one again.
        name = job_name(observed.name, "scan", round_, wave)
        job = observed.jobs.get(name)
        if job is not None and job.failed_reason is not None:
            return Decision(failed=("ScanFailed", f"Job {name}: {job.failed_message}"))
        # The scan's number is the round's: a pod retried (evicted, killed, suspended and
        # resumed) repeats this scan instead of counting as the next round's.
        return Decision(
            job=JobWant(name, "scan", 1, suspend=False, scan_id=round_ + 1),
            clear_paused=clear_paused,
        )

    catch_up = CatchUp.of(state)
    if round_ > 0 and catch_up.rounds < round_:
        delta = int(scan.get("new", 0)) + int(scan.get("changed", 0))
        return Decision(catch_up_result=(round_, delta), clear_paused=clear_paused)

    if tally.outstanding:
        name = job_name(observed.name, "copy", round_, wave)
        job = observed.jobs.get(name)
        if job is not None and job.failed_reason is not None:
            return Decision(failed=("WorkerJobFailed", f"Job {name}: {job.failed_message}"))
        if job is not None and job.complete:
            # The workers drained the pool but work reappeared (a restore to wait for, a
            # retry with backoff): run another wave.
            return Decision(next_wave=True)
        return Decision(
            job=JobWant(name, "copy", spec.workers.parallelism, suspend=False),
            clear_paused=clear_paused,
        )

    if spec.dry_run:
        return Decision(clear_paused=clear_paused)
    if spec.cutover.rollback:
        # Asks to be (or stay) on the source: never cut over (again) while set, and no
        # catch-up re-scans either, which only a coming cutover needs.
        return Decision(clear_paused=clear_paused)
    if catch_up.due(spec):
        return Decision(next_round=True)
    gate = cutover_gate(spec, CutoverInputs(tally=tally, scan_complete=True, catch_up=catch_up))
    return Decision(cut_over=gate.ok, clear_paused=clear_paused)
