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
from tests.support.s3proxy import Deny, S3FaultProxy, SlowDown

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


@pytest.fixture
def quick_listing_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lookup, "LISTING_RETRY_FIRST", 0.01)
    monkeypatch.setattr(lookup, "LISTING_RETRY_MAX", 0.02)


@pytest.mark.usefixtures("quick_listing_retries")
async def test_a_listing_that_keeps_failing_for_a_while_is_tried_again_as_a_batch(
    proxy_endpoint: Endpoint, s3_proxy: S3FaultProxy, s3_seed: S3Seeder
) -> None:
    bucket = await s3_seed.bucket()
    for key in ("a", "b", "c"):
        await s3_seed.put_object(bucket, key, b"x" * 3)
    # More failures in a row than one request's tries: the batch itself goes again.
    failures = s3_proxy.add_rule(SlowDown(), method="GET", query={"list-type": "2"}, times=7)

    async with open_store(proxy_endpoint) as store:
        # The three objects are all the pipeline has: the batch goes when all three wait.
        looks = ListingLookup(store, bucket, "", _no_head, lambda: 3 - looks.parked)
        answers = await asyncio.wait_for(
            asyncio.gather(*(looks.current(k) for k in ("a", "b", "c"))), 60
        )

    assert [a.size if a else None for a in answers] == [3, 3, 3]
    assert failures.hits == 7


@pytest.mark.usefixtures("quick_listing_retries")
async def test_a_store_that_refuses_listings_is_asked_key_by_key(
    proxy_endpoint: Endpoint, s3_proxy: S3FaultProxy, s3_seed: S3Seeder
) -> None:
    bucket = await s3_seed.bucket()
    await s3_seed.put_object(bucket, "a", b"x")
    s3_proxy.add_rule(Deny(), method="GET", query={"list-type": "2"})
    headed: list[str] = []

    async def head(key: str) -> KeyFacts | None:
        headed.append(key)
        return KeyFacts("e", 1, None) if key == "a" else None

    async with open_store(proxy_endpoint) as store:
        looks = ListingLookup(store, bucket, "", head, lambda: 2 - looks.parked)
        answers = await asyncio.wait_for(asyncio.gather(looks.current("a"), looks.current("b")), 60)

    assert sorted(headed) == ["a", "b"]
    assert answers == [KeyFacts("e", 1, None), None]


async def test_a_failing_head_fails_the_objects_of_its_own_key_only(
    s3_endpoint: Endpoint, s3_seed: S3Seeder
) -> None:
    bucket = await s3_seed.bucket()

    async def head(key: str) -> KeyFacts | None:
        if key == "x/bad":
            raise ConnectionResetError("reset by the test")
        return KeyFacts(key, 1, None)

    async with open_store(s3_endpoint) as store:
        # Keys outside the prefix are HEADed, not listed.
        looks = ListingLookup(store, bucket, "inside/", head, lambda: 0)
        answers = await asyncio.wait_for(
            asyncio.gather(looks.current("x/good"), looks.current("x/bad"), return_exceptions=True),
            60,
        )

    assert answers[0] == KeyFacts("x/good", 1, None)
    assert isinstance(answers[1], ConnectionResetError)
