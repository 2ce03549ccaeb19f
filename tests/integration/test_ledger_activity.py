"""Worker reports in the ledger: summed for the status, and telling live leases from dead ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from objmig.ledger import Ledger, ObjectState, WorkerReport
from tests.fixtures.postgres import inventory_rows

LEASE = timedelta(minutes=5)


async def test_reports_are_summed_and_the_latest_error_wins(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a")
    early = datetime(2026, 1, 1, tzinfo=UTC)
    await ledger.report_activity(
        mid, "a", WorkerReport(100, 40, retries=2, last_error="old", last_error_at=early)
    )
    await ledger.report_activity(
        mid,
        "b",
        WorkerReport(50, 10, retries=1, last_error="new", last_error_at=early + timedelta(1)),
    )
    # A later report of "a" replaces its totals (they are totals, not increments) and keeps
    # its last error when it has no newer one.
    await ledger.report_activity(mid, "a", WorkerReport(300, 0, retries=2))

    activity = await ledger.activity(mid)

    assert (activity.bytes_moved, activity.bytes_in_flight, activity.retries) == (350, 10, 3)
    assert activity.last_error == "new"
    assert activity.stalled.objects == 0


async def test_leases_of_an_owner_gone_silent_are_stalled(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a")
    await ledger.upsert_inventory(mid, inventory_rows(10, size=7), scan_id=1)
    await ledger.claim(mid, "silent", [ObjectState.PENDING], 3, LEASE)
    await ledger.claim(mid, "quiet-since-ever", [ObjectState.PENDING], 2, LEASE)
    await ledger.report_activity(mid, "silent", WorkerReport(bytes_in_flight=5))

    # Reported just now: alive, its in-flight bytes count.
    alive = await ledger.activity(mid)
    assert (alive.stalled.objects, alive.bytes_in_flight) == (0, 5)

    # Seen as if twenty seconds had passed: its three leases are stalled, and its in-flight
    # bytes no longer count; an owner that never reported is not judged.
    later = await ledger.activity(mid, alive_within=timedelta(0))
    assert (later.stalled.objects, later.stalled.bytes) == (3, 7 + 8 + 9)
    assert later.bytes_in_flight == 0


async def test_reports_go_with_their_migration(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a")
    await ledger.report_activity(mid, "a", WorkerReport(1, 1))
    await ledger.delete_migration(mid)
    again = await ledger.ensure_migration("ns/a")
    assert (await ledger.activity(again)).bytes_moved == 0
