"""The local driver: one ``objmig run`` from scan to cutover, resumable at any point.

Every stage starts by reading where the ledger says the migration stands, so running the
same spec again after Ctrl-C, ``kill -9`` or a pause picks up exactly there: a finished scan
is not repeated, verified objects are not copied again, a cutover is not performed twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from objmig.api.migration import ObjectMigration, ObjectMigrationSpec, ObjectMigrationStatus
from objmig.engine.context import MigrationContext, check_access
from objmig.engine.cutover import perform_cutover, perform_rollback, stopped_half_way
from objmig.engine.pipeline import PLAN_REASONS, ConfigurationError
from objmig.engine.policy import CatchUp, cutover_gate, failure_budget
from objmig.engine.scan import config_map_manifest_patch, manifest_config_map, run_scan
from objmig.engine.secrets import SecretSource
from objmig.engine.status import StatusInputs, build_status, cutover_inputs, tally
from objmig.engine.worker import Arrivals, dead_local_owners, run_workers
from objmig.ledger import Counts, Ledger, ObjectState
from objmig.storage.errors import classify

log = logging.getLogger(__name__)

Outcome = Literal[
    "cut-over", "awaiting-cutover", "planned", "paused", "failed", "interrupted", "rolled-back"
]
StatusCallback = Callable[[ObjectMigrationStatus], None]


@dataclass(frozen=True)
class RunResult:
    """How a run ended, and the status at that moment."""

    outcome: Outcome
    status: ObjectMigrationStatus


class RateMeter:
    """Bytes and objects per second over a sliding window of samples."""

    def __init__(self, window: float = 20.0) -> None:
        self._window = window
        self._samples: deque[tuple[float, int, int]] = deque()

    def sample(self, done_bytes: int, done_objects: int) -> tuple[float, float]:
        """Record the finished totals now; return (bytes/s, objects/s) over the window."""
        now = time.monotonic()
        self._samples.append((now, done_bytes, done_objects))
        while len(self._samples) > 2 and now - self._samples[0][0] > self._window:
            self._samples.popleft()
        first = self._samples[0]
        elapsed = now - first[0]
        if elapsed <= 0:
            return 0.0, 0.0
        return (done_bytes - first[1]) / elapsed, (done_objects - first[2]) / elapsed


class LocalRun:
    """Drives one migration to its end in this process."""

    def __init__(
        self,
        ledger: Ledger,
        migration: ObjectMigration,
        secrets: SecretSource,
        *,
        workers: int = 1,
        config_maps: Mapping[str, Mapping[str, str]] | None = None,
        on_status: StatusCallback | None = None,
        status_interval: float = 1.0,
    ) -> None:
        """``config_maps``: ConfigMap data by name, for a ``manifest.configMapRef``."""
        self._ledger = ledger
        self._migration = migration
        self._spec = migration.spec
        self._secrets = secrets
        self._workers = workers
        self._config_maps = config_maps or {}
        self._on_status = on_status or (lambda _status: None)
        self._status_interval = status_interval
        self._rates = RateMeter()
        self._previous = ObjectMigrationStatus()
        self._migration_id = 0

    async def run(self, stop: asyncio.Event | None = None) -> RunResult:
        """Scan, copy and verify, catch up, and cut over when the gates hold."""
        stop = stop or asyncio.Event()
        context = MigrationContext.resolve(self._migration, self._secrets)
        inputs: dict[str, Any] = {"spec": self._spec.to_wire(), "paused": None, "failed": None}
        worklist = manifest_config_map(self._spec)
        if worklist is not None:
            inputs |= config_map_manifest_patch(
                worklist,
                self._config_maps.get(worklist.name),
                "here: pass --config-maps FILE with the ConfigMap manifest",
            )
        self._migration_id = mid = await self._ledger.ensure_migration(
            context.name, self._migration.metadata.uid or ""
        )
        await self._ledger.update_state(mid, inputs)
        await switch_plan_mode(self._ledger, mid, dry_run=self._spec.dry_run)
        dead = dead_local_owners(await self._ledger.lease_owners(mid))
        if dead:
            released = await self._ledger.expire_leases(mid, dead)
            log.info("released %d leases of %d dead local workers", released, len(dead))
        state = await self._ledger.get_state(mid)

        if self._spec.cutover.rollback:
            return await self._rollback(mid)
        if state.get("cutover", {}).get("at") and not state["cutover"].get("rolledBackAt"):
            return RunResult("cut-over", await self._publish())

        refused = await check_access(context)
        if refused is not None:
            code, message = refused
            await self._ledger.update_state(
                mid, {"failed": {"reason": f"S3{code}", "message": message}}
            )
            return RunResult("failed", await self._publish())
        try:
            scanned = state.get("scan", {})
            scanning = not scanned.get("completedAt") or scanned.get("running")
            while True:
                outcome = await self._copy_until_done(context, stop, scanning=bool(scanning))
                scanning = False
                if outcome is not None:
                    return RunResult(outcome, await self._publish())
                if not await self._catch_up(context):
                    break
        except ConfigurationError as error:
            await self._ledger.update_state(
                mid,
                {"failed": {"reason": f"S3{error.error.code}", "message": str(error)}},
            )
            return RunResult("failed", await self._publish())

        if self._spec.dry_run:
            return RunResult("planned", await self._publish())
        counts = await self._ledger.counts(mid)
        state = await self._ledger.get_state(mid)
        gate = cutover_gate(self._spec, cutover_inputs(counts, state))
        await record_verification(self._ledger, mid)
        if not gate.ok:
            return RunResult("awaiting-cutover", await self._publish())
        try:
            await perform_cutover(self._ledger, mid, self._spec, self._secrets, None)
        except Exception as error:
            await self._ledger.update_state(mid, stopped_half_way("cutover", error, "run again"))
            return RunResult("failed", await self._publish())
        return RunResult("cut-over", await self._publish())

    # -- stages -----------------------------------------------------------------------------

    async def _copy_until_done(
        self, context: MigrationContext, stop: asyncio.Event, *, scanning: bool = False
    ) -> Outcome | None:
        """Run the workers until no work is left; an outcome when the run must end early.

        ``scanning``: inventory the source meanwhile. Workers claim each batch of rows as
        the scan records it (a run of small objects would otherwise wait for the whole
        listing before its first copy), and a failed scan stops them and is raised.
        """
        if self._spec.suspend:
            if scanning:
                await self._scan(context, None)
            return "paused"
        workers_stop = asyncio.Event()
        arrivals = Arrivals() if scanning else None
        scan = asyncio.create_task(self._scan(context, arrivals)) if arrivals else None
        if scan is not None:

            def stop_workers_if_failed(task: asyncio.Task[None]) -> None:
                if not task.cancelled() and task.exception() is not None:
                    workers_stop.set()

            scan.add_done_callback(stop_workers_if_failed)
        monitor = asyncio.create_task(self._monitor(stop, workers_stop))
        try:
            await run_workers(
                self._ledger,
                self._migration_id,
                context,
                self._workers,
                workers_stop,
                arrivals=arrivals,
            )
        finally:
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
            if scan is not None:
                # Still running only when the copy ended early (stop, pause, failure): the
                # next run scans again, which is idempotent.
                scan.cancel()
                await asyncio.gather(scan, return_exceptions=True)
        failure = None if scan is None or scan.cancelled() else scan.exception()
        if failure is not None:
            raise failure
        if stop.is_set():
            return "interrupted"
        state = await self._ledger.get_state(self._migration_id)
        if state.get("paused"):
            return "paused"
        return None

    async def _monitor(self, stop: asyncio.Event, workers_stop: asyncio.Event) -> None:
        """Publish status periodically; pause the run when the failure budget is exceeded."""
        while True:
            stop_wait = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({stop_wait}, timeout=self._status_interval)
            finally:
                stop_wait.cancel()
            if stop.is_set():
                workers_stop.set()
                return
            counts = await self._ledger.counts(self._migration_id)
            budget = failure_budget(tally(counts), self._spec.failure_policy)
            if not budget.ok:
                await self._ledger.update_state(
                    self._migration_id,
                    {"paused": {"reason": budget.reason, "message": budget.message}},
                )
                workers_stop.set()
            await self._publish()

    async def _scan(self, context: MigrationContext, arrivals: Arrivals | None) -> None:
        """The first inventory of the run; ``arrivals`` hears of each batch of rows."""
        try:
            async with context.clients() as (source, _):
                await run_scan(
                    self._ledger,
                    self._migration_id,
                    context,
                    source,
                    on_rows=arrivals.arrived if arrivals is not None else None,
                )
        except Exception as exc:
            problem = classify(exc)
            if not problem.is_config_error:
                raise
            raise ConfigurationError(problem, "scan", spec_prefix(context)) from exc
        finally:
            if arrivals is not None:
                arrivals.close()

    async def _catch_up(self, context: MigrationContext) -> bool:
        """Re-scan before cutover if a round is due; True when the re-scan found work to do."""
        catch_up = CatchUp.of(await self._ledger.get_state(self._migration_id))
        if not catch_up.due(self._spec):
            return False
        async with context.clients() as (source, _):
            outcome = await run_scan(self._ledger, self._migration_id, context, source)
        round_ = catch_up.rounds + 1
        await self._ledger.update_state(
            self._migration_id, catch_up.recorded(round_, outcome.delta)
        )
        log.info("catch-up round %d found %d new or changed objects", round_, outcome.delta)
        return outcome.delta > 0

    async def _rollback(self, mid: int) -> RunResult:
        try:
            gate = await perform_rollback(self._ledger, mid, self._spec, self._secrets, None)
        except Exception as error:
            # rollbackStarted stays set: a half-reverted cutover keeps cleanups out.
            await self._ledger.update_state(mid, stopped_half_way("rollback", error, "run again"))
            return RunResult("failed", await self._publish())
        status = await self._publish()
        if gate.ok or status.cutover.rolled_back_at is not None:
            return RunResult("rolled-back", status)
        return RunResult("failed", status)

    # -- status -----------------------------------------------------------------------------

    async def _publish(self) -> ObjectMigrationStatus:
        status = await compute_status(
            self._ledger, self._migration_id, self._spec, self._previous, self._rates
        )
        self._previous = status
        self._on_status(status)
        return status


async def switch_plan_mode(ledger: Ledger, migration_id: int, *, dry_run: bool) -> None:
    """Record whether the migration only plans; leaving a dry run requeues the plan's rows.

    A dry run ends each row as skipped with what a real run would do (`PLAN_REASONS`): a
    real run after it must not mistake them for finished work (the cutover gate counts
    skipped rows as done). Both drivers call this whenever they take up the spec.
    """
    state = await ledger.get_state(migration_id)
    if state.get("dryRun") and not dry_run:
        await ledger.requeue(migration_id, [ObjectState.SKIPPED], skip_reasons=PLAN_REASONS)
    await ledger.update_state(migration_id, {"dryRun": dry_run})


async def compute_status(
    ledger: Ledger,
    migration_id: int,
    spec: ObjectMigrationSpec,
    previous: ObjectMigrationStatus | None = None,
    rates: RateMeter | None = None,
    *,
    window: int = 50,
    generation: int | None = None,
    counts: Counts | None = None,
) -> ObjectMigrationStatus:
    """Gather the ledger's view of a migration and build its status (used by both drivers).

    ``counts`` spares a second read when the caller has just taken them.
    """
    if counts is None:
        counts = await ledger.counts(migration_id)
    state = await ledger.get_state(migration_id)
    rows, truncated = await ledger.window(migration_id, window)
    done_bytes = sum(
        counts.state(s).bytes
        for s in (ObjectState.VERIFIED, ObjectState.FAILED, ObjectState.SKIPPED)
    )
    done_objects = sum(
        counts.state(s).objects
        for s in (ObjectState.VERIFIED, ObjectState.FAILED, ObjectState.SKIPPED)
    )
    rate, objects_rate = rates.sample(done_bytes, done_objects) if rates else (0.0, 0.0)
    plan_reasons = plan_classes = None
    if spec.dry_run:
        plan_reasons = await ledger.breakdown(migration_id, "skip_reason")
        plan_classes = await ledger.breakdown(migration_id, "storage_class")
    return build_status(
        StatusInputs(
            spec=spec,
            generation=generation,
            counts=counts,
            state=state,
            window=rows,
            window_truncated=truncated,
            rate=rate,
            objects_rate=objects_rate,
            now=datetime.now(UTC),
            digest=state.get("verification", {}).get("digest"),
            plan_reasons=plan_reasons,
            plan_classes=plan_classes,
        ),
        previous or ObjectMigrationStatus(),
    )


async def record_verification(ledger: Ledger, migration_id: int) -> str:
    """Compute the verification digest over the verified rows and record it; return it."""
    digest = await ledger.verification_digest(migration_id)
    value = f"sha256:{digest.sha256}"
    await ledger.update_state(
        migration_id,
        {"verification": {"digest": value, "objects": digest.objects, "bytes": digest.bytes}},
    )
    return value


def spec_prefix(context: MigrationContext) -> str:
    """The source location being scanned, for error messages."""
    return f"{context.spec.source.bucket}/{context.spec.source.prefix}"
