"""The operator's pure decision: which Job to run, pause, fail, cut over or roll back."""

from __future__ import annotations

from typing import Any

from objmig.api.migration import ObjectMigrationSpec
from objmig.controller.decide import Decision, JobObservation, Observed, decide, rounds, section
from objmig.engine.policy import CatchUp, Tally

DONE_SCAN = {"id": 1, "running": False, "completedAt": "2024-01-01T00:00:00+00:00"}


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
    jobs: list[JobObservation] | None = None,
    **state: Any,
) -> Decision:
    return decide(
        Observed(
            name="m",
            spec=spec or _spec(),
            tally=tally or _tally(),
            state=state,
            jobs={job.name: job for job in jobs or []},
        )
    )


def test_a_new_migration_starts_with_one_scan_job() -> None:
    decision = _decide()
    assert decision.job is not None
    assert (decision.job.name, decision.job.stage, decision.job.parallelism) == (
        "m-scan-r0",
        "scan",
        1,
    )
    assert not decision.job.suspend
    assert decision.job.scan_id == 1


def test_a_catch_up_round_scans_with_its_own_number_however_often_a_pod_is_retried() -> None:
    # Round 2's scan is scan 3: a pod that scanned part of it and was retried repeats scan
    # 3; it does not count as round 3's (which would skip a catch-up round unscanned).
    decision = _decide(
        tally=_tally(verified=4), scan={"id": 2, "completedAt": "t"}, operator={"round": 2}
    )
    assert decision.job is not None
    assert (decision.job.name, decision.job.scan_id) == ("m-scan-r2", 3)


def test_after_the_scan_a_copy_job_runs_with_the_spec_parallelism() -> None:
    decision = _decide(_spec(workers={"parallelism": 5}), _tally(outstanding=10), scan=DONE_SCAN)
    assert decision.job is not None
    assert (decision.job.name, decision.job.stage, decision.job.parallelism) == (
        "m-copy-r0",
        "copy",
        5,
    )


def test_a_complete_copy_job_with_work_left_starts_another_wave() -> None:
    job = JobObservation(name="m-copy-r0", succeeded=2, complete=True)
    decision = _decide(tally=_tally(outstanding=3, verified=7), jobs=[job], scan=DONE_SCAN)
    assert decision == Decision(next_wave=True)
    wave = _decide(
        tally=_tally(outstanding=3), jobs=[job], scan=DONE_SCAN, operator={"round": 0, "wave": 1}
    )
    assert wave.job is not None
    assert wave.job.name == "m-copy-r0-w1"


def test_a_failed_scan_job_fails_the_migration_with_the_job_message() -> None:
    job = JobObservation(name="m-scan-r0", failed_reason="FailedIndexes", failed_message="boom")
    decision = _decide(jobs=[job])
    assert decision.failed == ("ScanFailed", "Job m-scan-r0: boom")


def test_a_scan_retried_after_a_failure_gets_a_fresh_job_not_the_failed_one() -> None:
    failed = JobObservation(name="m-scan-r0", failed_reason="FailedIndexes", failed_message="x")
    # A spec change cleared the failure and moved to the next wave.
    decision = _decide(jobs=[failed], operator={"round": 0, "wave": 1})
    assert decision.failed is None
    assert decision.job is not None
    assert decision.job.name == "m-scan-r0-w1"


def test_a_recorded_failure_starts_nothing_and_leaves_failing_jobs_to_fail() -> None:
    running = JobObservation(name="m-copy-r0", active=2, parallelism=2)
    decision = _decide(
        tally=_tally(outstanding=5),
        jobs=[running],
        scan=DONE_SCAN,
        failed={"reason": "S3InvalidAccessKeyId", "message": "m"},
    )
    assert decision == Decision()


def test_suspend_suspends_jobs_and_starts_nothing() -> None:
    decision = _decide(_spec(suspend=True), _tally(outstanding=4), scan=DONE_SCAN)
    assert decision == Decision(suspend_jobs=True)


def test_an_exceeded_failure_budget_pauses_with_the_gate_reason() -> None:
    spec = _spec(failurePolicy={"maxFailedObjects": 1})
    decision = _decide(spec, _tally(failed=2, outstanding=5), scan=DONE_SCAN)
    assert decision.suspend_jobs
    assert decision.paused is not None
    assert decision.paused[0] == "FailureBudgetExceeded"
    assert decision.job is None


