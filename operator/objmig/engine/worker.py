"""The claim loop: lease rows from the ledger, run them through the pipeline, record results.

The same loop runs inside ``objmig run`` (in-process, one or more of them) and in the
operator's Job pods (``objmig worker``). It talks to the ledger and to S3 only.

Crash safety comes from the ledger: a row is leased while a worker holds it, the lease is
extended by a heartbeat while the work lasts, and a result is written only by the lease
holder. If the worker dies, its leases expire and the rows go back to the pool as they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from objmig.engine.context import MigrationContext
from objmig.engine.pipeline import ObjectPipeline
from objmig.ledger import ACTIVE_STATES, Ledger, ObjectRow, ObjectState, StepResult
from objmig.storage.ratelimit import TokenBucket

log = logging.getLogger(__name__)

#: Copied rows first (only verification is left), then new work, then restores to poll.
CLAIM_ORDER = (ObjectState.COPIED, ObjectState.PENDING, ObjectState.RESTORING)


def worker_identity(prefix: str | None = None) -> str:
    """A lease owner unique to this process incarnation: ``host:pid:random``."""
    base = prefix or socket.gethostname()
    return f"{base}:{os.getpid()}:{secrets.token_hex(3)}"


def dead_local_owners(owners: Sequence[str]) -> list[str]:
    """Owners that ran on this host in a process that no longer exists.

    Their leases can be ended at once instead of waiting for them to expire: that is what
    makes ``objmig run`` after a ``kill -9`` resume immediately.
    """
    host = socket.gethostname()
    dead = []
    for owner in owners:
        parts = owner.rsplit(":", 2)
        if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
            continue
        try:
            os.kill(int(parts[1]), 0)
        except ProcessLookupError:
            dead.append(owner)
        except PermissionError:
            continue  # alive, someone else's
    return dead


@dataclass
class WorkerStats:
    """What one worker did."""

    results: Counter[str] = field(default_factory=Counter)
    bytes_done: int = 0
    leases_lost: int = 0


class Worker:
    """Claims and processes rows of one migration until no work is left (or it is stopped)."""

    def __init__(
        self,
        ledger: Ledger,
        migration_id: int,
        context: MigrationContext,
        *,
        owner: str | None = None,
        lease: timedelta = timedelta(minutes=2),
        idle_poll: float = 1.0,
    ) -> None:
        self._ledger = ledger
        self._migration_id = migration_id
        self._ctx = context
        self.owner = owner or worker_identity()
        self._lease = lease
        self._idle_poll = idle_poll
        self._concurrency = context.spec.transfer.concurrency
        self._inflight: dict[int, tuple[ObjectRow, asyncio.Task[StepResult]]] = {}
        self._results: list[StepResult] = []
        self.stats = WorkerStats()

    async def run(self, stop: asyncio.Event | None = None) -> WorkerStats:
        """Work until no active row remains, ``stop`` is set, or a configuration error.

        Raises :class:`ConfigurationError` (after releasing every lease) when S3 refuses the
        migration as a whole, e.g. bad credentials or a missing bucket.
        """
        stop = stop or asyncio.Event()
        limiter = TokenBucket(self._ctx.bandwidth_limit) if self._ctx.bandwidth_limit else None
        async with self._ctx.clients() as (source, target):
            pipeline = ObjectPipeline(self._ctx, source, target, limiter=limiter)
            heartbeat = asyncio.create_task(self._heartbeat_loop())
            try:
                await self._loop(pipeline, stop)
            finally:
                heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeat
                await self._shutdown()
        return self.stats

    async def _loop(self, pipeline: ObjectPipeline, stop: asyncio.Event) -> None:
        idle = 0
        while not stop.is_set():
            await self._collect()
            free = self._concurrency - len(self._inflight)
            rows = (
                await self._ledger.claim(
                    self._migration_id, self.owner, CLAIM_ORDER, free, self._lease
                )
                if free > 0
                else []
            )
            for row in rows:
                task = asyncio.create_task(pipeline.process(row), name=f"object:{row.key}")
                self._inflight[row.id] = (row, task)
            if rows:
                idle = 0
            elif not self._inflight:
                if not await self._work_remains():
                    return
                idle += 1
            await self._wait_for_progress(stop, idle)
        log.info("worker %s stopping on request", self.owner)

    async def _wait_for_progress(self, stop: asyncio.Event, idle: int) -> None:
        """Sleep until a task finishes, a stop is requested, or it is time to claim again."""
        timeout = min(self._idle_poll * max(1, idle), 5.0) if not self._inflight else 0.2
        waiters: set[asyncio.Future[Any]] = {t for _, t in self._inflight.values()}
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({*waiters, stopper}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            stopper.cancel()

    async def _collect(self) -> None:
        """Move finished tasks' results to the buffer and flush it to the ledger."""
        for object_id, (row, task) in list(self._inflight.items()):
            if not task.done():
                continue
            error = task.exception()
            if error is not None:
                # Only a ConfigurationError gets here (the pipeline turns every other failure
                # into a result); the row stays in flight so shutdown releases its lease.
                raise error
            del self._inflight[object_id]
            result = task.result()
            self._results.append(result)
            self.stats.results[result.state.value] += 1
            if result.state is ObjectState.VERIFIED:
                self.stats.bytes_done += row.size
        await self._flush()

    async def _flush(self) -> None:
        if not self._results:
            return
        batch, self._results = self._results, []
        applied = await self._ledger.record(self.owner, batch)
        lost = len(batch) - applied
        if lost:
            # Our lease ran out and someone else owns those rows now; their result stands.
            self.stats.leases_lost += lost
            log.warning("worker %s: %d results dropped, their leases were lost", self.owner, lost)

    async def _work_remains(self) -> bool:
        """Whether any row could still need a worker (now or after a wait)."""
        counts = await self._ledger.counts(self._migration_id)
        return any(counts.state(state).objects for state in ACTIVE_STATES)

    async def _heartbeat_loop(self) -> None:
        interval = max(1.0, self._lease.total_seconds() / 3)
        while True:
            await asyncio.sleep(interval)
            ids = list(self._inflight)
            if not ids:
                continue
            held = await self._ledger.heartbeat(self.owner, ids, self._lease)
            for object_id in set(ids) - held:
                entry = self._inflight.pop(object_id, None)
                if entry is not None:
                    entry[1].cancel()
                    self.stats.leases_lost += 1

    async def _shutdown(self) -> None:
        """Cancel unfinished work, keep finished results, give the rest back to the pool."""
        for _, task in self._inflight.values():
            task.cancel()
        if self._inflight:
            await asyncio.gather(*(t for _, t in self._inflight.values()), return_exceptions=True)
        finished = [
            (object_id, task)
            for object_id, (_, task) in self._inflight.items()
            if task.done() and not task.cancelled() and task.exception() is None
        ]
        for object_id, task in finished:
            self._results.append(task.result())
            del self._inflight[object_id]
        with contextlib.suppress(Exception):
            await self._flush()
        if self._inflight:
            await self._ledger.release(self.owner, list(self._inflight))
            self._inflight.clear()


async def run_workers(
    ledger: Ledger,
    migration_id: int,
    context: MigrationContext,
    count: int,
    stop: asyncio.Event,
    *,
    owner_prefix: str | None = None,
) -> WorkerStats:
    """Run ``count`` workers in this process; the first configuration error stops them all."""
    workers = [
        Worker(ledger, migration_id, context, owner=worker_identity(owner_prefix))
        for _ in range(count)
    ]
    tasks = [asyncio.create_task(w.run(stop)) for w in workers]
    try:
        done = await asyncio.gather(*tasks)
    except BaseException:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    total = WorkerStats()
    for stats in done:
        total.results.update(stats.results)
        total.bytes_done += stats.bytes_done
        total.leases_lost += stats.leases_lost
    return total
