"""Listing a bucket in parallel: the key space cut at its delimiters, the pieces listed at
once, the keys handed on in key order.

A ListObjectsV2 page depends on the one before it (its continuation token), so one listing
waits a round trip per 1,000 keys: over 20 ms of latency that is 50,000 keys a second at
best, an hour and more for a 100-million-key bucket. Keys under different prefixes can be
listed independently. So the listing first asks with a delimiter (`/`) what lies directly
under the prefix (keys, and common prefixes that each stand for a subtree), expanding
subtrees level by level until there are enough of them to keep `fan_out` listings busy
(or a level is too big to expand in one page), then lists the subtrees `fan_out` at a
time.

Keys come out in the order one plain listing gives (UTF-8 binary order): a key directly
under the prefix sorts before a common prefix P exactly when it sorts before P, and every
key under P sorts before the next entry. The scan records them in that order, which is
what the batched looks (`objmig.engine.lookup`) count on. Memory stays bounded: each
subtree's listing runs at most `PAGES_AHEAD` pages ahead of the consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from objmig.storage.resending import LISTING_PATIENCE, resend
from objmig.storage.s3http import S3HttpClient
from objmig.storage.types import ObjectInfo

T = TypeVar("T")

#: Listings in flight at once.
FAN_OUT = 16
#: Pages a subtree's listing may read ahead of the consumer.
PAGES_AHEAD = 2
#: How many levels below the prefix are expanded looking for subtrees.
MAX_DEPTH = 3


@dataclass(frozen=True)
class _Subtree:
    """Every key under `prefix`, to be listed without a delimiter."""

    prefix: str


_Entry = ObjectInfo | _Subtree


async def list_fanned_out(
    client: S3HttpClient,
    bucket: str,
    prefix: str = "",
    *,
    fan_out: int = FAN_OUT,
    delimiter: str = "/",
    page_size: int = 1000,
) -> AsyncIterator[ObjectInfo]:
    """Every (latest) object under `prefix`, in key order, from up to `fan_out` listings
    in flight at once (see the module docstring)."""
    entries = await _expand(client, bucket, [_Subtree(prefix)], fan_out, delimiter)
    subtrees = [entry for entry in entries if isinstance(entry, _Subtree)]
    if len(subtrees) <= 1 and len(entries) == len(subtrees):
        # Nothing to list side by side: one plain listing.
        only = subtrees[0].prefix if subtrees else prefix
        async for info in client.list_objects(bucket, only, page_size=page_size):
            yield info
        return
    slots = asyncio.Semaphore(fan_out)
    listings: dict[str, asyncio.Queue[list[ObjectInfo] | BaseException | None]] = {}
    tasks: list[asyncio.Task[None]] = []

    async def list_subtree(subtree: _Subtree) -> None:
        queue = listings[subtree.prefix]
        try:
            async with slots:
                async for page in _pages(client, bucket, subtree.prefix, page_size):
                    await queue.put(page)
        except BaseException as exc:
            await queue.put(exc)
            raise
        await queue.put(None)

    try:
        for subtree in subtrees:
            listings[subtree.prefix] = asyncio.Queue(maxsize=PAGES_AHEAD)
            # Started in key order: the semaphore admits them in that order too.
            tasks.append(asyncio.create_task(list_subtree(subtree)))
        for entry in entries:
            if isinstance(entry, ObjectInfo):
                yield entry
                continue
            queue = listings[entry.prefix]
            while (page := await queue.get()) is not None:
                if isinstance(page, BaseException):
                    raise page
                for info in page:
                    yield info
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task


async def _expand(
    client: S3HttpClient, bucket: str, entries: list[_Entry], fan_out: int, delimiter: str
) -> list[_Entry]:
    """Replace subtrees by what lies directly under them, level by level, until there are
    `fan_out` subtrees, `MAX_DEPTH` levels, or nothing expands in one page any more."""
    for _ in range(MAX_DEPTH):
        subtrees = [e for e in entries if isinstance(e, _Subtree)]
        if not subtrees or len(subtrees) >= fan_out:
            return entries
        levels = await asyncio.gather(
            *(
                _patiently(client, client.list_level, bucket, s.prefix, delimiter=delimiter)
                for s in subtrees
            )
        )
        expanded: dict[str, list[_Entry]] = {}
        for subtree, (objects, prefixes, token) in zip(subtrees, levels, strict=True):
            if token is None:
                # A level is one page: its keys and subtrees, merged in key order.
                children: list[_Entry] = [*objects, *(_Subtree(p) for p in prefixes)]
                children.sort(key=_sort_key)
                expanded[subtree.prefix] = children
        if not expanded:
            return entries
        entries = [
            child
            for entry in entries
            for child in (
                expanded.get(entry.prefix, [entry]) if isinstance(entry, _Subtree) else [entry]
            )
        ]
    return entries


def _sort_key(entry: _Entry) -> bytes:
    """Where an entry starts in a plain listing's order (S3 sorts by UTF-8 bytes)."""
    return (entry.key if isinstance(entry, ObjectInfo) else entry.prefix).encode()


async def _pages(
    client: S3HttpClient, bucket: str, prefix: str, page_size: int
) -> AsyncIterator[list[ObjectInfo]]:
    token = None
    while True:
        page, token = await _patiently(
            client, client.list_page, bucket, prefix, continuation_token=token, max_keys=page_size
        )
        yield page
        if token is None:
            return


async def _patiently(
    client: S3HttpClient, call: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any
) -> T:
    """A listing page, asked for again with a longer back-off once its request's own
    resends are spent (`LISTING_PATIENCE`, as `S3HttpClient.list_objects` does): a passing
    fault costs a scan a pause, not its end."""
    return await resend(
        functools.partial(call, *args, **kwargs), LISTING_PATIENCE, client.retries, replayable=True
    )
