"""The pure decisions: backoff, failure budget, cutover and rollback gates, key templates."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import pytest

from objmig.api.migration import BackoffSpec, FailurePolicySpec, ObjectMigrationSpec
from objmig.engine.keys import target_key
from objmig.engine.policy import (
    CatchUp,
    CutoverInputs,
    Tally,
    backoff_delay,
    cutover_gate,
    failure_budget,
    restore_poll_delay,
    rollback_gate,
)
from objmig.engine.status import Rates, progress_of
from objmig.ledger.models import Activity, Counts, ObjectState, StateCount
from objmig.ledger.state import CatchUpRecord, MigrationState


def _spec(**overrides: Any) -> ObjectMigrationSpec:
    body: dict[str, Any] = {"source": {"bucket": "src-bucket"}, "target": {"bucket": "dst-bucket"}}
    body.update(overrides)
    return ObjectMigrationSpec.model_validate(body)


def _tally(**counts: int) -> Tally:
    values = {"verified": 0, "failed": 0, "source_changed": 0, "skipped": 0, "outstanding": 0}
    values.update(counts)
    total = counts.get("total", sum(values.values()))
    return Tally(total=total, **values)


def _inputs(
    tally: Tally,
    *,
    scan_complete: bool = True,
    delta: int | None = 0,
    rounds: int = 1,
    checked: int | None = 1,
) -> CutoverInputs:
    """The gate's inputs; by default the final re-scan before the cutover (round 1) ran,
    and found nothing new."""
    record = CatchUpRecord(rounds=rounds, last_delta=delta, final_check_round=checked)
    return CutoverInputs(tally, scan_complete, CatchUp(record))


def test_backoff_grows_exponentially_and_is_capped() -> None:
    backoff = BackoffSpec(initial="1s", max="10s", factor=2, jitter=False)
    assert [backoff_delay(n, backoff) for n in (1, 2, 3, 4, 5, 6)] == [1, 2, 4, 8, 10, 10]


def test_backoff_jitter_stays_within_half_to_full_delay() -> None:
    backoff = BackoffSpec(initial="2s", max="1m", factor=3, jitter=True)
    rng = random.Random(7)
    delays = [backoff_delay(3, backoff, rng) for _ in range(200)]
    assert all(9 <= d <= 18 for d in delays)
    assert len({round(d, 3) for d in delays}) > 100


def test_failure_budget_by_count() -> None:
    policy = FailurePolicySpec(max_failed_objects=2)
    assert failure_budget(_tally(verified=10, failed=2), policy).ok
    gate = failure_budget(_tally(verified=10, failed=2, source_changed=1), policy)
    assert not gate.ok
    assert gate.reason == "FailureBudgetExceeded"
    assert "3 objects failed" in gate.message


def test_failure_ratio_applies_only_after_min_objects() -> None:
    policy = FailurePolicySpec(max_failure_ratio=0.1, min_objects=20)
    assert failure_budget(_tally(verified=5, failed=5), policy).ok
    gate = failure_budget(_tally(verified=15, failed=5), policy)
    assert not gate.ok
    assert gate.reason == "FailureRatioExceeded"
    assert failure_budget(_tally(verified=18, failed=2), policy).ok


def test_cutover_waits_for_every_object() -> None:
    gate = cutover_gate(_spec(), _inputs(_tally(verified=9, outstanding=1)))
    assert (gate.ok, gate.reason) == (False, "NotAllVerified")
    assert "9 of 10" in gate.message


def test_cutover_needs_a_finished_scan() -> None:
    gate = cutover_gate(_spec(), _inputs(_tally(verified=3), scan_complete=False))
    assert gate.reason == "ScanIncomplete"


def test_cutover_automatic_passes_when_all_verified() -> None:
    gate = cutover_gate(_spec(), _inputs(_tally(verified=10)))
    assert gate.ok
    assert gate.reason == "GatesPassed"


def test_cutover_manual_waits_for_approval_and_says_so() -> None:
    spec = _spec(cutover={"policy": "Manual"})
    gate = cutover_gate(spec, _inputs(_tally(verified=10)))
    assert (gate.ok, gate.reason) == (False, "AwaitingApproval")
    assert "spec.cutover.approved: true" in gate.message
    approved = _spec(cutover={"policy": "Manual", "approved": True})
    assert cutover_gate(approved, _inputs(_tally(verified=10))).ok


def test_cutover_blocked_by_failures_over_budget() -> None:
    spec = _spec(failurePolicy={"maxFailedObjects": 0})
    gate = cutover_gate(spec, _inputs(_tally(verified=9, failed=1)))
    assert gate.reason == "FailureBudgetExceeded"


def test_cutover_holds_the_ratio_to_every_object_however_few() -> None:
    # minObjects spares a run its first failures while it goes; at the cutover every
    # object has finished, and 49 failed out of 50 is 98 %, not "too few to judge".
    spec = _spec(failurePolicy={"maxFailureRatio": 0.1, "minObjects": 100})
    gate = cutover_gate(spec, _inputs(_tally(verified=1, failed=49)))
    assert (gate.ok, gate.reason) == (False, "FailureRatioExceeded")
    assert cutover_gate(spec, _inputs(_tally(verified=45, failed=4))).ok


def test_cutover_with_catch_up_waits_for_an_empty_delta() -> None:
    spec = _spec(cutover={"catchUp": True, "maxCatchUpRounds": 3})
    tally = _tally(verified=10)
    pending = _inputs(tally, delta=None, rounds=0, checked=None)
    assert cutover_gate(spec, pending).reason == "CatchUpPending"
    assert cutover_gate(spec, _inputs(tally, delta=4, rounds=1)).reason == "CatchUpPending"
    assert cutover_gate(spec, _inputs(tally, delta=2, rounds=3)).reason == "CatchUpNotConverging"
    assert cutover_gate(spec, _inputs(tally, delta=0, rounds=2)).ok


def test_catch_up_rounds_are_due_until_a_round_finds_nothing_or_the_limit() -> None:
    spec = _spec(cutover={"catchUp": True, "maxCatchUpRounds": 2})
    assert CatchUp().due(spec)  # none ran yet
    assert CatchUp(CatchUp().recorded(1, 5)).due(spec)
    assert not CatchUp(CatchUp().recorded(1, 0)).due(spec)
    assert not CatchUp(CatchUp().recorded(2, 5)).due(spec)  # the limit: NotConverging
    assert not CatchUp().due(_spec())  # catchUp off
    assert not CatchUp().due(_spec(dryRun=True, cutover={"catchUp": True}))
    assert CatchUp.of(
        MigrationState.model_validate({"catchUp": {"rounds": 1, "lastDelta": 3}})
    ) == CatchUp(CatchUpRecord(rounds=1, last_delta=3))


def test_the_cutover_waits_for_a_re_scan_made_once_everything_else_held() -> None:
    tally = _tally(verified=10)
    for spec in (_spec(), _spec(cutover={"catchUp": True})):
        for inputs in (
            _inputs(tally, rounds=0, checked=None),  # never re-scanned
            _inputs(tally, rounds=3, checked=None),  # re-scanned, but not as the final check
            _inputs(tally, rounds=3, checked=4),  # the final check is still running
        ):
            gate = cutover_gate(spec, inputs)
            assert (gate.ok, gate.reason) == (False, "RescanningBeforeCutover")
            assert "changed since it was verified" in gate.message
    # Without catchUp, what the final check found changed was copied again: cut over.
    assert cutover_gate(_spec(), _inputs(tally, delta=7, rounds=1, checked=1)).ok
    # Awaiting approval comes first: no final check is made before the approval.
    manual = cutover_gate(_spec(cutover={"policy": "Manual"}), _inputs(tally, checked=None))
    assert manual.reason == "AwaitingApproval"


def test_after_a_rollback_the_next_cutover_waits_for_a_re_scan() -> None:
    tally = _tally(verified=10)
    exhausted = CatchUp(CatchUpRecord(rounds=3, last_delta=2))
    rolled_back = CatchUp(exhausted.after_rollback())
    for spec in (_spec(), _spec(cutover={"catchUp": True, "maxCatchUpRounds": 3})):
        assert rolled_back.due(spec)
        gate = cutover_gate(spec, CutoverInputs(tally, True, rolled_back))
        assert (gate.ok, gate.reason) == (False, "CatchUpPending")
        assert "rolled back" in gate.message
    assert not rolled_back.due(_spec(dryRun=True))
    # One re-scan pays what the rollback owes; with catchUp on, the limit counts afresh.
    found = CatchUp(rolled_back.recorded(4, 2))
    assert not found.owed_after_rollback
    assert not found.due(_spec())
    # A rollback forgets the final check made before: the next cutover makes its own.
    assert rolled_back.record.final_check_round is None
    gate = cutover_gate(_spec(), CutoverInputs(tally, True, found))
    assert gate.reason == "RescanningBeforeCutover"
    checked = CatchUp(CatchUp(found.final_check(5)).recorded(5, 0))
    assert cutover_gate(_spec(), CutoverInputs(tally, True, checked)).ok
    catching_up = _spec(cutover={"catchUp": True, "maxCatchUpRounds": 3})
    assert found.due(catching_up)
    assert not CatchUp(found.recorded(6, 1)).due(catching_up)
    assert found.recorded(5, 0).rolled_back_at_round == 3
    gate = cutover_gate(catching_up, CutoverInputs(tally, True, checked))
    assert gate.ok


def test_cutover_never_in_dry_run() -> None:
    assert cutover_gate(_spec(dryRun=True), _inputs(_tally(verified=10))).reason == "DryRun"


def test_cutover_needs_something_selected_and_verified() -> None:
    assert cutover_gate(_spec(), _inputs(_tally())).reason == "NothingSelected"
    gate = cutover_gate(_spec(), _inputs(_tally(skipped=3)))
    assert gate.reason == "NothingVerified"


def test_rollback_refused_once_cleanup_started() -> None:
    assert rollback_gate(cut_over=True, cleanup_started=False).ok
    gate = rollback_gate(cut_over=True, cleanup_started=True)
    assert (gate.ok, gate.reason) == (False, "CleanupStarted")
    assert rollback_gate(cut_over=False, cleanup_started=False).reason == "NotCutOver"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{relative}", "new/2024/a/b.txt"),
        ("{year}/{month}/{basename}", "new/2024/03/b.txt"),
        ("{key}", "new/old/2024/a/b.txt"),
        ("{dirname}/{etag}-{basename}", "new/2024/a/abc123-b.txt"),
    ],
)
def test_target_key_templates(template: str, expected: str) -> None:
    key = target_key(
        "old/2024/a/b.txt",
        source_prefix="old/",
        target_prefix="new/",
        template=template,
        last_modified=datetime(2024, 3, 9, tzinfo=UTC),
        etag="abc123",
    )
    assert key == expected


def test_a_restore_is_looked_at_soon_after_its_request_then_less_often() -> None:
    fifteen_minutes = 900.0
    waits, since = [], 0.0
    for _ in range(8):
        wait = restore_poll_delay(since, fifteen_minutes)
        waits.append(wait)
        since += wait
    assert waits == [30, 30, 60, 120, 240, 480, 900, 900]
    # A pollInterval below the first look caps it.
    assert restore_poll_delay(0, 1.0) == 1.0


def test_no_eta_is_extrapolated_while_objects_wait_for_restores() -> None:
    copying = Counts(
        by_state={
            ObjectState.PENDING: StateCount(10, 10_000),
            ObjectState.VERIFIED: StateCount(10, 10_000),
        }
    )
    rates = Rates(bytes_per_second=1000.0, objects_per_second=1.0)
    assert progress_of(copying, Activity(), rates).eta == "10s"
    restoring = Counts(by_state={**copying.by_state, ObjectState.RESTORING: StateCount(1, 1000)})
    assert progress_of(restoring, Activity(), rates).eta == "waiting for restores"
