"""Health as conditions (issue 20): Degraded before the failure budget pauses, Stalled after
a period under the throughput floor, TargetSpaceLow pausing through decide(). Pure: the
status and the lifecycle from made-up observations, with a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from objmig.api.conditions import ConditionType, Reason, find_condition
from objmig.api.migration import HealthStatus, ObjectMigrationSpec, ObjectMigrationStatus
from objmig.engine.lifecycle import Observed, Outcome, decide
from objmig.engine.policy import Tally
from objmig.engine.status import Rates, StatusInputs, build_status
from objmig.ledger.models import Counts, ObjectState, StateCount
from objmig.ledger.state import MigrationState, Problem, ScanRecord, TargetSpace

NOW = datetime(2026, 6, 1, tzinfo=UTC)
MiB = 1024 * 1024
DONE_SCAN = ScanRecord(id=1, completed_at=NOW - timedelta(hours=1))


def _spec(**overrides: Any) -> ObjectMigrationSpec:
    body: dict[str, Any] = {"source": {"bucket": "src-bucket"}, "target": {"bucket": "dst-bucket"}}
    body.update(overrides)
    return ObjectMigrationSpec.model_validate(body)


def _directory(**health: Any) -> ObjectMigrationSpec:
    return _spec(
        target={"filesystem": {"path": "/backup", "minFreeSpace": "4Mi"}}, **({"health": health})
    )


def _status(
    spec: ObjectMigrationSpec,
    *,
    previous: ObjectMigrationStatus | None = None,
    rates: Rates | None = None,
    measured: bool = True,
    **states: tuple[int, int],
) -> ObjectMigrationStatus:
    counts = Counts(by_state={ObjectState(s): StateCount(o, b) for s, (o, b) in states.items()})
    state = MigrationState(spec={}, scan=DONE_SCAN)
    return _build(spec, counts, state, previous, rates or Rates(), measured)


def _build(
    spec: ObjectMigrationSpec,
    counts: Counts,
    state: MigrationState,
    previous: ObjectMigrationStatus | None,
    rates: Rates,
    measured: bool,
) -> ObjectMigrationStatus:
    inputs = StatusInputs(
        spec=spec,
        generation=1,
        counts=counts,
        state=state,
        window=[],
        window_truncated=False,
        now=NOW,
        rates=rates,
        rates_measured=measured,
    )
    return build_status(inputs, previous or ObjectMigrationStatus())


def _condition(status: ObjectMigrationStatus, type_: ConditionType) -> tuple[str, str]:
    found = find_condition(status.conditions, type_)
    assert found is not None, type_
    return found.status, found.reason


def test_an_error_rate_over_the_threshold_is_degraded_before_the_budget_pauses() -> None:
    spec = _spec(health={"degradedErrorRate": 0.05}, failurePolicy={"minObjects": 100})
    over = _status(spec, verified=(180, MiB), failed=(20, MiB), pending=(800, MiB))
    under = _status(spec, verified=(195, MiB), failed=(5, MiB), pending=(800, MiB))
    too_few = _status(spec, verified=(40, MiB), failed=(20, MiB), pending=(800, MiB))

    assert _condition(over, ConditionType.DEGRADED) == ("True", Reason.ERROR_RATE_HIGH)
    assert over.health.summary == "Degraded"
    assert over.phase == "Copying"  # a warning, not a pause
    # (Degraded also says when a store lacks part of S3; both stores lack nothing here.)
    assert _condition(under, ConditionType.DEGRADED) == ("False", Reason.ALL_FEATURES_PRESENT)
    # Not before failurePolicy.minObjects have finished.
    assert _condition(too_few, ConditionType.DEGRADED)[0] == "False"


def test_throughput_under_the_floor_is_stalled_only_once_it_lasted_stalled_after() -> None:
    spec = _spec(health={"minThroughput": "1Mi", "stalledAfter": "10m"})
    slow = Rates(bytes_per_second=100_000, objects_per_second=1)
    first = _status(spec, rates=slow, verified=(10, MiB), pending=(90, 90 * MiB))
    assert first.health.below_floor_since == NOW
    assert _condition(first, ConditionType.STALLED) == ("False", Reason.PROGRESSING)

    earlier = ObjectMigrationStatus(
        health=HealthStatus(below_floor_since=NOW - timedelta(minutes=11))
    )
    later = _status(spec, previous=earlier, rates=slow, verified=(10, MiB), pending=(90, MiB))
    assert _condition(later, ConditionType.STALLED) == ("True", Reason.THROUGHPUT_BELOW_FLOOR)
    assert later.health.summary == "Stalled"
    # The clock starts again once throughput is above the floor.
    fast = Rates(bytes_per_second=8 * MiB, objects_per_second=10)
    recovered = _status(spec, previous=later, rates=fast, verified=(10, MiB), pending=(90, MiB))
    assert recovered.health.below_floor_since is None
    assert _condition(recovered, ConditionType.STALLED)[0] == "False"


def test_no_stall_without_work_waiting_or_without_a_measured_rate() -> None:
    spec = _spec(health={"stalledAfter": "1m"})
    earlier = ObjectMigrationStatus(health=HealthStatus(below_floor_since=NOW - timedelta(hours=1)))
    done = _status(spec, previous=earlier, verified=(10, MiB))
    unmeasured = _status(spec, previous=earlier, measured=False, pending=(10, MiB))
    restoring_only = _status(spec, previous=earlier, restoring=(10, MiB))

    assert _condition(done, ConditionType.STALLED) == ("False", Reason.NOTHING_OUTSTANDING)
    # A status read by another process (objmig status) measured no rate: no verdict.
    assert _condition(unmeasured, ConditionType.STALLED)[0] == "False"
    # Waiting for archive restores is no stall.
    assert _condition(restoring_only, ConditionType.STALLED)[0] == "False"


def _space(free: int, low: bool) -> TargetSpace:
    return TargetSpace(free=free, total=64 * MiB, minimum=4 * MiB, low=low, at=NOW)


def test_a_target_directory_short_of_space_pauses_through_decide_and_resumes() -> None:
    spec = _directory()
    tally = Tally(total=10, verified=4, failed=0, source_changed=0, skipped=0, outstanding=6)
    low = MigrationState(spec={}, scan=DONE_SCAN, target_space=_space(2 * MiB, low=True))

    decision = decide(Observed(spec=spec, tally=tally, state=low, copies_while_scanning=False))

    assert decision.pause is not None
    assert decision.pause.reason == Reason.TARGET_SPACE_LOW
    assert "minFreeSpace" in decision.pause.message
    # The workers stay, to measure again before each file.
    assert decision.stage is not None
    assert decision.stage.stage == "copy"

    paused = Problem(reason=Reason.TARGET_SPACE_LOW, message="low")
    room = MigrationState(
        spec={}, scan=DONE_SCAN, paused=paused, target_space=_space(40 * MiB, low=False)
    )
    resumed = decide(Observed(spec=spec, tally=tally, state=room, copies_while_scanning=False))
    assert resumed.pause is None
    assert resumed.clear_pause
    assert resumed.outcome is not Outcome.PAUSED


def test_target_space_low_is_a_condition_and_in_the_health_summary() -> None:
    spec = _directory()
    counts = Counts(
        by_state={
            ObjectState.VERIFIED: StateCount(4, 4 * MiB),
            ObjectState.PENDING: StateCount(6, 6 * MiB),
        }
    )
    paused = Problem(reason=Reason.TARGET_SPACE_LOW, message="low")
    state = MigrationState(
        spec={}, scan=DONE_SCAN, paused=paused, target_space=_space(2 * MiB, low=True)
    )

    status = _build(spec, counts, state, None, Rates(), True)

    assert _condition(status, ConditionType.TARGET_SPACE_LOW) == (
        "True",
        Reason.FREE_SPACE_BELOW_MINIMUM,
    )
    assert _condition(status, ConditionType.PAUSED) == ("True", Reason.TARGET_SPACE_LOW)
    assert status.phase == "Paused"
    assert status.health.summary == "TargetSpaceLow"
    assert status.health.target_free_bytes == 2 * MiB
    # Paused, it is not also Stalled: nothing is expected to move.
    assert _condition(status, ConditionType.STALLED)[0] == "False"
