"""Claims, leases and results against a real PostgreSQL, including concurrent claimers."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from objmig.ledger import Ledger, ObjectState, StepResult
from tests.fixtures.postgres import inventory_rows
from tests.support.ledger_clock import let_time_pass

LEASE = timedelta(minutes=5)
# A lease the tests let run out (see let_time_pass): long enough that it never runs out on
# its own between two statements of a test, however busy the machine.
SHORT = timedelta(minutes=1)
# Claimers of the concurrency test: 8 tasks here, 2 in each of 2 processes.
TASKS, PROCESSES, TASKS_PER_PROCESS = 8, 2, 2
CLAIMERS = TASKS + PROCESSES * TASKS_PER_PROCESS
# A guard against a claimer that never arrives, not a pace: the barrier waits for events.
BARRIER_TIMEOUT = 300.0


async def _claim_until_empty(
    ledger: Ledger,
    migration_id: int,
    owner: str,
    batch: int,
    everyone_claimed: Callable[[], Awaitable[object]],
) -> list[int]:
    """Claim batches until nothing is left, recording each row as copied; return ids.

    After its first batch a claimer waits until every claimer has one, so all of them
    compete however long the processes take to start.
    """
    mine: list[int] = []
    while True:
        rows = await ledger.claim(migration_id, owner, [ObjectState.PENDING], batch, LEASE)
        if not rows:
            return mine
        first = not mine
        mine.extend(r.id for r in rows)
        applied = await ledger.record(
            owner,
            [StepResult(id=r.id, state=ObjectState.COPIED, increment_attempts=True) for r in rows],
        )
        assert applied == len(rows)
        if first:
            await everyone_claimed()


async def _process_main(
    dsn: str, migration_id: int, name: str, barrier: threading.Barrier
) -> list[int]:
    ledger = await Ledger.connect(dsn, min_size=1, max_size=4)

    async def everyone_claimed() -> None:
        await asyncio.to_thread(barrier.wait, BARRIER_TIMEOUT)

    try:
        # Two tasks per process: cross-process and in-process contention at once.
        results = await asyncio.gather(
            *(
                _claim_until_empty(ledger, migration_id, f"{name}-{i}", 25, everyone_claimed)
                for i in range(TASKS_PER_PROCESS)
            )
        )
        return [i for ids in results for i in ids]
    finally:
        await ledger.close()


def claim_in_process(
    dsn: str, migration_id: int, name: str, barrier: threading.Barrier
) -> list[int]:
    """Entry point of a spawned claimer process (module level so spawn can import it)."""
    return asyncio.run(_process_main(dsn, migration_id, name, barrier))


async def test_concurrent_tasks_and_processes_claim_every_row_exactly_once(
    ledger: Ledger, database_url: str
) -> None:
    total = 6000
    mid = await ledger.ensure_migration("ns/a")
    await ledger.upsert_inventory(mid, inventory_rows(total), scan_id=1)
    loop = asyncio.get_running_loop()
    context = multiprocessing.get_context("spawn")
    with (
        context.Manager() as manager,
        ProcessPoolExecutor(max_workers=PROCESSES, mp_context=context) as pool,
        # The tasks here wait at the barrier in threads of their own: the loop's default
        # executor may have fewer threads than there are tasks.
        ThreadPoolExecutor(max_workers=TASKS) as waiting,
    ):
        barrier = manager.Barrier(CLAIMERS)

        def everyone_claimed() -> Awaitable[object]:
            return loop.run_in_executor(waiting, barrier.wait, BARRIER_TIMEOUT)

        processes = [
            loop.run_in_executor(pool, claim_in_process, database_url, mid, f"proc{i}", barrier)
            for i in range(PROCESSES)
        ]
        tasks = [
            _claim_until_empty(ledger, mid, f"task{i}", 25, everyone_claimed) for i in range(TASKS)
        ]
        per_claimer = await asyncio.gather(*tasks, *processes)

    everything = [i for ids in per_claimer for i in ids]
    assert len(everything) == total
    assert len(set(everything)) == total
    # Every claimer got something, so they really did compete.
    assert all(per_claimer), [len(ids) for ids in per_claimer]
    async with ledger.pool.acquire() as conn:
        attempts = await conn.fetch(
            "SELECT attempts, state, count(*) AS n FROM objects GROUP BY attempts, state"
        )
    assert [(r["attempts"], r["state"], r["n"]) for r in attempts] == [(1, "copied", total)]


async def test_claim_skips_rows_leased_to_another_owner(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a")
    await ledger.upsert_inventory(mid, inventory_rows(10), scan_id=1)

    first = await ledger.claim(mid, "a", [ObjectState.PENDING], 6, LEASE)
    second = await ledger.claim(mid, "b", [ObjectState.PENDING], 6, LEASE)
    third = await ledger.claim(mid, "c", [ObjectState.PENDING], 6, LEASE)

    assert len(first) == 6
    assert len(second) == 4
    assert third == []
    assert {r.id for r in first}.isdisjoint({r.id for r in second})
    assert [r.id for r in first] == sorted(r.id for r in first)
    assert all(r.lease_owner == "a" and r.lease_expires_at is not None for r in first)


async def test_expired_lease_returns_rows_to_other_claimers(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a")
    await ledger.upsert_inventory(mid, inventory_rows(5), scan_id=1)
    lost = await ledger.claim(mid, "dead", [ObjectState.PENDING], 5, SHORT)
    assert await ledger.claim(mid, "other", [ObjectState.PENDING], 5, LEASE) == []

    await let_time_pass(ledger, 2 * SHORT)
    taken = await ledger.claim(mid, "other", [ObjectState.PENDING], 5, LEASE)

    assert {r.id for r in taken} == {r.id for r in lost}
    assert all(r.lease_owner == "other" for r in taken)


async def test_return_expired_leases_clears_only_expired_ones(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a")
    await ledger.upsert_inventory(mid, inventory_rows(6), scan_id=1)
    await ledger.claim(mid, "short", [ObjectState.PENDING], 2, SHORT)
    await ledger.claim(mid, "long", [ObjectState.PENDING], 2, LEASE)
    await let_time_pass(ledger, 2 * SHORT)

    returned = await ledger.return_expired_leases(mid)

    assert returned == 2
    counts = await ledger.counts(mid)
    assert counts.in_flight.objects == 2


async def test_record_ignores_results_from_an_owner_who_lost_the_lease(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a")
    await ledger.upsert_inventory(mid, inventory_rows(1), scan_id=1)
    (row,) = await ledger.claim(mid, "slow", [ObjectState.PENDING], 1, SHORT)
    await let_time_pass(ledger, 2 * SHORT)
    (again,) = await ledger.claim(mid, "fast", [ObjectState.PENDING], 1, LEASE)
    assert again.id == row.id

    late = await ledger.record(
        "slow", [StepResult(id=row.id, state=ObjectState.FAILED, last_error="timeout")]
    )
    on_time = await ledger.record(
        "fast", [StepResult(id=row.id, state=ObjectState.COPIED, target_etag="t")]
    )

    assert late == 0
    assert on_time == 1
    final = await ledger.get_object(row.id)
    assert final is not None
    assert final.state is ObjectState.COPIED
    assert final.last_error is None
    assert final.lease_owner is None
    assert await ledger.heartbeat("slow", [row.id], LEASE) == set()


async def test_record_after_own_expired_lease_still_applies_if_nobody_claimed(
    ledger: Ledger,
) -> None:
    mid = await ledger.ensure_migration("ns/a")
    await ledger.upsert_inventory(mid, inventory_rows(1), scan_id=1)
    (row,) = await ledger.claim(mid, "w", [ObjectState.PENDING], 1, SHORT)
    await let_time_pass(ledger, 2 * SHORT)

    applied = await ledger.record("w", [StepResult(id=row.id, state=ObjectState.COPIED)])

    assert applied == 1


async def test_heartbeat_extends_only_the_owners_leases(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a")
    await ledger.upsert_inventory(mid, inventory_rows(4), scan_id=1)
    mine = await ledger.claim(mid, "me", [ObjectState.PENDING], 2, SHORT)
    theirs = await ledger.claim(mid, "them", [ObjectState.PENDING], 2, LEASE)

    held = await ledger.heartbeat("me", [r.id for r in mine + theirs], LEASE)
    # Past the lease "me" claimed with, well within the one the heartbeat gave.
    await let_time_pass(ledger, 2 * SHORT)

    assert held == {r.id for r in mine}
    assert await ledger.claim(mid, "x", [ObjectState.PENDING], 4, LEASE) == []


async def test_not_before_delays_the_next_claim(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a")
    await ledger.upsert_inventory(mid, inventory_rows(2), scan_id=1)
    rows = await ledger.claim(mid, "w", [ObjectState.PENDING], 2, LEASE)
    retry_at = datetime.now(UTC) + SHORT
    await ledger.record(
        "w",
        [
            StepResult(
                id=rows[0].id,
                state=ObjectState.PENDING,
                not_before=retry_at,
                last_error="503 SlowDown",
                error_code="SlowDown",
                increment_attempts=True,
            )
        ],
    )
    await ledger.release("w", [rows[1].id])

    now = await ledger.claim(mid, "w2", [ObjectState.PENDING], 2, LEASE)
    await let_time_pass(ledger, 2 * SHORT)
    later = await ledger.claim(mid, "w3", [ObjectState.PENDING], 2, LEASE)

    assert [r.id for r in now] == [rows[1].id]
    assert [r.id for r in later] == [rows[0].id]
    assert later[0].attempts == 1
    assert later[0].error_code == "SlowDown"


async def test_release_with_not_before_postpones_the_rows(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a")
    await ledger.upsert_inventory(mid, inventory_rows(3), scan_id=1)
    rows = await ledger.claim(mid, "w", [ObjectState.PENDING], 3, LEASE)

    released = await ledger.release(
        "w", [r.id for r in rows], not_before=datetime.now(UTC) + timedelta(hours=1)
    )
    not_mine = await ledger.release("w", [r.id for r in rows])

    assert released == 3
    assert not_mine == 0
    assert await ledger.claim(mid, "w", [ObjectState.PENDING], 3, LEASE) == []


async def test_claim_takes_states_in_the_given_priority(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a")
    await ledger.upsert_inventory(mid, inventory_rows(6), scan_id=1)
    copied = await ledger.claim(mid, "w", [ObjectState.PENDING], 2, LEASE)
    await ledger.record("w", [StepResult(id=r.id, state=ObjectState.COPIED) for r in copied])

    rows = await ledger.claim(mid, "v", [ObjectState.COPIED, ObjectState.PENDING], 3, LEASE)

    assert [r.state for r in rows] == [
        ObjectState.COPIED,
        ObjectState.COPIED,
        ObjectState.PENDING,
    ]


async def test_record_accumulates_targets_and_overwrites_errors(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a")
    await ledger.upsert_inventory(mid, inventory_rows(1), scan_id=1)
    (row,) = await ledger.claim(mid, "w", [ObjectState.PENDING], 1, LEASE)
    await ledger.record(
        "w",
        [
            StepResult(
                id=row.id,
                state=ObjectState.COPIED,
                target_etag="te",
                target_version_id="tv",
                source_checksum="sha256:00",
                last_error="first try failed",
                increment_attempts=True,
            )
        ],
    )
    (row,) = await ledger.claim(mid, "w", [ObjectState.COPIED], 1, LEASE)

    await ledger.record(
        "w",
        [
            StepResult(
                id=row.id,
                state=ObjectState.VERIFIED,
                target_checksum="sha256:00",
                increment_attempts=True,
            )
        ],
    )

    final = await ledger.get_object(row.id)
    assert final is not None
    assert final.state is ObjectState.VERIFIED
    assert (final.target_etag, final.target_version_id) == ("te", "tv")
    assert (final.source_checksum, final.target_checksum) == ("sha256:00", "sha256:00")
    assert final.last_error is None
    assert final.attempts == 2
    assert final.verified_at is not None


async def test_cut_over_marks_and_rollback_clears(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a")
    await ledger.upsert_inventory(mid, inventory_rows(4), scan_id=1)
    rows = await ledger.claim(mid, "w", [ObjectState.PENDING], 3, LEASE)
    await ledger.record("w", [StepResult(id=r.id, state=ObjectState.VERIFIED) for r in rows])

    assert await ledger.mark_cut_over(mid) == 3
    assert await ledger.mark_cut_over(mid) == 0
    assert await ledger.clear_cut_over(mid) == 3
    final = await ledger.get_object(rows[0].id)
    assert final is not None
    assert final.cut_over_at is None


async def test_database_rejects_half_set_lease(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a")
    await ledger.upsert_inventory(mid, inventory_rows(1), scan_id=1)

    with pytest.raises(asyncpg.CheckViolationError):
        await ledger.pool.execute("UPDATE objects SET lease_owner = 'x'")


async def test_claim_sweeps_forward_and_wraps_around_for_released_rows(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a")
    await ledger.upsert_inventory(mid, inventory_rows(10), scan_id=1)
    first = await ledger.claim(mid, "w", [ObjectState.PENDING], 3, LEASE)
    await ledger.release("w", [first[0].id])  # now behind the sweep position

    second = await ledger.claim(mid, "w", [ObjectState.PENDING], 3, LEASE)
    rest = await ledger.claim(mid, "w", [ObjectState.PENDING], 10, LEASE)

    ids = sorted(r.id for r in first)
    assert [r.id for r in second] == [ids[-1] + 1, ids[-1] + 2, ids[-1] + 3]
    # The end of the sweep wraps around to the released row in the same call.
    assert len(rest) == 5
    assert first[0].id in {r.id for r in rest}
    assert await ledger.claim(mid, "w", [ObjectState.PENDING], 10, LEASE) == []


async def test_a_second_ledger_on_the_same_database_claims_what_is_left(
    ledger: Ledger, database_url: str
) -> None:
    mid = await ledger.ensure_migration("ns/a")
    await ledger.upsert_inventory(mid, inventory_rows(6), scan_id=1)
    taken = await ledger.claim(mid, "a", [ObjectState.PENDING], 4, LEASE)
    other = await Ledger.connect(database_url, min_size=1, max_size=2)
    try:
        rest = await other.claim(mid, "b", [ObjectState.PENDING], 10, LEASE)
    finally:
        await other.close()

    assert len(rest) == 2
    assert {r.id for r in rest}.isdisjoint({r.id for r in taken})


async def test_a_claim_bounded_by_bytes_leaves_large_objects_to_other_workers(
    ledger: Ledger,
) -> None:
    mid = await ledger.ensure_migration("ns/a")
    large = inventory_rows(5, prefix="large/", size=1000)
    small = inventory_rows(20, prefix="small/", size=1)
    await ledger.upsert_inventory(mid, large + small, scan_id=1)

    # Five workers, each allowed its share: about a thousand bytes. The first row of a claim
    # is always taken; the next large one does not fit and stays for the next worker.
    claims = [
        await ledger.claim(mid, f"w{i}", [ObjectState.PENDING], 64, LEASE, max_bytes=1004)
        for i in range(5)
    ]

    assert [[row.key for row in rows] for rows in claims] == [[f"large/{i:08d}"] for i in range(5)]
    # Nothing was left leased by the rows given back: the small ones go in one claim.
    rest = await ledger.claim(mid, "w5", [ObjectState.PENDING], 64, LEASE, max_bytes=1000)
    assert len(rest) == 20
    counts = await ledger.counts(mid)
    assert counts.in_flight.objects == 25


async def test_a_claim_without_a_byte_bound_takes_its_count(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a")
    await ledger.upsert_inventory(mid, inventory_rows(5, size=10**9), scan_id=1)
    rows = await ledger.claim(mid, "w", [ObjectState.PENDING], 64, LEASE)
    assert len(rows) == 5


async def test_an_attempt_ended_by_an_expired_lease_is_counted(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a")
    await ledger.upsert_inventory(mid, inventory_rows(3), scan_id=1)
    # A worker is killed holding two rows: its leases run out.
    await ledger.claim(mid, "killed", [ObjectState.PENDING], 2, timedelta(0))
    # Another takes them over, and gives one back without a result (it was stopped).
    taken = await ledger.claim(mid, "next", [ObjectState.PENDING], 3, LEASE)
    assert sorted(row.attempts for row in taken) == [0, 1, 1]
    await ledger.release("next", [taken[0].id])
    again = await ledger.claim(mid, "third", [ObjectState.PENDING], 1, LEASE)
    assert again[0].attempts == taken[0].attempts, "a row given back was no interrupted attempt"
    # Leases of a worker known dead end at once, counted the same way.
    assert await ledger.expire_leases(mid, ["next", "third"]) == 3
    rows = {row.id: row async for row in ledger.iter_rows(mid)}
    assert sorted(row.attempts for row in rows.values()) == [1, 2, 2]


async def test_a_plan_is_recorded_only_while_the_migration_is_a_dry_run(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a")
    await ledger.upsert_inventory(mid, inventory_rows(4), scan_id=1)
    await ledger.update_state(mid, dry_run=True)
    rows = await ledger.claim(mid, "planner", [ObjectState.PENDING], 4, LEASE)
    plan = [StepResult(id=r.id, state=ObjectState.SKIPPED, skip_reason="PlanCopy") for r in rows]

    assert await ledger.record("planner", plan[:2], only_while_dry_run=True) == 2
    # The real run begins while the planner still holds two rows: its plan no longer applies.
    await ledger.update_state(mid, dry_run=False)
    assert await ledger.record("planner", plan[2:], only_while_dry_run=True) == 0
    assert await ledger.release("planner", [r.id for r in rows[2:]]) == 2
    counts = await ledger.counts(mid)
    assert (
        counts.state(ObjectState.SKIPPED).objects,
        counts.state(ObjectState.PENDING).objects,
    ) == (2, 2)
