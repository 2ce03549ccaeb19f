"""A local run copies while its scan is still listing: workers take rows as each batch of
the inventory lands, wait (without polling) while more may come, finish once the scan has
ended, and a scan that fails stops them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from objmig.engine.claim_loop import Arrivals, ClaimLoop
from objmig.engine.context import MigrationContext
from objmig.ledger import InventoryRow, Ledger, ObjectState
from objmig.storage.endpoint import Endpoint
from tests.fixtures.s3 import S3Backend, S3Seeder
from tests.integration.engine_support import keys_of, migration, run, secrets_for
from tests.support.s3proxy import ABSENT, Fail, Hold, S3FaultProxy

# One page of the scan's listing, and then some: the second page is where the tests
# hold or break the scan.
OBJECTS = 1_050
# The scan's second page: a continuation token and no start-after (the re-checks' listings
# of copied objects start after a key, and may have continuation tokens too).
SCAN_NEXT_PAGE: dict[str, str | object | None] = {
    "continuation-token": None,
    "start-after": ABSENT,
}
# How long a test waits for something that comes within seconds on an idle machine.
PATIENCE = 120.0


async def _verified(ledger: Ledger, migration_id: int) -> int:
    return (await ledger.counts(migration_id)).state(ObjectState.VERIFIED).objects


async def _wait_verified(ledger: Ledger, migration_id: int, wanted: int) -> None:
    """Poll the ledger until at least ``wanted`` objects are verified."""
    async with asyncio.timeout(PATIENCE):
        while await _verified(ledger, migration_id) < wanted:  # noqa: ASYNC110 - no event
            await asyncio.sleep(0.05)


class IdleWatch:
    """Sees a worker decide to wait for rows rather than end.

    With nothing in flight, nothing claimed and nothing to record, the worker asks whether
    work remains (``_work_remains``): no means it ends, yes means it waits. That answer is
    the moment a worker that ignored the open arrivals would have ended.
    """

    def __init__(self, worker: ClaimLoop, monkeypatch: pytest.MonkeyPatch) -> None:
        self._decided = asyncio.Event()
        original = worker._work_remains

        async def work_remains() -> bool:
            remains = await original()
            if remains:
                self._decided.set()
            return remains

        monkeypatch.setattr(worker, "_work_remains", work_remains)

    async def next_wait(self, working: asyncio.Task[Any]) -> None:
        """Wait until the worker next decides to wait (or ends, which the caller sees)."""
        self._decided.clear()
        decided = asyncio.ensure_future(self._decided.wait())
        try:
            await asyncio.wait({decided, working}, timeout=PATIENCE, return_when="FIRST_COMPLETED")
        finally:
            decided.cancel()
        assert self._decided.is_set() or working.done(), "the worker neither waited nor ended"


async def test_workers_take_rows_as_they_arrive_and_end_when_arrivals_close(
    ledger: Ledger, s3_endpoint: Endpoint, s3_seed: S3Seeder, monkeypatch: pytest.MonkeyPatch
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
    watch = IdleWatch(worker, monkeypatch)
    working = asyncio.create_task(worker.run())
    try:
        await watch.next_wait(working)
        assert not working.done(), "a worker with open arrivals must wait for rows"

        await ledger.upsert_inventory(migration_id, rows[:3], 1, on_chunk=arrivals.arrived)
        await _wait_verified(ledger, migration_id, 3)
        # Its results are recorded: the worker has nothing left, and decides next.
        await watch.next_wait(working)
        assert not working.done()

        await ledger.upsert_inventory(migration_id, rows[3:], 1, on_chunk=arrivals.arrived)
        await _wait_verified(ledger, migration_id, 6)
        await watch.next_wait(working)
        assert not working.done()

        arrivals.close()
        stats = await asyncio.wait_for(working, timeout=PATIENCE)
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
    # The scan's second page waits until an object of the first page is verified: the
    # first page's objects need not wait for the scan to end.
    second_page = Hold()
    late = proxy.add_rule(second_page, method="GET", bucket=source, query=SCAN_NEXT_PAGE)

    running = asyncio.create_task(run(ledger, migration(endpoint, source, target), endpoint))
    try:
        await second_page.arrived(patience=PATIENCE)
        migration_id = await ledger.find_migration("test/m")
        assert migration_id is not None
        await _wait_verified(ledger, migration_id, 1)
        assert second_page.held == 1, "the scan ended before an object was verified"
        second_page.release()
        result = await asyncio.wait_for(running, timeout=PATIENCE * 3)
    finally:
        second_page.release()
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running

    assert result.outcome == "cut-over"
    # The scan's second page, and again in the final re-scan before the cutover (21.6).
    assert late.hits == 2
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
        query=SCAN_NEXT_PAGE,
    )

    result = await asyncio.wait_for(
        run(ledger, migration(endpoint, source, target), endpoint), timeout=PATIENCE
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
