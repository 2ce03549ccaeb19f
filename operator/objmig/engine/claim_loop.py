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
import functools
import logging
import os
import secrets
import socket
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from objmig.engine.activity import REPORT_SECONDS, ActivityMeter
from objmig.engine.backfill_queue import BackfillQueue
from objmig.engine.bookkeeping import record_store_findings
from objmig.engine.context import MigrationContext
from objmig.engine.lookup import MAX_BATCH
from objmig.engine.pipeline.orchestrator import ObjectPipeline
from objmig.engine.space import SpaceWatch
from objmig.ledger import ACTIVE_STATES, Ledger, ObjectRow, ObjectState, OpenUpload, StepResult
from objmig.storage.filesystem import FileStore
from objmig.storage.ratelimit import TokenBucket

log = logging.getLogger(__name__)

#: How long a stopping worker waits for parked objects' re-check (one listing, normally).
PARKED_GRACE_SECONDS = 10.0
#: Rows closest to done first (only the application's steps, or verification, are left),
#: then new work, then restores to poll.
CLAIM_ORDER = (
    ObjectState.FINISHING,
    ObjectState.COPIED,
    ObjectState.PENDING,
    ObjectState.RESTORING,
)
#: Bytes a worker may always hold, whatever its share of the work: small objects are
#: claimed in batches.
MIN_HELD_BYTES = 64 * 1024 * 1024
#: Seconds between two looks at how many bytes are left to do (for the worker's share).
OUTSTANDING_SECONDS = 5.0
#: Objects parked in batched looks (see `lookup`) free their slots, up to this many: two
#: full listings' worth. Beyond it they hold slots again, so a worker whose looks fall
#: behind its copies stops claiming, rather than holding (and renewing) the leases of
#: tens of thousands of objects that a killed pod would strand for a lease's length.
PARKED_ROOM = 2 * MAX_BATCH


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


class Arrivals:
    """Rows still being added to the ledger while workers run: the scan of a local run,
    which inventories the source while the first objects are copied.

    Workers do not finish while arrivals are open, and each batch of new rows wakes them
    at once rather than after their idle poll.
    """

    def __init__(self) -> None:
        self.open = True
        #: How many batches have arrived (a claim started before the last one may have
        #: missed its rows).
        self.batches = 0
        self._listeners: list[Callable[[], None]] = []

    def subscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def arrived(self) -> None:
        """A batch of rows is in the ledger."""
        self.batches += 1
        for listener in self._listeners:
            listener()

    def close(self) -> None:
        """No more rows will come, however the scan ended."""
        self.open = False
        self.arrived()


