"""Query plans of the ledger's hot statements once PostgreSQL has statistics.

A fresh table has none, and every plan is fine; a ledger that has served a migration has
statistics taken while nothing was leased, and those once made each result batch quadratic
and each claim of a new migration sort its whole queue (both 5x slower in a benchmark's
second run). These tests build that situation and read the plans PostgreSQL chooses.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from objmig.ledger import Ledger, ObjectState, StepResult
from objmig.ledger.leases import _claim_sql, _record_sql
from tests.fixtures.postgres import inventory_rows

LEASE = timedelta(minutes=5)


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += _nodes(child)
    return found


async def _explain(ledger: Ledger, sql: str, *args: object, analyze: bool) -> list[dict[str, Any]]:
    """The plan's nodes; with ``analyze`` the statement runs, in a transaction rolled back."""
    options = "ANALYZE, FORMAT JSON" if analyze else "FORMAT JSON"
    async with ledger._pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            document = await conn.fetchval(f"EXPLAIN ({options}) {sql}", *args)
        finally:
            await transaction.rollback()
    return _nodes(json.loads(document)[0]["Plan"])


async def _reltuples(ledger: Ledger) -> float:
    return float(
        await ledger._pool.fetchval("SELECT reltuples FROM pg_class WHERE relname = 'objects'")
    )


async def test_an_inventory_load_refreshes_statistics_and_claims_use_the_claim_index(
    ledger: Ledger,
) -> None:
    first = await ledger.ensure_migration("first")
    await ledger.upsert_inventory(first, inventory_rows(20_000), scan_id=1)
    assert await _reltuples(ledger) == 20_000
    # The first migration runs to the end, and autovacuum analyses the table: the
    # statistics know no pending row.
    while rows := await ledger.claim(first, "worker", [ObjectState.PENDING], 5_000, LEASE):
        await ledger.record(
            "worker", [StepResult(id=row.id, state=ObjectState.VERIFIED) for row in rows]
        )
    await ledger._pool.execute("ANALYZE objects")

    small = await ledger.ensure_migration("small")
    await ledger.upsert_inventory(small, inventory_rows(10), scan_id=1)
    assert await _reltuples(ledger) == 20_000, "10 rows are not worth an ANALYZE"

    second = await ledger.ensure_migration("second")
    await ledger.upsert_inventory(second, inventory_rows(5_000), scan_id=1)
    assert await _reltuples(ledger) == 25_010

    # Without statistics for "second", the planner took its queue for one row and read it
    # through objects_updated_idx, sorting every pending row on each claim.
    common = (second, str(ObjectState.PENDING), 100, "owner", LEASE)
    for sql, args in ((_claim_sql(False), common), (_claim_sql(True), (*common, None, 2_500))):
        nodes = await _explain(ledger, sql, *args, analyze=False)
        indexes = {node.get("Index Name") for node in nodes}
        assert "objects_claim_idx" in indexes
        assert "objects_updated_idx" not in indexes


async def test_recording_a_batch_reads_its_arguments_once(ledger: Ledger) -> None:
    migration = await ledger.ensure_migration("m")
    await ledger.upsert_inventory(migration, inventory_rows(20_000), scan_id=1)
    # Statistics taken while nothing is leased (as the load and autovacuum take them): no
    # row has an owner.
    await ledger._pool.execute("ANALYZE objects")
    rows = await ledger.claim(migration, "worker", [ObjectState.PENDING], 500, LEASE)
    assert len(rows) == 500
    ids = [row.id for row in rows]

    nodes = await _explain(
        ledger,
        _record_sql((), True, False),
        "worker",
        ids,
        [str(ObjectState.COPIED)] * len(ids),
        [True] * len(ids),
        analyze=True,
    )
    scans = [node for node in nodes if node["Node Type"] == "Function Scan"]
    assert scans, "the batch is read with unnest()"
    # Quadratic before: a sequential scan for the owner's rows, and unnest() re-run for
    # each of them.
    assert [node["Actual Loops"] for node in scans] == [1]

    # And the real thing applies every result.
    applied = await ledger.record(
        "worker", [StepResult(id=i, state=ObjectState.COPIED, increment_attempts=True) for i in ids]
    )
    assert applied == 500
