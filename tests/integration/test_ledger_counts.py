"""Counts and the status window against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from datetime import timedelta

import pytest

from objmig.ledger import Counts, Ledger, ObjectState, StateCount, StepResult
from objmig.ledger import reads as ledger_reads
from tests.fixtures.postgres import inventory_rows
from tests.support.ledger_clock import let_time_pass

LEASE = timedelta(minutes=5)


async def _scan_counts(ledger: Ledger, migration_id: int) -> dict[ObjectState, StateCount]:
    """The ground truth: a full GROUP BY over the objects table."""
    records = await ledger.pool.fetch(
        "SELECT state, count(*) AS n, sum(size) AS b FROM objects "
        "WHERE migration_id = $1 GROUP BY state",
        migration_id,
    )
    return {ObjectState(r["state"]): StateCount(r["n"], int(r["b"])) for r in records}


async def test_counts_are_exact_per_state_with_bytes_and_in_flight(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a")
    rows = inventory_rows(10, size=100)  # sizes 100..109
    await ledger.upsert_inventory(mid, rows, scan_id=1)
    claimed = await ledger.claim(mid, "w", [ObjectState.PENDING], 6, LEASE)
    await ledger.record(
        "w",
        [StepResult(id=r.id, state=ObjectState.VERIFIED) for r in claimed[:2]]
        + [StepResult(id=r.id, state=ObjectState.FAILED) for r in claimed[2:3]]
        + [StepResult(id=r.id, state=ObjectState.SKIPPED, skip_reason="x") for r in claimed[3:4]],
    )
    # claimed[4:6] stay leased: in flight while still pending.

    counts = await ledger.counts(mid)

    sizes = {r.key: r.size for r in rows}
    assert counts.by_state == {
        ObjectState.VERIFIED: StateCount(2, sizes[claimed[0].key] + sizes[claimed[1].key]),
        ObjectState.FAILED: StateCount(1, sizes[claimed[2].key]),
        ObjectState.SKIPPED: StateCount(1, sizes[claimed[3].key]),
        ObjectState.PENDING: StateCount(
            6, sum(sizes.values()) - sum(sizes[c.key] for c in claimed[:4])
        ),
    }
    leased = StateCount(2, sizes[claimed[4].key] + sizes[claimed[5].key])
    assert counts.in_flight == leased
    assert counts.in_flight_by_state == {ObjectState.PENDING: leased}
    assert counts.total == StateCount(10, sum(sizes.values()))


async def test_counts_stop_showing_expired_leases_in_flight(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a")
    await ledger.upsert_inventory(mid, inventory_rows(3), scan_id=1)
    await ledger.claim(mid, "w", [ObjectState.PENDING], 3, timedelta(minutes=1))
    assert (await ledger.counts(mid)).in_flight.objects == 3

    await let_time_pass(ledger, timedelta(minutes=2))

    assert (await ledger.counts(mid)).in_flight == StateCount()


async def test_counts_of_an_unknown_migration_are_zero(ledger: Ledger) -> None:
    assert await ledger.counts(12345) == Counts()


@pytest.mark.parametrize("compact_after", [0, 10_000])
async def test_counts_match_a_full_scan_after_random_operations(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch, compact_after: int
) -> None:
    # 0: fold the delta rows on every counts() call; 10_000: never fold.
    monkeypatch.setattr(ledger_reads, "COMPACT_DELTAS_AFTER", compact_after)
    rng = random.Random(7)
    mid = await ledger.ensure_migration("ns/a")
    other = await ledger.ensure_migration("ns/other")
    rows = inventory_rows(400)
    await ledger.upsert_inventory(mid, rows, scan_id=1)
    await ledger.upsert_inventory(other, rows[:50], scan_id=1)
    states = list(ObjectState)
    for step in range(40):
        action = rng.choice(["claim_record", "rescan", "delete", "cutover"])
        if action == "claim_record":
            src = rng.sample(states, 2)
            claimed = await ledger.claim(mid, "w", src, rng.randint(1, 40), LEASE)
            await ledger.record(
                "w", [StepResult(id=r.id, state=rng.choice(states)) for r in claimed]
            )
        elif action == "rescan":
            picked = rng.sample(rows, 60)
            await ledger.upsert_inventory(
                mid,
                [dataclasses.replace(r, etag=f"e{step}", size=r.size + step) for r in picked],
                scan_id=step + 2,
            )
        elif action == "delete":
            ids = [r.id for r in await ledger.claim(mid, "d", states, 5, LEASE)]
            await ledger.mark_deleted(ids)
        else:
            await ledger.mark_cut_over(mid)
        counts = await ledger.counts(mid)
        assert counts.by_state == await _scan_counts(ledger, mid), (step, action)
    assert (await ledger.counts(other)).by_state == await _scan_counts(ledger, other)


async def test_counts_stay_exact_under_concurrent_writers(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a")
    await ledger.upsert_inventory(mid, inventory_rows(2000), scan_id=1)

    async def worker(name: str) -> None:
        while rows := await ledger.claim(mid, name, [ObjectState.PENDING], 20, LEASE):
            await ledger.record(name, [StepResult(id=r.id, state=ObjectState.COPIED) for r in rows])
            await ledger.counts(mid)  # compaction racing the writers

    await asyncio.gather(*(worker(f"w{i}") for i in range(6)))

    counts = await ledger.counts(mid)
    assert counts.by_state == await _scan_counts(ledger, mid)
    assert counts.state(ObjectState.COPIED).objects == 2000


async def test_window_lists_failed_first_then_in_flight_and_reports_truncation(
    ledger: Ledger,
) -> None:
    mid = await ledger.ensure_migration("ns/a")
    await ledger.upsert_inventory(mid, inventory_rows(50), scan_id=1)
    bad = await ledger.claim(mid, "w", [ObjectState.PENDING], 5, LEASE)
    await ledger.record(
        "w",
        [StepResult(id=r.id, state=ObjectState.FAILED, last_error="boom") for r in bad[:3]]
        + [StepResult(id=r.id, state=ObjectState.SOURCE_CHANGED) for r in bad[3:]],
    )
    done = await ledger.claim(mid, "w", [ObjectState.PENDING], 10, LEASE)
    await ledger.record("w", [StepResult(id=r.id, state=ObjectState.VERIFIED) for r in done])
    left = await ledger.claim(mid, "w", [ObjectState.PENDING], 6, LEASE)
    await ledger.record(
        "w", [StepResult(id=r.id, state=ObjectState.SKIPPED, skip_reason="Why") for r in left]
    )
    busy = await ledger.claim(mid, "w", [ObjectState.PENDING], 4, LEASE)

    rows, truncated = await ledger.window(mid, 12)

    assert truncated is True
    assert len(rows) == 12
    assert {r.id for r in rows[:5]} == {r.id for r in bad}
    assert {r.id for r in rows[5:9]} == {r.id for r in busy}
    # Then objects left alone, with their reasons; never the verified (or pending) ones.
    assert all(r.state is ObjectState.SKIPPED for r in rows[9:])


async def test_window_leaves_out_verified_and_pending_objects(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a")
    await ledger.upsert_inventory(mid, inventory_rows(20), scan_id=1)
    done = await ledger.claim(mid, "w", [ObjectState.PENDING], 15, LEASE)
    await ledger.record("w", [StepResult(id=r.id, state=ObjectState.VERIFIED) for r in done])
    assert await ledger.window(mid, 10) == ([], False)
    assert await ledger.window(mid, 0) == ([], False)

    bad = await ledger.claim(mid, "w", [ObjectState.PENDING], 2, LEASE)
    await ledger.record("w", [StepResult(id=r.id, state=ObjectState.FAILED) for r in bad])
    rows, truncated = await ledger.window(mid, 10)

    assert ([r.id for r in rows], truncated) == ([r.id for r in reversed(bad)], False)
    assert await ledger.window(mid, 0) == ([], True)
