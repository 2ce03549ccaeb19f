"""ListingLookup against a real S3 server: when a batch goes, and what one listing answers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from objmig.engine import lookup
from objmig.engine.lookup import KeyFacts, ListingLookup
from objmig.storage.endpoint import Endpoint
from objmig.storage.store import open_store
from tests.fixtures.s3 import S3Seeder

# Long enough that a batch waiting for the linger cannot finish within the tests' timeouts.
NEVER = 3600.0


async def _no_head(key: str) -> KeyFacts | None:
    raise AssertionError(f"{key} was HEADed; the listing should have answered")


@pytest.fixture
def no_linger_end(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lookup, "LINGER_SECONDS", NEVER)


def _count_listings(store: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record each listing the lookup starts (by its start-after)."""
    started: list[str] = []
    original = store.http.list_page

    async def list_page(*args: Any, **kwargs: Any) -> Any:
        started.append(kwargs.get("start_after") or "")
        return await original(*args, **kwargs)

    monkeypatch.setattr(store.http, "list_page", list_page)
    return started


def _parked(
    looks: Callable[[], ListingLookup], count: int
) -> tuple[asyncio.Event, Callable[[], None]]:
    """An event set once `count` objects wait in the lookup, and the `on_park` that sets it."""
    event = asyncio.Event()

    def on_park() -> None:
        if looks().parked >= count:
            event.set()

    return event, on_park


@pytest.mark.usefixtures("no_linger_end")
async def test_a_batch_goes_at_once_when_nothing_else_is_busy(
    s3_endpoint: Endpoint, s3_seed: S3Seeder, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = await s3_seed.bucket()
    await s3_seed.put_object(bucket, "a", b"x" * 10)
    await s3_seed.put_object(bucket, "b", b"y" * 20)
    busy = 2

    async with open_store(s3_endpoint) as store:
        listings = _count_listings(store, monkeypatch)
        parked, on_park = _parked(lambda: looks, 1)
        looks = ListingLookup(store, bucket, "", _no_head, lambda: busy, on_park)
        first = asyncio.create_task(looks.current("a"))
        await asyncio.wait_for(parked.wait(), 30)
        # The lookup decided, when "a" parked, whether to send it: a listing it had started
        # would be on its way once the loop has turned, as it has after a request of ours.
        await s3_seed.client.head_bucket(Bucket=bucket)
        # Another object of the pipeline is still busy and could join: "a" waits.
        assert listings == []
        assert not first.done()
        assert looks.parked == 1

        # The other object arrives too; now nothing is busy, so the batch goes without
        # waiting out the linger, and one listing answers both.
        busy = 0
        second = asyncio.create_task(looks.current("b"))
        facts = await asyncio.wait_for(asyncio.gather(first, second), 30)

    assert [f.size if f else None for f in facts] == [10, 20]
    assert looks.parked == 0
    assert len(listings) == 1


@pytest.mark.usefixtures("no_linger_end")
async def test_a_key_past_the_end_of_the_listing_is_answered_gone(
    s3_endpoint: Endpoint, s3_seed: S3Seeder
) -> None:
    bucket = await s3_seed.bucket()
    await s3_seed.put_object(bucket, "a", b"x")
    busy = 1

    async with open_store(s3_endpoint) as store:
        parked, on_park = _parked(lambda: looks, 2)
        looks = ListingLookup(store, bucket, "", _no_head, lambda: busy, on_park)
        waiting = asyncio.gather(looks.current("a"), looks.current("zz-gone"))
        await asyncio.wait_for(parked.wait(), 30)
        assert looks.parked == 2
        # The last busy object leaves the pipeline, which tells the lookup.
        busy = 0
        looks.consider()
        answers = await asyncio.wait_for(waiting, 30)

    assert answers[0] is not None
    assert answers[0].size == 1
    # The listing ended before "zz-gone": no HEAD needed to know it does not exist.
    assert answers[1] is None
