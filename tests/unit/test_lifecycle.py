"""The lifecycle's pure decision, the same for both drivers: which stage runs, pause, fail,
cut over, roll back, and where a migration rests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from objmig.api.conditions import Reason
from objmig.api.migration import ObjectMigrationSpec
from objmig.api.migration_cleanup import MigrationCleanupSpec
from objmig.engine.cleanup_lifecycle import CleanupDecision, CleanupObserved, decide_cleanup
from objmig.engine.deletion import MigrationFacts
from objmig.engine.lifecycle import (
    Decision,
    Observed,
    Outcome,
    RunObservation,
    StageWant,
    decide,
)
from objmig.engine.policy import CatchUp, Tally
from objmig.ledger.state import (
    CatchUpRecord,
    CleanupState,
    CutoverProgress,
    CutoverRecord,
    MigrationState,
    Problem,
    Rounds,
    ScanRecord,
)

T = datetime(2024, 1, 1, tzinfo=UTC)
DONE_SCAN = ScanRecord(id=1, completed_at=T)
#: The bookkeeping after the copies and the re-scan made once everything else held.
RESCANNED: dict[str, Any] = {
    "scan": ScanRecord(id=2, completed_at=T),
    "rounds": Rounds(round=1),
    "catch_up": CatchUpRecord(rounds=1, last_delta=0, final_check_round=1),
}


def _spec(**overrides: Any) -> ObjectMigrationSpec:
    body: dict[str, Any] = {"source": {"bucket": "src-bucket"}, "target": {"bucket": "dst-bucket"}}
    body.update(overrides)
    return ObjectMigrationSpec.model_validate(body)


def _tally(**counts: int) -> Tally:
    values = {"verified": 0, "failed": 0, "source_changed": 0, "skipped": 0, "outstanding": 0}
    values.update(counts)
    return Tally(total=sum(values.values()), **values)


def _decide(
    spec: ObjectMigrationSpec | None = None,
    tally: Tally | None = None,
    *,
    local: bool = False,
    scan_run: RunObservation | None = None,
    copy_run: RunObservation | None = None,
    **state: Any,
) -> Decision:
    return decide(
        Observed(
            spec=spec or _spec(),
            tally=tally or _tally(),
            state=MigrationState(**state),
            copies_while_scanning=local,
            scan_run=scan_run,
            copy_run=copy_run,
        )
    )


def test_a_new_migration_starts_with_one_scan() -> None:
    decision = _decide()
    assert decision.stage == StageWant("scan", 0, 0, parallelism=1, scan_id=1)
    assert decision.outcome is None


def test_only_the_driver_that_copies_while_scanning_is_asked_to() -> None:
    assert _decide(local=True).stage == StageWant(
        "scan", 0, 0, parallelism=1, scan_id=1, copy_meanwhile=True
    )


def test_a_catch_up_round_scans_with_its_own_number_however_often_a_run_is_retried() -> None:
    # Round 2's scan is scan 3: a pod that scanned part of it and was retried repeats scan
    # 3; it does not count as round 3's (which would skip a catch-up round unscanned).
    decision = _decide(
        tally=_tally(verified=4), scan=ScanRecord(id=2, completed_at=T), rounds=Rounds(round=2)
    )
    assert decision.stage is not None
    assert (decision.stage.round, decision.stage.scan_id) == (2, 3)


def test_a_scan_still_running_is_not_finished() -> None:
    running = ScanRecord(id=1, completed_at=T, running=True)
    decision = _decide(tally=_tally(outstanding=3), scan=running)
    assert decision.stage is not None
    assert decision.stage.stage == "scan"


def test_after_the_scan_a_copy_runs_with_the_spec_parallelism() -> None:
    decision = _decide(_spec(workers={"parallelism": 5}), _tally(outstanding=10), scan=DONE_SCAN)
    assert decision.stage == StageWant("copy", 0, 0, parallelism=5)


def test_a_complete_copy_run_with_work_left_starts_another_wave() -> None:
    done = RunObservation(complete=True)
    decision = _decide(tally=_tally(outstanding=3, verified=7), copy_run=done, scan=DONE_SCAN)
    assert decision == Decision(next_wave=True)
    wave = _decide(tally=_tally(outstanding=3), scan=DONE_SCAN, rounds=Rounds(wave=1))
    assert wave.stage == StageWant("copy", 0, 1, parallelism=2)


def test_a_running_copy_is_wanted_as_it_is() -> None:
    running = RunObservation()
    decision = _decide(tally=_tally(outstanding=3), copy_run=running, scan=DONE_SCAN)
    assert decision.stage == StageWant("copy", 0, 0, parallelism=2)


def test_a_failed_scan_run_fails_the_migration_with_its_message() -> None:
    decision = _decide(scan_run=RunObservation(failed_message="Job m-scan-r0: boom"))
    assert decision.fail == Problem(reason=Reason.SCAN_FAILED, message="Job m-scan-r0: boom")
    assert decision.stage is None


def test_a_failed_scan_run_says_what_stopped_its_last_try() -> None:
    decision = _decide(
        scan_run=RunObservation(failed_message="Job m-scan-r0: BackoffLimitExceeded"),
        scan=ScanRecord(id=1, last_error="ConnectionRefusedError: [Errno 111] refused"),
    )
    assert decision.fail == Problem(
        reason=Reason.SCAN_FAILED,
        message="Job m-scan-r0: BackoffLimitExceeded; its last try: "
        "ConnectionRefusedError: [Errno 111] refused",
    )


def test_a_failed_copy_run_fails_the_migration_with_its_message() -> None:
    decision = _decide(
        tally=_tally(outstanding=2),
        scan=DONE_SCAN,
        copy_run=RunObservation(failed_message="Job m-copy-r0: x"),
    )
    assert decision.fail == Problem(reason=Reason.WORKER_JOB_FAILED, message="Job m-copy-r0: x")


def test_a_recorded_failure_starts_nothing_and_rests_failed() -> None:
    decision = _decide(
        tally=_tally(outstanding=5),
        copy_run=RunObservation(),
        scan=DONE_SCAN,
        failed=Problem(reason="S3InvalidAccessKeyId", message="m"),
    )
    assert decision == Decision(outcome=Outcome.FAILED)


def test_suspend_suspends_and_starts_nothing() -> None:
    decision = _decide(_spec(suspend=True), _tally(outstanding=4), scan=DONE_SCAN)
    assert decision == Decision(suspend=True, outcome=Outcome.PAUSED)


def test_an_exceeded_failure_budget_pauses_with_the_gate_reason() -> None:
    spec = _spec(failurePolicy={"maxFailedObjects": 1})
    decision = _decide(spec, _tally(failed=2, outstanding=5), scan=DONE_SCAN)
    assert decision.suspend
    assert decision.pause is not None
    assert decision.pause.reason == Reason.FAILURE_BUDGET_EXCEEDED
    assert decision.stage is None
    assert decision.outcome == Outcome.PAUSED


def test_a_pause_is_cleared_once_the_budget_holds_again() -> None:
    paused = Problem(reason=Reason.FAILURE_BUDGET_EXCEEDED, message="m")
    spec = _spec(failurePolicy={"maxFailedObjects": 5})
    decision = _decide(spec, _tally(failed=2, outstanding=5), scan=DONE_SCAN, paused=paused)
    assert decision.clear_pause
    assert decision.stage is not None


def test_once_everything_else_holds_the_source_is_scanned_again_before_the_cutover() -> None:
    # Nothing is cut over whose source changed since its verification (issue 21.6).
    assert _decide(tally=_tally(verified=3), scan=DONE_SCAN) == Decision(
        next_round=True, final_check=True
    )
    # Manual: not before the approval, which may come much later.
    manual = _spec(cutover={"policy": "Manual"})
    assert _decide(manual, _tally(verified=3), scan=DONE_SCAN) == Decision(
        outcome=Outcome.AWAITING_CUTOVER
    )


def _to_a_directory() -> ObjectMigrationSpec:
    return _spec(target={"filesystem": {"path": "/backup"}})


def test_a_directory_target_is_audited_once_copied_and_before_any_cutover_check() -> None:
    decision = decide(
        Observed(
            spec=_to_a_directory(),
            tally=_tally(verified=3),
            state=MigrationState(scan=DONE_SCAN),
            copies_while_scanning=False,
        )
    )
    assert decision.stage is not None
    assert (decision.stage.stage, decision.stage.parallelism) == ("audit", 1)
    assert not decision.final_check


def test_a_failed_audit_run_fails_the_migration_with_its_message() -> None:
    decision = decide(
        Observed(
            spec=_to_a_directory(),
            tally=_tally(verified=3),
            state=MigrationState(scan=DONE_SCAN),
            copies_while_scanning=False,
            audit_run=RunObservation(failed_message="Job m-audit-r0: boom"),
        )
    )
    assert decision.fail == Problem(reason=Reason.AUDIT_FAILED, message="Job m-audit-r0: boom")
    assert decision.stage is None


def test_objects_that_changed_during_their_copy_are_left_to_the_final_check() -> None:
    changed = _tally(verified=3, source_changed=1)
    # The final check re-scans them, and they are copied again.
    assert _decide(tally=changed, scan=DONE_SCAN) == Decision(next_round=True, final_check=True)
    # Changed again during that copy: no budget, no cutover (catchUp would go on), and
    # no re-scan after re-scan either: the next comes when the user takes it up again.
    assert _decide(tally=changed, **RESCANNED) == Decision(outcome=Outcome.AWAITING_CUTOVER)


def test_the_final_check_counts_until_the_spec_is_taken_up_anew() -> None:
    revoked = _spec(cutover={"policy": "Manual"})
    assert _decide(revoked, _tally(verified=3), **RESCANNED) == Decision(
        outcome=Outcome.AWAITING_CUTOVER
    )
    # What the final check found changed is copied again; then the cutover goes.
    copying = _decide(_spec(), _tally(verified=2, outstanding=1), **RESCANNED)
    assert copying.stage is not None
    # Taken up anew (an approval, a resume: the user acted), the check is forgotten, and
    # the cutover waits for another one.
    forgotten = RESCANNED | {"catch_up": CatchUp(RESCANNED["catch_up"]).forgotten()}
    assert _decide(_spec(), _tally(verified=3), **forgotten) == Decision(
        next_round=True, final_check=True
    )


def test_automatic_policy_cuts_over_when_everything_is_verified() -> None:
    assert _decide(tally=_tally(verified=3), **RESCANNED) == Decision(cut_over=True)


def test_a_cut_over_migration_rests_cut_over() -> None:
    cutover = CutoverRecord(at=T)
    assert _decide(tally=_tally(verified=3), scan=DONE_SCAN, cutover=cutover) == Decision(
        outcome=Outcome.CUT_OVER
    )


def test_manual_policy_waits_for_approval() -> None:
    spec = _spec(cutover={"policy": "Manual"})
    waiting = _decide(spec, _tally(verified=3), scan=DONE_SCAN)
    assert waiting == Decision(outcome=Outcome.AWAITING_CUTOVER)
    approved = _spec(cutover={"policy": "Manual", "approved": True})
    assert _decide(approved, _tally(verified=3), **RESCANNED).cut_over


def test_a_dry_run_rests_planned_once_every_row_is_decided() -> None:
    spec = _spec(dryRun=True)
    assert _decide(spec, _tally(skipped=3), scan=DONE_SCAN) == Decision(outcome=Outcome.PLANNED)


def test_rollback_of_a_cut_over_migration_rolls_back() -> None:
    spec = _spec(cutover={"rollback": True})
    decision = _decide(spec, _tally(verified=3), scan=DONE_SCAN, cutover=CutoverRecord(at=T))
    assert decision == Decision(roll_back=True)


def test_a_rollback_refused_for_a_started_cleanup_is_not_tried_again() -> None:
    spec = _spec(cutover={"rollback": True})
    blocked = CutoverRecord(at=T, rollback_blocked="a MigrationCleanup has started")
    # Not yet refused: try (the attempt records the refusal and says so once).
    assert _decide(
        spec, _tally(verified=3), scan=DONE_SCAN, cutover=CutoverRecord(at=T), cleanup_started=True
    ) == Decision(roll_back=True)
    assert _decide(
        spec, _tally(verified=3), scan=DONE_SCAN, cutover=blocked, cleanup_started=True
    ) == Decision(outcome=Outcome.FAILED)


def test_a_rolled_back_migration_is_not_cut_over_again_while_rollback_is_set() -> None:
    spec = _spec(cutover={"policy": "Manual", "approved": True, "rollback": True})
    state: dict[str, Any] = {
        "scan": DONE_SCAN,
        "cutover": CutoverRecord(at=T, rolled_back_at=T),
        "catch_up": CatchUp().after_rollback(),
    }
    assert _decide(spec, _tally(verified=3), **state) == Decision(outcome=Outcome.ROLLED_BACK)
    # Withdrawing the rollback request cuts over again, after a re-scan for what the
    # applications wrote to the source meanwhile (catchUp is off in this spec).
    spec = _spec(cutover={"policy": "Manual", "approved": True, "rollback": False})
    assert _decide(spec, _tally(verified=3), **state) == Decision(next_round=True)
    rescanning = state | {"rounds": Rounds(round=1)}
    decision = _decide(spec, _tally(verified=3), **rescanning)
    assert decision.stage is not None
    assert (decision.stage.stage, decision.stage.scan_id) == ("scan", 2)
    rescanned = rescanning | {"scan": ScanRecord(id=2, completed_at=T, new=1)}
    decision = _decide(spec, _tally(verified=3), **rescanned)
    assert decision.catch_up_result == (1, 1)
    recorded = rescanned | {
        "catch_up": CatchUp(state["catch_up"]).recorded(1, 1),
    }
    assert _decide(spec, _tally(verified=3, outstanding=1), **recorded).stage is not None
    # That re-scan paid what the rollback owed; the cutover still makes its final check.
    assert _decide(spec, _tally(verified=4), **recorded) == Decision(
        next_round=True, final_check=True
    )
    checked = recorded | {
        "scan": ScanRecord(id=3, completed_at=T),
        "rounds": Rounds(round=2),
        "catch_up": CatchUp(CatchUp(recorded["catch_up"]).final_check(2)).recorded(2, 0),
    }
    assert _decide(spec, _tally(verified=4), **checked).cut_over


def test_a_cutover_that_stopped_half_way_is_finished_or_rolled_back() -> None:
    state: dict[str, Any] = {**RESCANNED, "cutover_in_progress": CutoverProgress(started_at=T)}
    assert _decide(_spec(), _tally(verified=3), **state).cut_over
    asked = _decide(_spec(cutover={"rollback": True}), _tally(verified=3), **state)
    assert asked == Decision(roll_back=True)
    # Failed (CutoverFailed) until the spec is taken up again, which clears the failure.
    failed = state | {"failed": Problem(reason=Reason.CUTOVER_FAILED, message="m")}
    assert _decide(_spec(cutover={"rollback": True}), _tally(verified=3), **failed) == Decision(
        outcome=Outcome.FAILED
    )


def test_rollback_set_before_any_cutover_prevents_the_cutover() -> None:
    spec = _spec(cutover={"rollback": True})
    decision = _decide(spec, _tally(verified=3), scan=DONE_SCAN)
    assert decision == Decision(outcome=Outcome.AWAITING_CUTOVER)


def test_catch_up_rescans_in_a_new_round_until_the_delta_is_empty() -> None:
    spec = _spec(cutover={"catchUp": True})
    assert _decide(spec, _tally(verified=3), scan=DONE_SCAN) == Decision(next_round=True)
    rescan = _decide(spec, _tally(verified=3), scan=DONE_SCAN, rounds=Rounds(round=1))
    assert rescan.stage == StageWant("scan", 1, 0, parallelism=1, scan_id=2)
    second = ScanRecord(id=2, completed_at=T)
    recorded = _decide(spec, _tally(verified=3), scan=second, rounds=Rounds(round=1))
    assert recorded.catch_up_result == (1, 0)
    final = _decide(
        spec,
        _tally(verified=3),
        scan=second,
        rounds=Rounds(round=1),
        catch_up=CatchUpRecord(rounds=1, last_delta=0),
    )
    # Caught up; the final check comes once everything else holds, as for any migration.
    assert final == Decision(next_round=True, final_check=True)


def test_catch_up_that_never_converges_rests_awaiting_cutover() -> None:
    spec = _spec(cutover={"catchUp": True, "maxCatchUpRounds": 1})
    decision = _decide(
        spec,
        _tally(verified=3),
        scan=ScanRecord(id=2, completed_at=T, new=4),
        rounds=Rounds(round=1),
        catch_up=CatchUpRecord(rounds=1, last_delta=4),
    )
    assert decision == Decision(outcome=Outcome.AWAITING_CUTOVER)


@pytest.mark.parametrize("local", [False, True])
def test_both_drivers_get_the_same_decision_once_the_scan_is_done(local: bool) -> None:
    spec = _spec(workers={"parallelism": 3})
    assert _decide(spec, _tally(outstanding=2), local=local, scan=DONE_SCAN) == Decision(
        stage=StageWant("copy", 0, 0, parallelism=3)
    )


# -- cleanups ------------------------------------------------------------------------------

DIGEST = "sha256:" + "ab" * 32


def _cleanup(
    *,
    what: str = "source",
    approved: bool = True,
    cut_over_at: datetime | None = T,
    rolled_back: bool = False,
    run: RunObservation | None = None,
    **state: Any,
) -> CleanupDecision:
    body: dict[str, Any] = {"migrationRef": {"name": "m"}, "what": what, "gracePeriod": "1h"}
    if approved:
        body["approval"] = {"digest": DIGEST}
    return decide_cleanup(
        CleanupObserved(
            spec=MigrationCleanupSpec.model_validate(body),
            facts=MigrationFacts(cut_over_at=cut_over_at, rolled_back=rolled_back, digest=DIGEST),
            state=CleanupState(**state),
            now=T + timedelta(hours=2),
            run=run,
        )
    )


def test_a_cleanup_whose_gates_hold_runs_a_pass() -> None:
    assert _cleanup() == CleanupDecision(run_pass=True)


@pytest.mark.parametrize(
    ("change", "reasons"),
    [
        ({"cut_over_at": None, "approved": False}, ["NotCutOver", "ApprovalMissing"]),
        ({"rolled_back": True}, ["RolledBack"]),
        ({"approved": False}, ["ApprovalMissing"]),
        ({"cut_over_at": T + timedelta(minutes=90)}, ["GracePeriodNotElapsed"]),
    ],
)
def test_a_source_cleanup_with_unmet_gates_runs_nothing_and_names_them(
    change: dict[str, Any], reasons: list[str]
) -> None:
    decision = _cleanup(**change)

    assert not decision.run_pass
    assert decision.fail is None
    assert [verdict.reason for verdict in decision.unmet] == reasons


def test_a_leftovers_cleanup_needs_none_of_the_source_gates() -> None:
    decision = _cleanup(what="leftovers", approved=False, cut_over_at=None)

    assert decision == CleanupDecision(run_pass=True)


def test_a_completed_pass_runs_nothing_more() -> None:
    assert _cleanup(completed_at=T) == CleanupDecision()


def test_a_failed_cleanup_runs_nothing_more() -> None:
    assert _cleanup(failed=Problem(reason="CleanupJobFailed", message="x")) == CleanupDecision()


def test_a_pass_under_way_is_left_to_run() -> None:
    assert _cleanup(run=RunObservation()) == CleanupDecision()
    assert _cleanup(run=RunObservation(complete=True)) == CleanupDecision()


def test_a_pass_whose_run_failed_fails_the_cleanup_with_its_message() -> None:
    decision = _cleanup(run=RunObservation(failed_message="Job c-cleanup: BackoffLimitExceeded"))

    assert decision.fail == Problem(
        reason=Reason.CLEANUP_JOB_FAILED, message="Job c-cleanup: BackoffLimitExceeded"
    )
    assert not decision.run_pass