def test_automatic_policy_cuts_over_when_everything_is_verified() -> None:
    assert _decide(tally=_tally(verified=3), scan=DONE_SCAN).cut_over


def test_manual_policy_waits_for_approval() -> None:
    spec = _spec(cutover={"policy": "Manual"})
    assert not _decide(spec, _tally(verified=3), scan=DONE_SCAN).cut_over
    approved = _spec(cutover={"policy": "Manual", "approved": True})
    assert _decide(approved, _tally(verified=3), scan=DONE_SCAN).cut_over


def test_rollback_of_a_cut_over_migration_rolls_back() -> None:
    spec = _spec(cutover={"rollback": True})
    decision = _decide(spec, _tally(verified=3), scan=DONE_SCAN, cutover={"at": "t"})
    assert decision == Decision(roll_back=True)


def test_a_rolled_back_migration_is_not_cut_over_again_while_rollback_is_set() -> None:
    spec = _spec(cutover={"policy": "Manual", "approved": True, "rollback": True})
    state = {"scan": DONE_SCAN, "cutover": {"at": "t", "rolledBackAt": "u"}}
    state |= CatchUp().after_rollback()
    assert _decide(spec, _tally(verified=3), **state) == Decision()
    # Withdrawing the rollback request cuts over again, after a re-scan for what the
    # applications wrote to the source meanwhile (catchUp is off in this spec).
    spec = _spec(cutover={"policy": "Manual", "approved": True, "rollback": False})
    assert _decide(spec, _tally(verified=3), **state) == Decision(next_round=True)
    rescanning = state | {"operator": {"round": 1}}
    decision = _decide(spec, _tally(verified=3), **rescanning)
    assert decision.job is not None
    assert (decision.job.stage, decision.job.scan_id) == ("scan", 2)
    rescanned = rescanning | {"scan": {"id": 2, "completedAt": "t", "new": 1}}
    decision = _decide(spec, _tally(verified=3), **rescanned)
    assert decision.catch_up_result == (1, 1)
    recorded = rescanned | CatchUp.of(state).recorded(1, 1)
    assert _decide(spec, _tally(verified=3, outstanding=1), **recorded).job is not None
    assert _decide(spec, _tally(verified=4), **recorded).cut_over


def test_a_cutover_that_stopped_half_way_is_finished_or_rolled_back() -> None:
    state = {"scan": DONE_SCAN, "cutoverInProgress": {"startedAt": "t"}}
    assert _decide(_spec(), _tally(verified=3), **state).cut_over
    asked = _decide(_spec(cutover={"rollback": True}), _tally(verified=3), **state)
    assert asked == Decision(roll_back=True)
    # Failed (CutoverFailed) until the spec is edited, which clears the failure.
    failed = state | {"failed": {"reason": "CutoverFailed", "message": "m"}}
    assert _decide(_spec(cutover={"rollback": True}), _tally(verified=3), **failed) == Decision()


def test_rollback_set_before_any_cutover_prevents_the_cutover() -> None:
    spec = _spec(cutover={"rollback": True})
    assert not _decide(spec, _tally(verified=3), scan=DONE_SCAN).cut_over


def test_cleared_bookkeeping_sections_read_as_empty() -> None:
    state: dict[str, Any] = {
        "operator": None,
        "paused": None,
        "failed": None,
        "catchUp": None,
        "cutover": None,
        "scan": None,
    }
    assert section(state, "paused") == {}
    assert rounds(state) == (0, 0)
    decision = _decide(**state)
    assert decision.job is not None
    assert decision.job.name == "m-scan-r0"


def test_catch_up_rescans_in_a_new_round_until_the_delta_is_empty() -> None:
    spec = _spec(cutover={"catchUp": True})
    assert _decide(spec, _tally(verified=3), scan=DONE_SCAN) == Decision(next_round=True)
    rescan = _decide(spec, _tally(verified=3), scan=DONE_SCAN, operator={"round": 1, "wave": 0})
    assert rescan.job is not None
    assert rescan.job.name == "m-scan-r1"
    second = {**DONE_SCAN, "id": 2, "new": 0, "changed": 0}
    recorded = _decide(spec, _tally(verified=3), scan=second, operator={"round": 1})
    assert recorded.catch_up_result == (1, 0)
    final = _decide(
        spec,
        _tally(verified=3),
        scan=second,
        operator={"round": 1},
        catchUp={"rounds": 1, "lastDelta": 0},
    )
    assert final.cut_over
