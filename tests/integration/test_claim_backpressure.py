"""A worker whose source re-checks fall behind its copies stops claiming: objects waiting
for their batched re-check free their slots only up to `parked_room`, so the leases a
worker holds (and renews, and strands for a lease's length if its pod is killed) stay
bounded however slow the listings are."""

from __future__ import annotations

import asyncio

from objmig.engine.claim_loop import ClaimLoop
from objmig.engine.context import MigrationContext
from objmig.ledger import InventoryRow, Ledger, ObjectState
from objmig.storage.endpoint import Endpoint
from tests.fixtures.s3 import S3Seeder
from tests.integration.engine_support import migration, secrets_for
from tests.support.s3proxy import Delay, S3FaultProxy

OBJECTS = 300
PARKED_ROOM = 20
CONCURRENCY = 2


async def test_a_worker_whose_re_checks_fall_behind_holds_a_bounded_number_of_rows(
    ledger: Ledger, s3_seed: S3Seeder, s3_proxy: S3FaultProxy, proxy_endpoint: Endpoint
) -> None:
    source, target = await s3_seed.bucket(), await s3_seed.bucket()
    gate = asyncio.Semaphore(16)

    async def put(index: int) -> InventoryRow:
        async with gate:
            seeded = await s3_seed.put_object(source, f"k/{index:04d}", 64)
        return InventoryRow(key=seeded.key, size=seeded.size, etag=seeded.etag)

    rows = await asyncio.gather(*(put(i) for i in range(OBJECTS)))
    context = MigrationContext.resolve(
        migration(proxy_endpoint, source, target, copy={"concurrency": CONCURRENCY}),
        secrets_for(proxy_endpoint),
    )
    migration_id = await ledger.ensure_migration(context.name, "")
    await ledger.upsert_inventory(migration_id, list(rows), 1)
    # Slow re-checks (listings of the source after a key): a second each, while a copy of
    # 64 bytes takes milliseconds. Only the pace matters here, no order of events.
    s3_proxy.add_rule(Delay(1.0), method="GET", bucket=source, query={"start-after": None})

    worker = ClaimLoop(ledger, migration_id, context, parked_room=PARKED_ROOM)
    stats = await asyncio.wait_for(worker.run(), timeout=300)

    assert stats.results[ObjectState.VERIFIED.value] == OBJECTS
    slots = 2 * CONCURRENCY
    # In flight: at most the slots plus the parked room; claimed ahead: twice the slots.
    assert stats.peak_held <= PARKED_ROOM + 3 * slots, stats.peak_held
    counts = await ledger.counts(migration_id)
    assert counts.state(ObjectState.VERIFIED).objects == OBJECTS