class LedgerUploads:
    """The pipeline's `UploadBook` in the ledger (`objmig.ledger.uploads`)."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    async def started(self, object_id: int, target_key: str, upload_id: str) -> None:
        await self._ledger.upload_started(object_id, target_key, upload_id)

    async def open_of(self, object_id: int) -> list[OpenUpload]:
        return await self._ledger.object_uploads(object_id)

    async def ended(self, object_id: int, upload_ids: Sequence[str]) -> None:
        await self._ledger.uploads_ended(object_id, upload_ids)


@dataclass
class ClaimLoopStats:
    """What one worker did."""

    results: Counter[str] = field(default_factory=Counter)
    bytes_done: int = 0
    leases_lost: int = 0
    #: The most rows held at once (in flight, parked or claimed ahead).
    peak_held: int = 0


class ClaimLoop:
    """Claims and processes rows of one migration until no work is left (or it is stopped).

    The ledger is never waited on between objects: claims run ahead in the background into
    a backlog (as many rows again as may be in flight), and results are
    written in batches by a background flush while the next objects are already moving.
    A slot freed by a finished object is refilled from the backlog at once.
    """

    def __init__(
        self,
        ledger: Ledger,
        migration_id: int,
        context: MigrationContext,
        *,
        owner: str | None = None,
        lease: timedelta = timedelta(minutes=2),
        idle_poll: float = 1.0,
        arrivals: Arrivals | None = None,
        share: int = 1,
        parked_room: int = PARKED_ROOM,
    ) -> None:
        """``share``: how many workers share the migration's work. Each then claims at
        most its share of the bytes left (and at least ``MIN_HELD_BYTES``), so the large
        objects of a run spread over the workers instead of queueing in the first.
        ``parked_room``: see `PARKED_ROOM`."""
        self._ledger = ledger
        self._migration_id = migration_id
        self._ctx = context
        self.owner = owner or worker_identity()
        self._lease = lease
        self._idle_poll = idle_poll
        # Objects in flight: `concurrency` transfers (the pipeline's slots) plus as many
        # in their HEAD and verification round trips around them. Objects parked in the
        # batched looks at a bucket come on top (see `lookup`): they only wait.
        self._slots = 2 * context.spec.copy_.concurrency
        self._parked_room = parked_room
        self._pipeline: ObjectPipeline | None = None
        # Set whenever the loop has something to do: an object, a claim or a flush finished,
        # or an object parked (its slot can take the next row before anything finishes).
        # One event rather than waiting on every task: hundreds may be in flight.
        self._progress = asyncio.Event()
        self._inflight: dict[int, tuple[ObjectRow, asyncio.Task[StepResult]]] = {}
        self._finished: list[tuple[int, asyncio.Task[StepResult]]] = []
        self._backlog: deque[ObjectRow] = deque()
        self._claiming: asyncio.Task[list[ObjectRow]] | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._results: list[StepResult] = []
        # After a claim found nothing, the next one waits until then (loop time): rows come
        # back only when a retry's or a restore poll's not-before time passes.
        self._next_claim_at = 0.0
        self._arrivals = arrivals
        # `arrivals.batches` when the claim in progress started.
        self._claim_saw = 0
        # copy.mode none with a backfill: objects found wait here for their rows to be
        # written in batches, one batch at a time.
        self._backfill: BackfillQueue | None = None
        self._backfilling: asyncio.Task[list[StepResult]] | None = None
        self._backfilling_ids: list[int] = []
        if arrivals is not None:
            arrivals.subscribe(self._rows_arrived)
        self.stats = ClaimLoopStats()
        self._activity = ActivityMeter()
        self._share = max(1, share)
        # A dry-run worker whose plan the ledger no longer takes (the real run began).
        self._stop_planning = False
        # Bytes of objects not finished yet, as last read (None: not read yet).
        self._outstanding: int | None = None

    async def run(self, stop: asyncio.Event | None = None) -> ClaimLoopStats:
        """Work until no active row remains, ``stop`` is set, or a configuration error.

        Raises :class:`ConfigurationError` (after releasing every lease) when S3 refuses the
        migration as a whole, e.g. bad credentials or a missing bucket.
        """
        stop = stop or asyncio.Event()
        limiter = TokenBucket(self._ctx.bandwidth_limit) if self._ctx.bandwidth_limit else None
        spec = self._ctx.spec
        if spec.backfills_per_object and not (spec.verify.verify_only or spec.dry_run):
            assert self._ctx.backfill_dsn is not None
            self._backfill = BackfillQueue(spec, self._ctx.backfill_dsn, self._ledger, self.owner)
        async with self._ctx.clients() as (source, target):
            watch = None
            if isinstance(target, FileStore):
                watch = SpaceWatch(
                    self._ledger, self._migration_id, target, self._ctx.target_min_free
                )
            pipeline = ObjectPipeline(
                self._ctx,
                source,
                target,
                limiter=limiter,
                on_park=self._wake,
                on_bytes=self._activity.moved,
                uploads=LedgerUploads(self._ledger),
                on_space_low=watch.refused if watch is not None else lambda _: None,
            )
            self._pipeline = pipeline
            background = [
                asyncio.create_task(self._heartbeat_loop()),
                asyncio.create_task(self._report_loop()),
            ]
            if watch is not None:
                background.append(asyncio.create_task(watch.run()))
            try:
                await self._loop(pipeline, stop)
            finally:
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)
                await self._shutdown()
                await pipeline.aclose()
                if self._backfill is not None:
                    await self._backfill.close()
                with contextlib.suppress(Exception):
                    await self._activity.send(self._ledger, self._migration_id, self.owner)
        return self.stats

    async def _loop(self, pipeline: ObjectPipeline, stop: asyncio.Event) -> None:
        idle = 0
        while not stop.is_set() and not self._stop_planning:
            self._progress.clear()
            self._harvest()
            self._start(pipeline)
            self._backfill_in_background()
            self._flush_in_background()
            self._claim_in_background()
            self.stats.peak_held = max(
                self.stats.peak_held, len(self._inflight) + len(self._backlog)
            )
            if (
                self._inflight
                or self._backlog
                or self._claiming
                or self._results
                or self._backfilling
                or (self._backfill is not None and self._backfill.held)
            ):
                idle = 0
            elif self._flushing is None:
                if not await self._work_remains():
                    return
                # Rows wait for their not-before time or someone else's lease: poll.
                idle += 1
            await self._wait_for_progress(stop, idle)
        log.info("worker %s stopping on request", self.owner)

    def _harvest(self) -> None:
        """Take finished claims, flushes and objects; re-raise what must stop the worker."""
        if self._claiming is not None and self._claiming.done():
            rows = self._claiming.result()
            self._claiming = None
            self._backlog.extend(rows)
            missed = self._arrivals is not None and self._arrivals.batches != self._claim_saw
            if not rows and not missed:
                self._next_claim_at = asyncio.get_running_loop().time() + self._idle_poll
        if self._flushing is not None and self._flushing.done():
            flushing, self._flushing = self._flushing, None
            flushing.result()
        if self._backfilling is not None and self._backfilling.done():
            backfilling, self._backfilling = self._backfilling, None
            # An ApplicationError (the table cannot take the backfill) stops the worker;
            # the batch's rows stay held, so shutdown releases them.
            self._results.extend(backfilling.result())
            self._backfilling_ids = []
        finished, self._finished = self._finished, []
        for object_id, task in finished:
            entry = self._inflight.get(object_id)
            if entry is None or entry[1] is not task:
                continue  # its lease was lost meanwhile (see the heartbeat)
            row = entry[0]
            error = task.exception()
            if error is not None:
                # Only a ConfigurationError gets here (the pipeline turns every other failure
                # into a result); the row stays in flight so shutdown releases its lease.
                raise error
            del self._inflight[object_id]
            result = task.result()
            self._activity.finished(object_id, result)
            if self._backfill is not None and self._backfill.wants(row, result):
                self._backfill.add(row, result)
            else:
                self._results.append(result)
            self.stats.results[result.state.value] += 1
            if result.state is ObjectState.VERIFIED:
                self.stats.bytes_done += row.size

    def _working(self) -> int:
        """Objects in flight that hold a slot: all but those parked in a batched look
        (see `lookup`), as long as those stay within `parked_room`."""
        parked = self._pipeline.parked if self._pipeline is not None else 0
        return len(self._inflight) - min(parked, self._parked_room)

    def _start(self, pipeline: ObjectPipeline) -> None:
        while self._backlog and self._working() < self._slots:
            row = self._backlog.popleft()
            task = pipeline.start(row)
            task.add_done_callback(functools.partial(self._object_done, row.id))
            self._inflight[row.id] = (row, task)

    def _object_done(self, object_id: int, task: asyncio.Task[StepResult]) -> None:
        self._finished.append((object_id, task))
        self._progress.set()

    def _wake(self, _: object = None) -> None:
        self._progress.set()

    def _rows_arrived(self) -> None:
        self._next_claim_at = 0.0
        self._progress.set()

    def _claim_in_background(self) -> None:
        """Keep as many claimed rows waiting as may be in flight."""
        if self._claiming is not None or asyncio.get_running_loop().time() < self._next_claim_at:
            return
        wanted = 2 * self._slots - self._working() - len(self._backlog)
        holding = bool(self._backlog or self._working())
        # Claim in batches, not one row per finished object: a claim is a transaction.
        if wanted < max(1, self._slots // 2) and holding:
            return
        room = self._byte_room()
        if room is not None and room <= 0 and holding:
            return
        self._claim_saw = self._arrivals.batches if self._arrivals is not None else 0
        self._claiming = asyncio.create_task(
            self._ledger.claim(
                self._migration_id,
                self.owner,
                CLAIM_ORDER,
                wanted,
                self._lease,
                # Every version of a key goes to one target key: oldest first, one at once.
                versions_in_order=self._ctx.spec.selection.all_versions,
                max_bytes=room if room is None or room > 0 else None,
            )
        )
        self._claiming.add_done_callback(self._wake)

    def _byte_room(self) -> int | None:
        """Bytes this worker may still claim within its share (None: no bound)."""
        if self._share == 1 or self._outstanding is None:
            return None
        share = max(MIN_HELD_BYTES, self._outstanding // self._share)
        held = sum(row.size for row, _ in self._inflight.values())
        return share - held - sum(row.size for row in self._backlog)

    def _backfill_in_background(self) -> None:
        """Write the next batch of rows to backfill when it is due (one batch at a time)."""
        queue = self._backfill
        if queue is None or self._backfilling is not None:
            return
        if queue.due(idle=not self._inflight and not self._backlog):
            batch = queue.take()
            self._backfilling_ids = [row.id for row, _ in batch]
            self._backfilling = asyncio.create_task(queue.write(batch))
            self._backfilling.add_done_callback(self._wake)

    def _flush_in_background(self) -> None:
        """Write finished results; results finishing meanwhile go in the next batch."""
        if self._flushing is None and self._results:
            batch, self._results = self._results, []
            self._flushing = asyncio.create_task(self._record(batch))
            self._flushing.add_done_callback(self._wake)

    async def _record(self, batch: list[StepResult]) -> None:
        # What the stores turned out to lack, for the Degraded condition (rarely anything).
        await record_store_findings(self._ledger, self._migration_id, self._ctx.features.values())
        if self._ctx.spec.dry_run:
            applied = await self._ledger.record(self.owner, batch, only_while_dry_run=True)
            if applied < len(batch):
                # The real run began meanwhile: these rows are its work, not a plan's.
                await self._ledger.release(self.owner, [result.id for result in batch])
                self._stop_planning = True
                log.info("worker %s: the dry run is over; stopping", self.owner)
                return
        else:
            applied = await self._ledger.record(self.owner, batch)
        lost = len(batch) - applied
        if lost:
            # Our lease ran out and someone else owns those rows now; their result stands.
            self.stats.leases_lost += lost
            log.warning("worker %s: %d results dropped, their leases were lost", self.owner, lost)

    async def _wait_for_progress(self, stop: asyncio.Event, idle: int) -> None:
        """Sleep until an object, a claim or a flush finishes, a stop is requested, or it is
        time to poll the pool again."""
        if self._progress.is_set():
            return
        busy = self._inflight or self._claiming or self._flushing
        timeout = 0.5 if busy else min(self._idle_poll * max(1, idle), 5.0)
        stopper = asyncio.ensure_future(stop.wait())
        progress = asyncio.ensure_future(self._progress.wait())
        try:
            await asyncio.wait({stopper, progress}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            stopper.cancel()
            progress.cancel()

    async def _work_remains(self) -> bool:
        """Whether any row could still need a worker (now or after a wait)."""
        if self._arrivals is not None and self._arrivals.open:
            return True
        counts = await self._ledger.counts(self._migration_id)
        return any(counts.state(state).objects for state in ACTIVE_STATES)

    def _held_ids(self) -> list[int]:
        waiting = self._backfill.held if self._backfill is not None else []
        return [
            *self._inflight,
            *(row.id for row in self._backlog),
            *waiting,
            *self._backfilling_ids,
        ]

    async def _heartbeat_loop(self) -> None:
        """Extend the leases every third of their length, for as long as the worker runs.

        A failed extension (the ledger restarting, a dropped connection) is tried again at
        the next beat: the leases outlive two missed beats, and a loop that ended here
        would let them all expire under objects still being copied.
        """
        interval = max(1.0, self._lease.total_seconds() / 3)
        while True:
            await asyncio.sleep(interval)
            ids = self._held_ids()
            if not ids:
                continue
            try:
                held = await self._ledger.heartbeat(self.owner, ids, self._lease)
            except Exception as exc:
                log.warning("worker %s: extending %d leases failed: %s", self.owner, len(ids), exc)
                continue
            lost = set(ids) - held
            if not lost:
                continue
            self._backlog = deque(row for row in self._backlog if row.id not in lost)
            for object_id in lost:
                entry = self._inflight.pop(object_id, None)
                if entry is not None:
                    entry[1].cancel()
                self._activity.abandoned(object_id)
                self.stats.leases_lost += 1

    async def _report_loop(self) -> None:
        """Tell the ledger what this worker is doing, every few seconds (see `activity`),
        and (when workers share the work) read how much is left."""
        loop = asyncio.get_running_loop()
        next_look = loop.time()
        while True:
            try:
                await self._activity.send(self._ledger, self._migration_id, self.owner)
                if self._share > 1 and loop.time() >= next_look:
                    counts = await self._ledger.counts(self._migration_id)
                    self._outstanding = sum(counts.state(s).bytes for s in ACTIVE_STATES)
                    next_look = loop.time() + OUTSTANDING_SECONDS
                    self._wake()
            except Exception as exc:
                log.debug("worker %s: reporting activity failed: %s", self.owner, exc)
            await asyncio.sleep(REPORT_SECONDS)

    async def _shutdown(self) -> None:
        """Cancel unfinished work, keep finished results, give the rest back to the pool.

        Objects parked in the source re-check are copied already: they get one listing's
        time to be verified rather than being copied again by the next run.
        """
        pipeline = self._pipeline
        parked: set[asyncio.Task[StepResult]] = set()
        if pipeline is not None:
            pipeline.drain()
            parked = {t for row, t in self._inflight.values() if pipeline.awaits_recheck(row)}
        for _, task in self._inflight.values():
            if task not in parked:
                task.cancel()
        if parked:
            await asyncio.wait(parked, timeout=PARKED_GRACE_SECONDS)
            for task in parked:
                task.cancel()
        if self._inflight:
            await asyncio.gather(*(t for _, t in self._inflight.values()), return_exceptions=True)
        if self._claiming is not None:
            # Let a claim in progress land, so its rows are released rather than left leased.
            with contextlib.suppress(Exception):
                self._backlog.extend(await self._claiming)
        if self._flushing is not None:
            with contextlib.suppress(Exception):
                await self._flushing
        if self._backfilling is not None:
            # A batch being written is let finish (its transaction is short), so what it
            # wrote is recorded rather than found again by the next run.
            with contextlib.suppress(Exception):
                self._results.extend(await self._backfilling)
                self._backfilling_ids = []
        # Objects found but not backfilled yet: the next run looks at them again.
        released = self._backfill.give_back() if self._backfill is not None else []
        finished = [
            (object_id, task)
            for object_id, (_, task) in self._inflight.items()
            if task.done() and not task.cancelled() and task.exception() is None
        ]
        for object_id, task in finished:
            self._results.append(task.result())
            del self._inflight[object_id]
        if self._results:
            batch, self._results = self._results, []
            with contextlib.suppress(Exception):
                await self._record(batch)
        unfinished = self._held_ids() + released
        for object_id in unfinished:
            self._activity.abandoned(object_id)
        if unfinished:
            await self._ledger.release(self.owner, unfinished)
            self._inflight.clear()
            self._backlog.clear()
            self._backfilling_ids = []


async def run_claim_loops(
    ledger: Ledger,
    migration_id: int,
    context: MigrationContext,
    count: int,
    stop: asyncio.Event,
    *,
    owner_prefix: str | None = None,
    arrivals: Arrivals | None = None,
) -> ClaimLoopStats:
    """Run ``count`` workers in this process; the first configuration error stops them all."""
    workers = [
        ClaimLoop(
            ledger,
            migration_id,
            context,
            owner=worker_identity(owner_prefix),
            arrivals=arrivals,
            share=count,
        )
        for _ in range(count)
    ]
    tasks = [asyncio.create_task(w.run(stop)) for w in workers]
    try:
        done = await asyncio.gather(*tasks)
    except BaseException:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    total = ClaimLoopStats()
    for stats in done:
        total.results.update(stats.results)
        total.bytes_done += stats.bytes_done
        total.leases_lost += stats.leases_lost
    return total
