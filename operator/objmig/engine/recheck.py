"""The last look at the source before a copy counts as verified, a batch at a time.

Every copied object is re-checked against the source right before it is marked verified
(ETag, size, last-modified; a change means SourceChanged). One HEAD per object made that
re-check a quarter of a small object's requests. Objects finishing together are instead
gathered for a moment and re-checked with one ListObjectsV2 over their key range: claims
hand out rows in scan order, so the keys in flight sit next to each other in the listing.

A listing shows no version ids, so versioned rows are HEADed as before; keys the listing did
not reach within its page budget (other keys between them) are HEADed too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from objmig.storage.objects import ObjectInfo
from objmig.storage.store import Store

log = logging.getLogger(__name__)

#: Keys re-checked by one listing at most (one ListObjectsV2 page).
MAX_BATCH = 1000
#: Pages one batch may read before the keys not reached are HEADed instead.
MAX_PAGES = 3


@dataclass(frozen=True)
class SourceFacts:
    """What the re-check saw of a key: `None` fields mean the key is gone."""

    etag: str
    size: int
    last_modified_seconds: int | None


Head = Callable[[str], Awaitable[SourceFacts | None]]


class SourceRecheck:
    """Answers "what is the source's current ETag/size/last-modified for this key?" for
    many concurrent callers with as few listings as possible."""

    def __init__(self, store: Store, bucket: str, prefix: str, head: Head) -> None:
        self._store = store
        self._bucket = bucket
        self._prefix = prefix
        self._head = head
        self._waiting: dict[str, list[asyncio.Future[SourceFacts | None]]] = {}
        self._running: asyncio.Future[None] | None = None

    async def current(self, key: str) -> SourceFacts | None:
        """The source's current facts for `key` (None when it is gone)."""
        future: asyncio.Future[SourceFacts | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        if self._running is None:
            self._flush()
        return await future

    def _flush(self) -> None:
        """Re-check what is waiting; what arrives meanwhile forms the next batch.

        No timer: while one listing is out, newcomers gather, so batches grow with the
        load and a lone object waits for nothing (group commit, as databases do it).
        """
        keys = list(self._waiting)[:MAX_BATCH]
        batch = {key: self._waiting.pop(key) for key in keys}
        self._running = asyncio.ensure_future(self._resolve(batch))
        self._running.add_done_callback(self._next)

    def _next(self, _: asyncio.Future[None]) -> None:
        self._running = None
        if self._waiting:
            self._flush()

    async def _resolve(self, batch: dict[str, list[asyncio.Future[SourceFacts | None]]]) -> None:
        try:
            found = await self._facts(sorted(batch))
        except Exception as exc:
            for futures in batch.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            return
        for key, futures in batch.items():
            for future in futures:
                if not future.done():
                    future.set_result(found[key])

    async def _facts(self, all_keys: list[str]) -> dict[str, SourceFacts | None]:
        found: dict[str, SourceFacts | None] = {}
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
            page, token = await self._store.objects.list_page(
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
            if token is None or last_listed >= keys[-1]:
                break
        # Listed past it without seeing it: gone. Not reached: ask directly.
        unseen = [k for k in keys if k not in found]
        found.update({k: None for k in unseen if k <= last_listed})
        found.update(await self._head_each([k for k in unseen if k > last_listed]))
        return found

    async def _head_each(self, keys: list[str]) -> dict[str, SourceFacts | None]:
        facts = await asyncio.gather(*(self._head(key) for key in keys))
        return dict(zip(keys, facts, strict=True))


def _facts(info: ObjectInfo) -> SourceFacts:
    return SourceFacts(info.etag, info.size, int(info.last_modified.timestamp()))


def _just_before(key: str) -> str | None:
    """A StartAfter value that makes a listing begin at `key` (StartAfter is exclusive).

    The key minus its last character sorts before it and as close as a short string can;
    what lies between (siblings sharing that stem) is listed and ignored.
    """
    return key[:-1] or None
