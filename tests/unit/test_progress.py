"""The status's numbers (issue 24.4, 24.5): done/total, percent, rate and ETA, stalled leases,
the Scanning phase, and a cleanup's counts. Pure: no ledger, no clock but a fake one."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from objmig.api.migration import ObjectMigrationSpec, ObjectMigrationStatus
from objmig.api.migration_cleanup import MigrationCleanupSpec, MigrationCleanupStatus
from objmig.engine.activity import ActivityMeter, retry_error
from objmig.engine.bookkeeping import RateMeter
from objmig.engine.cleanup_status import CleanupStatusInputs, build_cleanup_status
from objmig.engine.status import Rates, StatusInputs, build_status, progress_of
from objmig.ledger.models import Activity, Counts, ObjectState, StateCount, StepResult
from objmig.ledger.state import CleanupState, MigrationState, ScanRecord

MiB = 1024 * 1024
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _counts(in_flight: StateCount | None = None, **by_state: tuple[int, int]) -> Counts:
    return Counts(
        by_state={ObjectState(s): StateCount(o, b) for s, (o, b) in by_state.items()},
        in_flight=in_flight or StateCount(),
    )


def test_many_small_objects_done_and_a_few_large_left_read_halfway_not_eight_percent() -> None:
    # The issue's run: 1,441 of 1,500 objects done, 8% of the bytes.
    counts = _counts(verified=(1441, 80 * MiB), pending=(59, 920 * MiB))

    progress = progress_of(counts, Activity(), Rates())

    assert progress.objects_done == "1441/1500"
    assert progress.percent == (96 + 8) // 2


def test_bytes_already_written_of_objects_in_flight_count_as_done() -> None:
    counts = _counts(
        verified=(5, 10 * MiB),
        pending=(5, 990 * MiB),
        in_flight=StateCount(5, 990 * MiB),
    )
    moving = Activity(bytes_moved=500 * MiB, bytes_in_flight=495 * MiB)

    progress = progress_of(counts, moving, Rates(bytes_per_second=5 * MiB))

    assert progress.percent == (50 + 50) // 2
    # 495 MiB left at 5 MiB/s; the objects' rate is unknown and does not shorten it.
    assert progress.eta == "1m39s"
    assert progress.bytes_per_second == 5 * MiB


def test_the_eta_is_the_longer_of_the_bytes_and_the_objects_estimates() -> None:
    counts = _counts(verified=(100, 100 * MiB), pending=(900, 1 * MiB))
    rates = Rates(bytes_per_second=1 * MiB, objects_per_second=10)

    # 1 MiB left is a second of bytes, but 900 objects at 10/s take 1m30s.
    assert progress_of(counts, Activity(), rates).eta == "1m30s"


def test_no_eta_without_a_rate_and_none_when_done() -> None:
    assert progress_of(_counts(pending=(3, 3)), Activity(), Rates()).eta is None
    done = progress_of(_counts(verified=(3, 3)), Activity(), Rates(bytes_per_second=9))
    assert (done.eta, done.percent, done.objects_done) == (None, 100, "3/3")


def test_in_flight_bytes_never_count_past_the_objects_that_hold_them() -> None:
    counts = _counts(verified=(1, 10), pending=(1, 10), in_flight=StateCount(1, 10))
    progress = progress_of(counts, Activity(bytes_in_flight=10**9), Rates(bytes_per_second=1))
    assert progress.percent == (50 + 100) // 2
    assert 0 <= progress.percent <= 100


def test_leases_of_a_silent_worker_are_stalled_not_in_progress() -> None:
    counts = _counts(pending=(10, 100), in_flight=StateCount(6, 60))
    progress = progress_of(counts, Activity(stalled=StateCount(4, 40)), Rates())
    assert (progress.objects.in_progress, progress.objects.stalled) == (2, 4)
    assert (progress.bytes.in_progress, progress.bytes.stalled) == (20, 40)
    assert progress.objects.pending == 4


def test_retries_and_their_last_error_reach_the_status() -> None:
    activity = Activity(retries=7, last_error="copy: SlowDown: Please reduce your request rate")
    progress = progress_of(_counts(pending=(1, 1)), activity, Rates())
    assert progress.retries == 7
    assert progress.last_retryable_error == "copy: SlowDown: Please reduce your request rate"


def test_deleting_verified_sources_keeps_them_done_and_the_status_builds() -> None:
    # A cleanup turns verified rows into deleted ones: nothing goes backwards.
    counts = _counts(verified=(2, 20), deleted=(8, 80))
    status = build_status(_inputs(counts), _previous())
    assert status.progress.objects.succeeded == 10
    assert status.progress.percent == 100


def test_the_rate_never_goes_negative_when_finished_totals_shrink() -> None:
    clock = iter([0.0, 5.0, 10.0])
    meter = RateMeter(window=20, clock=lambda: next(clock))
    meter.sample(1000, 10)
    assert meter.sample(6000, 20) == Rates(bytes_per_second=1000, objects_per_second=2)
    # Rows re-queued (a catch-up found changes): fewer finished objects than before.
    assert meter.sample(6000, 5) == Rates(bytes_per_second=500, objects_per_second=0)


def test_a_worker_counts_bytes_per_object_and_its_retries() -> None:
    meter = ActivityMeter()
    meter.moved(1, 100)
    meter.moved(2, 50)
    meter.moved(1, 10)
    retry = StepResult(
        id=1, state=ObjectState.PENDING, last_error="copy: InternalError: oops", not_before=NOW
    )
    meter.finished(1, retry)
    due = meter.report()
    assert due is not None
    version, report = due
    assert (report.bytes_moved, report.bytes_in_flight, report.retries) == (160, 50, 1)
    assert report.last_error == "copy: InternalError: oops"
    meter.sent(version)
    assert meter.report() is None
    meter.finished(2, StepResult(id=2, state=ObjectState.VERIFIED))
    due = meter.report()
    assert due is not None
    assert due[1].bytes_in_flight == 0
    assert due[1].retries == 1


@pytest.mark.parametrize(
    ("result", "error"),
    [
        (StepResult(id=1, state=ObjectState.PENDING, last_error="e"), "e"),
        (StepResult(id=1, state=ObjectState.COPIED, last_error="e"), "e"),
        (StepResult(id=1, state=ObjectState.FAILED, last_error="e"), None),
        (StepResult(id=1, state=ObjectState.RESTORING, not_before=NOW), None),
        (StepResult(id=1, state=ObjectState.VERIFIED), None),
    ],
)
def test_only_attempts_to_be_tried_again_are_retries(result: StepResult, error: str | None) -> None:
    assert retry_error(result) == error


def test_a_scan_being_started_shows_as_scanning() -> None:
    state = MigrationState(spec={}, scan=ScanRecord(id=0))
    waiting = build_status(_inputs(_counts(), state=state), _previous())
    starting = build_status(_inputs(_counts(), state=state, scan_starting=True), _previous())
    assert waiting.phase == "Pending"
    assert starting.phase == "Scanning"


def _spec() -> ObjectMigrationSpec:
    return ObjectMigrationSpec.model_validate(
        {"source": {"bucket": "src-bucket"}, "target": {"bucket": "dst-bucket"}}
    )


def _previous() -> ObjectMigrationStatus:
    return ObjectMigrationStatus()


def _inputs(
    counts: Counts,
    *,
    state: MigrationState | None = None,
    scan_starting: bool = False,
) -> StatusInputs:
    return StatusInputs(
        spec=_spec(),
        generation=1,
        counts=counts,
        state=state or MigrationState(spec={}, scan=ScanRecord(id=1, completed_at=NOW)),
        window=[],
        window_truncated=False,
        now=NOW,
        scan_starting=scan_starting,
    )


# -- MigrationCleanup -------------------------------------------------------------------------


def _cleanup(
    counts: dict[tuple[str, str], StateCount], *, completed: bool, **spec: object
) -> CleanupStatusInputs:
    return CleanupStatusInputs(
        spec=MigrationCleanupSpec.model_validate({"migrationRef": {"name": "m"}, **spec}),
        generation=1,
        unmet=[],
        counts=counts,
        window=[],
        window_truncated=False,
        state=CleanupState(completed_at=NOW if completed else None, summary="done"),
        now=NOW,
    )


def test_a_cleanup_that_stopped_at_its_limit_is_complete_and_says_what_it_left() -> None:
    counts = {("deleted", "SourceDeleted"): StateCount(4, 40), ("planned", ""): StateCount(6, 60)}
    status = build_cleanup_status(_cleanup(counts, completed=True, limit=4), _status())
    assert status.phase == "Completed"
    assert (status.counts.deleted, status.counts.left_by_limit) == (4, 6)


def test_a_pass_under_way_with_planned_objects_is_not_complete() -> None:
    counts = {("deleted", "SourceDeleted"): StateCount(2, 20), ("planned", ""): StateCount(6, 60)}
    status = build_cleanup_status(_cleanup(counts, completed=False, limit=4), _status())
    assert status.phase == "Deleting"
    assert status.counts.left_by_limit == 0


def test_a_dry_run_counts_what_it_would_delete_apart_from_deletions() -> None:
    counts = {("would_delete", "DryRun"): StateCount(6, 60)}
    status = build_cleanup_status(_cleanup(counts, completed=True, dryRun=True), _status())
    assert (status.counts.deleted, status.counts.would_delete) == (0, 6)
    assert status.counts.bytes_freed == 0
    assert status.phase == "Completed"


def _status() -> MigrationCleanupStatus:
    return MigrationCleanupStatus()
