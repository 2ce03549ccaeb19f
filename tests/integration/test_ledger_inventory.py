"""Inventory upserts against a real PostgreSQL: idempotent re-scans and change detection."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

from objmig.ledger import (
    InventoryResult,
    InventoryRow,
    Ledger,
    MigrationConflict,
    MigrationState,
    ObjectState,
    Problem,
    ScanRecord,
    StepResult,
)
from tests.fixtures.postgres import inventory_rows

LEASE = timedelta(minutes=5)


async def _verify_all(ledger: Ledger, migration_id: int) -> None:
    """Drive every pending row to verified, as a worker would."""
    rows = await ledger.claim(migration_id, "w", [ObjectState.PENDING], 10_000, LEASE)
    await ledger.record(
        "w",
        [
            StepResult(
                id=r.id,
                state=ObjectState.VERIFIED,
                target_etag=r.etag,
                source_checksum="sha256:aa",
                target_checksum="sha256:aa",
                increment_attempts=True,
            )
            for r in rows
        ],
    )


async def test_rescan_of_unchanged_listing_reports_all_unchanged(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a", "uid-1")
    rows = inventory_rows(1000)

    first = await ledger.upsert_inventory(mid, rows, scan_id=1)
    second = await ledger.upsert_inventory(mid, rows, scan_id=2)

    assert first == InventoryResult(new=1000, changed=0, unchanged=0)
    assert second == InventoryResult(new=0, changed=0, unchanged=1000)
    counts = await ledger.counts(mid)
    assert counts.state(ObjectState.PENDING).objects == 1000
    row = await ledger.find_object(mid, rows[0].key)
    assert row is not None
    assert row.last_seen_scan == 2
    assert row.state is ObjectState.PENDING
    assert row.target_key == rows[0].target_key


async def test_rescan_keeps_progress_of_unchanged_rows(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a")
    rows = inventory_rows(50)
    await ledger.upsert_inventory(mid, rows, scan_id=1)
    await _verify_all(ledger, mid)

    result = await ledger.upsert_inventory(mid, rows, scan_id=2)

    assert result == InventoryResult(new=0, changed=0, unchanged=50)
    counts = await ledger.counts(mid)
    assert counts.state(ObjectState.VERIFIED).objects == 50


async def test_changed_etag_sends_row_back_to_pending_with_cleared_fields(
    ledger: Ledger,
) -> None:
    mid = await ledger.ensure_migration("ns/a")
    rows = inventory_rows(100)
    await ledger.upsert_inventory(mid, rows, scan_id=1)
    await _verify_all(ledger, mid)
    await ledger.mark_cut_over(mid)
    changed = [dataclasses.replace(r, etag="new-etag", size=r.size + 1) for r in rows[:10]]

    result = await ledger.upsert_inventory(mid, changed + rows[10:], scan_id=2)

    assert result == InventoryResult(new=0, changed=10, unchanged=90)
    row = await ledger.find_object(mid, rows[0].key)
    assert row is not None
    assert row.state is ObjectState.PENDING
    assert (row.etag, row.size) == ("new-etag", rows[0].size + 1)
    assert row.attempts == 0
    assert row.target_etag is None
    assert row.source_checksum is None
    assert row.target_checksum is None
    assert row.verified_at is None
    assert row.cut_over_at is None
    untouched = await ledger.find_object(mid, rows[50].key)
    assert untouched is not None
    assert untouched.state is ObjectState.VERIFIED
    assert untouched.cut_over_at is not None
    counts = await ledger.counts(mid)
    assert counts.state(ObjectState.PENDING).objects == 10
    assert counts.state(ObjectState.VERIFIED).objects == 90


async def test_changed_last_modified_alone_counts_as_changed(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a")
    rows = inventory_rows(3)
    await ledger.upsert_inventory(mid, rows, scan_id=1)
    assert rows[1].last_modified is not None
    moved = dataclasses.replace(rows[1], last_modified=rows[1].last_modified + timedelta(1))

    result = await ledger.upsert_inventory(mid, [rows[0], moved, rows[2]], scan_id=2)

    assert result == InventoryResult(new=0, changed=1, unchanged=2)


async def test_deleted_rows_are_not_revived_by_a_rescan(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a")
    rows = inventory_rows(5)
    await ledger.upsert_inventory(mid, rows, scan_id=1)
    row = await ledger.find_object(mid, rows[0].key)
    assert row is not None
    await ledger.mark_deleted([row.id])

    result = await ledger.upsert_inventory(
        mid, [dataclasses.replace(rows[0], etag="other"), *rows[1:]], scan_id=2
    )

    assert result == InventoryResult(new=0, changed=0, unchanged=5)
    after = await ledger.get_object(row.id)
    assert after is not None
    assert after.state is ObjectState.DELETED
    assert after.etag == rows[0].etag
    assert after.last_seen_scan == 2


async def test_source_changed_row_with_new_attributes_returns_to_pending(
    ledger: Ledger,
) -> None:
    mid = await ledger.ensure_migration("ns/a")
    rows = inventory_rows(2)
    await ledger.upsert_inventory(mid, rows, scan_id=1)
    claimed = await ledger.claim(mid, "w", [ObjectState.PENDING], 2, LEASE)
    await ledger.record(
        "w",
        [
            StepResult(id=r.id, state=ObjectState.SOURCE_CHANGED, last_error="etag moved")
            for r in claimed
        ],
    )

    same = await ledger.upsert_inventory(mid, [rows[0]], scan_id=2)
    moved = await ledger.upsert_inventory(mid, [dataclasses.replace(rows[1], etag="v2")], scan_id=2)

    assert same == InventoryResult(unchanged=1)
    assert moved == InventoryResult(changed=1)
    first = await ledger.find_object(mid, rows[0].key)
    second = await ledger.find_object(mid, rows[1].key)
    assert first is not None
    assert second is not None
    assert first.state is ObjectState.SOURCE_CHANGED
    assert second.state is ObjectState.PENDING
    assert second.last_error is None


async def test_change_during_copy_drops_the_stale_workers_lease(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a")
    rows = inventory_rows(1)
    await ledger.upsert_inventory(mid, rows, scan_id=1)
    (claimed,) = await ledger.claim(mid, "w", [ObjectState.PENDING], 1, LEASE)

    await ledger.upsert_inventory(mid, [dataclasses.replace(rows[0], etag="v2")], scan_id=2)
    applied = await ledger.record("w", [StepResult(id=claimed.id, state=ObjectState.COPIED)])

    assert applied == 0
    row = await ledger.get_object(claimed.id)
    assert row is not None
    assert row.state is ObjectState.PENDING
    assert row.lease_owner is None


async def test_inventory_accepts_async_iterables_in_small_chunks(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a")
    rows = inventory_rows(103)

    async def listing() -> AsyncIterator[InventoryRow]:
        for row in rows:
            yield row

    first = await ledger.upsert_inventory(mid, listing(), scan_id=1, chunk_size=10)
    second = await ledger.upsert_inventory(mid, listing(), scan_id=2, chunk_size=7)

    assert first == InventoryResult(new=103)
    assert second == InventoryResult(unchanged=103)


async def test_a_listing_that_cannot_reach_its_store_fails_at_once_not_as_a_ledger_outage(
    ledger: Ledger,
) -> None:
    """A store refusing connections while its listing is merged is the listing's error: the
    ledger neither waits for itself nor reads the half-read listing again as if whole."""
    mid = await ledger.ensure_migration("ns/a")
    rows = inventory_rows(25)

    async def listing() -> AsyncIterator[InventoryRow]:
        for row in rows[:20]:
            yield row
        raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 9)")

    with pytest.raises(ConnectionRefusedError):
        async with asyncio.timeout(30):  # the ledger's own wait is 10 minutes
            await ledger.upsert_inventory(mid, listing(), scan_id=1, chunk_size=10)

    # Whatever chunks were written before the failure, a whole listing finds the rest.
    again = await ledger.upsert_inventory(mid, rows, scan_id=2)
    assert (again.new + again.unchanged, again.changed) == (25, 0)


async def test_duplicate_keys_in_one_listing_count_once(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a")
    rows = inventory_rows(3)

    result = await ledger.upsert_inventory(mid, rows + rows, scan_id=1)

    assert result == InventoryResult(new=3)


async def test_versions_of_one_key_are_separate_rows(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a")
    base = inventory_rows(1)[0]
    versions = [dataclasses.replace(base, version_id=v) for v in ("", "v1", "v2")]

    result = await ledger.upsert_inventory(mid, versions, scan_id=1)

    assert result == InventoryResult(new=3)
    row = await ledger.find_object(mid, base.key, "v2")
    assert row is not None
    assert row.version_id == "v2"


async def test_migrations_keep_separate_inventories(ledger: Ledger) -> None:
    a = await ledger.ensure_migration("ns/a")
    b = await ledger.ensure_migration("ns/b")
    rows = inventory_rows(10)

    await ledger.upsert_inventory(a, rows, scan_id=1)
    result = await ledger.upsert_inventory(b, rows, scan_id=1)

    assert result == InventoryResult(new=10)
    assert (await ledger.counts(a)).total.objects == 10
    assert (await ledger.counts(b)).total.objects == 10


async def test_ensure_migration_is_idempotent_and_guards_uid(ledger: Ledger) -> None:
    first = await ledger.ensure_migration("ns/a", "uid-1")
    again = await ledger.ensure_migration("ns/a", "uid-1")
    without_uid = await ledger.ensure_migration("ns/a")

    assert first == again == without_uid
    assert await ledger.find_migration("ns/a") == first
    assert await ledger.find_migration("ns/missing") is None
    with pytest.raises(MigrationConflict, match="uid-1"):
        await ledger.ensure_migration("ns/a", "uid-2")


async def test_delete_migration_removes_rows_and_counts(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a")
    await ledger.upsert_inventory(mid, inventory_rows(20), scan_id=1)

    assert await ledger.delete_migration(mid) is True
    assert await ledger.find_migration("ns/a") is None
    assert (await ledger.counts(mid)).total.objects == 0
    again = await ledger.ensure_migration("ns/a")
    await ledger.upsert_inventory(again, inventory_rows(5), scan_id=1)
    assert (await ledger.counts(again)).total.objects == 5
    assert await ledger.delete_migration(mid) is False


async def test_migration_state_sections_merge_shallowly(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a")

    await ledger.update_state(mid, scan=ScanRecord(id=1), paused=Problem(reason="P"))
    merged = await ledger.update_state(mid, paused=None, generation=3)

    assert merged == MigrationState(scan=ScanRecord(id=1), generation=3)
    assert await ledger.get_state(mid) == merged
    (listed,) = await ledger.list_migrations()
    assert MigrationState.model_validate(listed.state) == merged


async def test_first_scan_with_a_key_repeated_across_chunks_merges_it(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a")
    rows = inventory_rows(10)
    repeated = dataclasses.replace(rows[2], etag="listed-again")

    result = await ledger.upsert_inventory(mid, [*rows, repeated], scan_id=1, chunk_size=4)

    assert result == InventoryResult(new=10, changed=1, unchanged=0)
    row = await ledger.find_object(mid, rows[2].key)
    assert row is not None
    assert row.etag == "listed-again"


async def test_concurrent_first_scans_of_one_migration_both_succeed(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a")
    rows = inventory_rows(3000)

    results = await asyncio.gather(
        ledger.upsert_inventory(mid, rows[:2000], scan_id=1, chunk_size=250),
        ledger.upsert_inventory(mid, rows[1000:], scan_id=1, chunk_size=250),
    )

    assert sum(r.new for r in results) == 3000
    assert sum(r.total for r in results) == 4000
    assert (await ledger.counts(mid)).total.objects == 3000


async def test_a_failing_chunk_raises_its_own_error_and_stops_the_scan(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a")
    rows = inventory_rows(50)
    rows[25] = dataclasses.replace(rows[25], size=-1)  # violates the size CHECK

    with pytest.raises(asyncpg.CheckViolationError):
        await ledger.upsert_inventory(mid, rows, scan_id=1, chunk_size=10, parallelism=3)

    # The pool is intact and a corrected listing converges.
    rows[25] = inventory_rows(50)[25]
    await ledger.upsert_inventory(mid, rows, scan_id=2, chunk_size=10, parallelism=3)
    assert (await ledger.counts(mid)).total.objects == 50


async def test_parallel_and_sequential_chunks_agree(ledger: Ledger) -> None:
    a = await ledger.ensure_migration("ns/a")
    b = await ledger.ensure_migration("ns/b")
    rows = inventory_rows(500)
    moved = [dataclasses.replace(r, etag="v2") if i % 7 == 0 else r for i, r in enumerate(rows)]

    for mid, parallelism in ((a, 1), (b, 4)):
        first = await ledger.upsert_inventory(mid, rows, 1, chunk_size=40, parallelism=parallelism)
        second = await ledger.upsert_inventory(
            mid, moved, 2, chunk_size=40, parallelism=parallelism
        )
        assert first == InventoryResult(new=500)
        assert second == InventoryResult(changed=72, unchanged=428)


async def test_a_watched_inventory_lands_in_doubling_chunks_each_announced(
    ledger: Ledger,
) -> None:
    migration_id = await ledger.ensure_migration("watched", "")
    announcements = 0

    async def listing() -> AsyncIterator[InventoryRow]:
        for row in inventory_rows(3_500):
            yield row

    async def count() -> int:
        counts = await ledger.counts(migration_id)
        return counts.state(ObjectState.PENDING).objects

    def announced() -> None:
        nonlocal announcements
        announcements += 1

    result = await ledger.upsert_inventory(migration_id, listing(), 1, on_chunk=announced)

    # 1,000 + 2,000 + the last 500, announced once each (unwatched: one chunk of 3,500).
    assert announcements == 3
    assert result.new == 3_500
    assert await count() == 3_500
