"""Per-object looks at a bucket, answered a batch at a time by one listing.

Two looks are made for many objects at once:

- the source re-check: every copied object is looked at on the source right before it is
  marked verified (ETag, size, last-modified; a change means SourceChanged);
- the target look: where a copy must not rely on the store honouring If-None-Match
  (server-side copies, multipart copies, `overwrite: never`), the target key is looked at
  before writing.

One HEAD per object made each look a quarter of a small object's requests. Objects
reaching a look together are instead gathered for a moment and answered by one
ListObjectsV2 over their key range: claims hand out rows in scan order, so the keys in
flight sit next to each other in the listing.

How long "a moment" is decides what a look costs: a listing is billed like ten GETs on AWS,
and some stores (moto) sort the whole bucket for every listing. So a batch goes out when
`TARGET_BATCH` objects wait, when the first of them has waited `LINGER_SECONDS`, or at once
when every object in the pipeline is waiting (nothing else could join, so a lone object or
the tail of a run never sits out the linger). While a listing is out, newcomers gather for
the next one (group commit). Objects waiting here hold no transfer slot and are not
counted against the worker's slots (`parked`).

A listing shows no version ids, so versioned rows are HEADed instead (by the caller); keys
the listing does not reach within its page budget (other keys between them) and keys
outside the listed prefix are HEADed too.

A listing that fails is the batch's trouble, not its objects': it is tried again with
backoff (the objects stay parked, their attempts and `retry.objectTimeout` untouched), and
a store that keeps failing or refuses it gets a HEAD per key. Only a key's own HEAD fails
its objects (issue 23.1: one 503 used to cost every object of a batch an attempt, and a
copy again).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from objmig.storage.errors import classify
from objmig.storage.filesystem import FileStore
from objmig.storage.store import Store
from objmig.storage.types import ObjectInfo

log = logging.getLogger(__name__)

#: Keys looked at by one listing at most (one ListObjectsV2 page).
MAX_BATCH = 1000
#: Waiting objects that send a batch without lingering further.
TARGET_BATCH = 500
#: How long the first object of a batch waits for others at most. Only slow runs reach
#: it (at 125 objects/s a batch fills first): there, a listing per second was moto's
#: biggest cost (8 s of its CPU copying 10,000 objects at 85/s), and a copy waiting four
#: seconds longer to be marked verified costs nothing.
LINGER_SECONDS = 4.0
#: Pages one batch may read before the keys not reached are HEADed instead.
MAX_PAGES = 3
#: Listings of a batch tried (with a backoff from the first to the longest delay, in
#: seconds) before its keys are HEADed one by one instead.
LISTING_TRIES = 6
LISTING_RETRY_FIRST = 1.0
LISTING_RETRY_MAX = 16.0


@dataclass(frozen=True)
class KeyFacts:
    """What a look saw of a key (a key that is gone is answered with None)."""

    etag: str
    size: int
    last_modified_seconds: int | None


Head = Callable[[str], Awaitable[KeyFacts | None]]
#: A key's answer: its facts, None (no such key), or the failure of its own HEAD.
Answer = KeyFacts | None | BaseException


class ListingLookup:
    """Answers "what are the current ETag/size/last-modified of this key?" for many
    concurrent callers of one bucket with as few listings as possible.

    `busy` tells how many objects of the caller's pipeline are doing anything but waiting
    for a look (here or at another bucket): at zero nothing could join the batch, so it
    goes without lingering. `on_park` is called whenever an object starts waiting, so the
    worker can start another in its place.
    """

    def __init__(
        self,
        store: Store | FileStore,
        bucket: str,
        prefix: str,
        head: Head,
        busy: Callable[[], int],
        on_park: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._bucket = bucket
        self._prefix = prefix
        self._head = head
        self._busy = busy
        self._on_park = on_park
        self._waiting: dict[str, list[asyncio.Future[KeyFacts | None]]] = {}
        self._queued = 0
        self._first_queued_at = 0.0
        self._linger: asyncio.TimerHandle | None = None
        self._running: asyncio.Future[None] | None = None
        self._draining = False
        self._parked: Counter[str] = Counter()
        self.parked = 0

    def is_parked(self, key: str) -> bool:
        return key in self._parked

    def drain(self) -> None:
        """No more lingering: the worker is stopping, send what waits (and what comes)."""
        self._draining = True
        self.consider()

    async def current(self, key: str) -> KeyFacts | None:
        """The bucket's current facts for `key` (None when it is gone)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[KeyFacts | None] = loop.create_future()
        if not self._queued:
            self._first_queued_at = loop.time()
        self._waiting.setdefault(key, []).append(future)
        self._queued += 1
        self._parked[key] += 1
        self.parked += 1
        try:
            self.consider()
            self._on_park()
            return await future
        finally:
            self.parked -= 1
            self._parked[key] -= 1
            if not self._parked[key]:
                del self._parked[key]

    def consider(self) -> None:
        """Send the waiting batch if it is time to (see the module docstring).

        Also called by the pipeline when an object leaves it.
        """
        if self._running is not None or not self._queued:
            return
        loop = asyncio.get_running_loop()
        due = self._first_queued_at + LINGER_SECONDS
        if (
            self._draining
            or self._queued >= TARGET_BATCH
            or self._busy() <= 0
            or loop.time() >= due
        ):
            self._flush()
        elif self._linger is None:
            self._linger = loop.call_at(due, self._lingered)

    def _lingered(self) -> None:
        self._linger = None
        self.consider()

    def _flush(self) -> None:
        """Re-check what is waiting; what arrives meanwhile forms the next batch.

        While one listing is out, newcomers gather (group commit, as databases do it).
        """
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        keys = list(self._waiting)[:MAX_BATCH]
        batch = {key: self._waiting.pop(key) for key in keys}
        self._queued -= sum(len(futures) for futures in batch.values())
        if self._queued:
            self._first_queued_at = asyncio.get_running_loop().time()
        self._running = asyncio.ensure_future(self._resolve(batch))
        self._running.add_done_callback(self._next)

    def _next(self, _: asyncio.Future[None]) -> None:
        self._running = None
        self.consider()

    async def _resolve(self, batch: dict[str, list[asyncio.Future[KeyFacts | None]]]) -> None:
        """Answer a batch. Only a key's own HEAD can fail its objects: a listing that
        fails is the batch's trouble (see `_listed_facts`)."""
        keys = sorted(batch)
        try:
            found = await self._listed_facts(keys)
        except Exception as exc:
            # Credentials or bucket wrong for every object: let them all say so.
            found = dict.fromkeys(keys, exc)
        for key, futures in batch.items():
            answer = found[key]
            for future in futures:
                if future.done():
                    continue
                if isinstance(answer, BaseException):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)

    async def _listed_facts(self, keys: list[str]) -> dict[str, Answer]:
        """The batch's answers by listing, which is tried again, with backoff, while it
        fails transiently: a listing that fails says nothing about the objects waiting,
        and must not spend their attempts (each one copies the object again). A store
        that keeps failing it, or that refuses listings, gets a HEAD per key instead."""
        delay = LISTING_RETRY_FIRST
        for tries in range(1, LISTING_TRIES + 1):
            try:
                return await self._facts(keys)
            except Exception as exc:
                problem = classify(exc)
                if problem.is_config_error:
                    raise
                if not problem.retryable or tries == LISTING_TRIES:
                    log.warning(
                        "listing s3://%s/%s failed (%s); looking at %d keys one by one",
                        self._bucket,
                        self._prefix,
                        problem.message,
                        len(keys),
                    )
                    break
                log.info("listing s3://%s failed (%s); again", self._bucket, problem.message)
                await asyncio.sleep(delay)
                delay = min(LISTING_RETRY_MAX, delay * 2)
        return await self._head_each(keys)

    async def _facts(self, all_keys: list[str]) -> dict[str, Answer]:
        found: dict[str, Answer] = {}
        # Manifest keys may lie outside the prefix, where the listing never goes.
        keys = [k for k in all_keys if k.startswith(self._prefix)]
        outside = [k for k in all_keys if not k.startswith(self._prefix)]
        if len(keys) <= 1:
            outside += keys
            keys = []
        found.update(await self._head_each(outside))
        if not keys:
            return found
        wanted = set(keys)
        last_listed = ""
        start_after = _just_before(keys[0])
        token = None
        for _ in range(MAX_PAGES):
            page, token = await self._store.http.list_page(
                self._bucket,
                self._prefix,
                start_after=start_after,
                continuation_token=token,
                # The keys in flight sit close together: a little more than their number
                # usually covers the range between the first and the last.
                max_keys=min(MAX_BATCH, 2 * len(keys) + 8),
            )
            for info in page:
                last_listed = info.key
                if info.key in wanted:
                    found[info.key] = _facts(info)
            if token is None:
                # The listing reached the end of the prefix: nothing it did not show exists.
                last_listed = keys[-1]
                break
            if last_listed >= keys[-1]:
                break
        # Listed past it without seeing it: gone. Not reached: ask directly.
        unseen = [k for k in keys if k not in found]
        found.update({k: None for k in unseen if k <= last_listed})
        found.update(await self._head_each([k for k in unseen if k > last_listed]))
        return found

    async def _head_each(self, keys: list[str]) -> dict[str, Answer]:
        """A HEAD per key; a HEAD that fails fails its key's objects only."""
        facts = await asyncio.gather(*(self._head(key) for key in keys), return_exceptions=True)
        return dict(zip(keys, facts, strict=True))


async def key_listed(store: Store, bucket: str, prefix: str, key: str) -> str | None:
    """Whether a listing shows `key` exactly: None if so, else the key listed in its place.

    A HEAD answers for whatever a store made of the key asked for; a listing from just
    before it shows what the store keeps (a listing by the key as prefix does not: MinIO
    answers one for "/a" with "/a" while it keeps "a").
    """
    start_after = _just_before(key)
    token = None
    for _ in range(MAX_PAGES):
        page, token = await store.http.list_page(
            bucket, prefix, start_after=start_after, continuation_token=token
        )
        for info in page:
            if info.key.encode() >= key.encode():
                return None if info.key == key else info.key
        if token is None:
            break
    return ""


def _facts(info: ObjectInfo) -> KeyFacts:
    return KeyFacts(info.etag, info.size, int(info.last_modified.timestamp()))


def _just_before(key: str) -> str | None:
    """A StartAfter value that makes a listing begin at `key` (StartAfter is exclusive).

    The key minus its last character sorts before it and as close as a short string can;
    what lies between (siblings sharing that stem) is listed and ignored.
    """
    return key[:-1] or None
