"""A local run copies while its scan is still listing: workers take rows as each batch of
the inventory lands, wait (without polling) while more may come, finish once the scan has
ended, and a scan that fails stops them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import pytest

from objmig.engine.claim_loop import Arrivals, ClaimLoop
from objmig.engine.context import MigrationContext
from objmig.ledger import InventoryRow, Ledger, ObjectState
from objmig.storage.endpoint import Endpoint
from tests.fixtures.s3 import S3Backend, S3Seeder
from tests.integration.engine_support import keys_of, migration, run, secrets_for
from tests.support.s3proxy import Delay, Fail, S3FaultProxy

# One page of the scan's listing, and then some: the second page is where the tests
# delay or break the scan.
OBJECTS = 1_050


async def _verified(ledger: Ledger, migration_id: int) -> int:
    return (await ledger.counts(migration_id)).state(ObjectState.VERIFIED).objects


async def _wait_verified(ledger: Ledger, migration_id: int, wanted: int) -> None:
    for _ in range(400):
        if await _verified(ledger, migration_id) == wanted:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{wanted} objects were not verified within 20 s")


async def test_workers_take_rows_as_they_arrive_and_end_when_arrivals_close(
    ledger: Ledger, s3_endpoint: Endpoint, s3_seed: S3Seeder
) -> None:
    source = await s3_seed.bucket()
    target = await s3_seed.bucket()
    seeded = [await s3_seed.put_object(source, f"k{i}", 100 + i) for i in range(6)]
    rows = [InventoryRow(key=o.key, size=o.size, etag=o.etag) for o in seeded]
    context = MigrationContext.resolve(
        migration(s3_endpoint, source, target), secrets_for(s3_endpoint)
    )
    migration_id = await ledger.ensure_migration(context.name, "")
    arrivals = Arrivals()
    # An hour between polls of an empty pool: only the arrivals can wake this worker.
    worker = ClaimLoop(ledger, migration_id, context, idle_poll=3600, arrivals=arrivals)
    working = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(0.5)
        assert not working.done(), "a worker with open arrivals must wait for rows"

        await ledger.upsert_inventory(migration_id, rows[:3], 1, on_chunk=arrivals.arrived)
        await _wait_verified(ledger, migration_id, 3)
        assert not working.done()

        await ledger.upsert_inventory(migration_id, rows[3:], 1, on_chunk=arrivals.arrived)
        await _wait_verified(ledger, migration_id, 6)
        assert not working.done()

        arrivals.close()
        stats = await asyncio.wait_for(working, timeout=20)
    finally:
        working.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await working
    assert stats.results[ObjectState.VERIFIED.value] == 6


@pytest.fixture
def minio_proxy(s3_backend: S3Backend) -> Iterator[tuple[S3FaultProxy, Endpoint]]:
    assert s3_backend.endpoint.url is not None
    with S3FaultProxy(s3_backend.endpoint.url) as proxy:
        yield (
            proxy,
            Endpoint(
                url=proxy.endpoint_url,
                region="us-east-1",
                addressing_style="path",
                credentials=s3_backend.endpoint.credentials,
            ),
        )


async def _seed_many(seed: S3Seeder, bucket: str) -> None:
    gate = asyncio.Semaphore(32)

    async def put(index: int) -> None:
        async with gate:
            await seed.put_object(bucket, f"obj/{index:05d}", 512)

    await asyncio.gather(*(put(i) for i in range(OBJECTS)))


@pytest.mark.parametrize("s3_backend", ["minio"], indirect=True)
async def test_a_run_copies_while_its_scan_is_still_listing(
    ledger: Ledger,
    backend_seed: S3Seeder,
    backend_client: object,
    minio_proxy: tuple[S3FaultProxy, Endpoint],
) -> None:
    proxy, endpoint = minio_proxy
    source = await backend_seed.bucket()
    target = await backend_seed.bucket()
    await _seed_many(backend_seed, source)
    # The scan's second page comes 3 s late; the first page's objects need not wait.
    late = proxy.add_rule(
        Delay(3.0), method="GET", bucket=source, query={"continuation-token": None}, times=1
    )

    result = await run(ledger, migration(endpoint, source, target), endpoint)

    assert result.outcome == "cut-over"
    assert late.hits == 1
    migration_id = await ledger.find_migration("test/m")
    assert migration_id is not None
    assert await _verified(ledger, migration_id) == OBJECTS
    scan_done = (await ledger.get_state(migration_id)).scan.completed_at
    assert scan_done is not None
    verified_at = [row.verified_at async for row in ledger.iter_rows(migration_id)]
    early = sum(1 for at in verified_at if at is not None and at < scan_done)
    assert early > 0, "no object was verified before the scan ended"
    assert len(await keys_of(backend_client, target)) == OBJECTS  # type: ignore[arg-type]


@pytest.mark.parametrize("s3_backend", ["minio"], indirect=True)
async def test_a_scan_failing_midway_stops_the_copy_and_fails_the_run(
    ledger: Ledger,
    backend_seed: S3Seeder,
    minio_proxy: tuple[S3FaultProxy, Endpoint],
) -> None:
    proxy, endpoint = minio_proxy
    source = await backend_seed.bucket()
    target = await backend_seed.bucket()
    await _seed_many(backend_seed, source)
    # The first page's rows are claimable, some being copied, when the second is refused.
    proxy.add_rule(
        Fail(404, "NoSuchBucket", "gone mid-scan"),
        method="GET",
        bucket=source,
        query={"continuation-token": None},
    )

    result = await asyncio.wait_for(
        run(ledger, migration(endpoint, source, target), endpoint), timeout=60
    )

    assert result.outcome == "failed"
    assert result.status.cutover.at is None
    migration_id = await ledger.find_migration("test/m")
    assert migration_id is not None
    failed = (await ledger.get_state(migration_id)).failed
    assert failed is not None
    assert failed.reason == "S3NoSuchBucket"
    assert "scan" in failed.message
    assert await _verified(ledger, migration_id) < OBJECTS
