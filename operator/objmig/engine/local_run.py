"""The local driver: one ``objmig run`` from scan to cutover, resumable at any point.

It asks :func:`objmig.engine.lifecycle.decide` what the migration needs, as the operator
does, and carries it out in this process: stages run as asyncio tasks (the scan with
workers copying meanwhile), cutover and rollback in line. Every decision starts from where
the ledger says the migration stands, so running the same spec again after Ctrl-C,
``kill -9`` or a pause picks up exactly there: a finished scan is not repeated, verified
objects are not copied again, a cutover is not performed twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from objmig.api.conditions import Reason, s3_reason
from objmig.api.migration import ObjectMigration, ObjectMigrationStatus
from objmig.engine.audit import run_audit
from objmig.engine.bookkeeping import (
    RateMeter,
    compute_status,
    cut_over,
    record_decision,
    record_failure,
    record_store_findings,
    record_verification,
    roll_back,
    take_up_spec,
)
from objmig.engine.claim_loop import Arrivals, dead_local_owners, run_claim_loops
from objmig.engine.context import MigrationContext, check_access, check_application
from objmig.engine.lifecycle import Decision, Observed, Outcome, StageWant, decide
from objmig.engine.pipeline.outcomes import ApplicationError, ConfigurationError
from objmig.engine.scan import (
    ScanFailed,
    config_map_worklist,
    manifest_config_map,
    run_scan,
    scan_failure,
)
from objmig.engine.secrets import MappingConfigMaps, SecretSource
from objmig.engine.status import tally
from objmig.ledger import Ledger
from objmig.storage.errors import classify, describe

log = logging.getLogger(__name__)

#: How a local run ended: where the lifecycle rests, or that it was interrupted.
RunOutcome = Literal[
    "cut-over", "awaiting-cutover", "planned", "paused", "failed", "interrupted", "rolled-back"
]
StatusCallback = Callable[[ObjectMigrationStatus], None]
#: How a user of ``objmig run`` tries again after a cutover or rollback stopped half-way.
_RETRY = "run again"


@dataclass(frozen=True)
class RunResult:
    """How a run ended, and the status at that moment."""

    outcome: RunOutcome
    status: ObjectMigrationStatus


class LocalRun:
    """Drives one migration to its end in this process: decide, act, until it rests."""

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
        """``config_maps``: ConfigMap data by name, for a ``manifest.configMapRef`` or a
        ``caBundle``."""
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
        self._access_checked = False

    async def run(self, stop: asyncio.Event | None = None) -> RunResult:
        """Scan, copy and verify, catch up, and cut over when the gates hold."""
        stop = stop or asyncio.Event()
        context = MigrationContext.resolve(
            self._migration, self._secrets, MappingConfigMaps(self._config_maps)
        )
        worklist_ref = manifest_config_map(self._spec)
        worklist = None
        if worklist_ref is not None:
            worklist = config_map_worklist(
                worklist_ref,
                self._config_maps.get(worklist_ref.name),
                "here: pass --config-maps FILE with the ConfigMap manifest",
            )
        self._migration_id = mid = await self._ledger.ensure_migration(
            context.name, self._migration.metadata.uid or ""
        )
        # Every run takes the spec up anew: running again is how a user retries. Free
        # space is measured anew by the workers: running again is how a pause for it ends.
        await take_up_spec(self._ledger, mid, self._spec)
        await self._ledger.update_state(mid, target_space=None)
        if worklist is not None:
            await self._ledger.update_state(mid, manifest_config_map=worklist)
        dead = dead_local_owners(await self._ledger.lease_owners(mid))
        if dead:
            released = await self._ledger.expire_leases(mid, dead)
            log.info("released %d leases of %d dead local workers", released, len(dead))
        try:
            while True:
                observed = await self._observe()
                decision = decide(observed)
                await record_decision(self._ledger, mid, observed, decision)
                outcome = await self._act(context, stop, decision)
                if outcome is not None:
                    return RunResult(outcome, await self._publish())
        except ConfigurationError as error:
            await record_failure(self._ledger, mid, s3_reason(error.error.code), str(error))
            return RunResult("failed", await self._publish())
        except ApplicationError as error:
            await record_failure(self._ledger, mid, error.reason, str(error))
            return RunResult("failed", await self._publish())
        except ScanFailed as error:
            await record_failure(self._ledger, mid, Reason.SCAN_FAILED, str(error))
            return RunResult("failed", await self._publish())

    async def _observe(self) -> Observed:
        counts = await self._ledger.counts(self._migration_id)
        return Observed(
            spec=self._spec,
            tally=tally(counts),
            state=await self._ledger.get_state(self._migration_id),
            copies_while_scanning=True,
        )

    async def _act(
        self, context: MigrationContext, stop: asyncio.Event, decision: Decision
    ) -> RunOutcome | None:
        """Carry out one decision; how the run ends, or None to decide again."""
        mid = self._migration_id
        if decision.cut_over:
            await cut_over(self._ledger, mid, self._spec, self._secrets, None, retry=_RETRY)
            return None
        if decision.roll_back:
            await roll_back(self._ledger, mid, self._spec, self._secrets, None, retry=_RETRY)
            return None
        if decision.stage is not None:
            if not self._access_checked:
                refused = await check_access(context)
                await record_store_findings(self._ledger, mid, context.features.values())
                if refused is not None:
                    code, message = refused
                    await record_failure(self._ledger, mid, s3_reason(code), message)
                    return None
                await check_application(context)
                self._access_checked = True
            return await self._run_stage(context, stop, decision.stage)
        if decision.outcome is None:
            return None  # bookkeeping only (a new round, a catch-up result): decide again
        if decision.outcome == Outcome.AWAITING_CUTOVER:
            # The digest a cleanup approval quotes, for the user to look at before approving.
            await record_verification(self._ledger, mid)
        return decision.outcome.value

    async def _run_stage(
        self, context: MigrationContext, stop: asyncio.Event, want: StageWant
    ) -> RunOutcome | None:
        if want.stage == "audit":
            try:
                await run_audit(
                    self._ledger, self._migration_id, context, round_=want.round, wave=want.wave
                )
            except Exception as error:
                problem = classify(error)
                if problem.is_config_error:
                    raise ConfigurationError(problem, "audit", spec_prefix(context)) from error
                await record_failure(
                    self._ledger, self._migration_id, Reason.AUDIT_FAILED, describe(error)
                )
            return None
        if want.stage == "scan" and not want.copy_meanwhile:
            await self._scan(context, None, want.scan_id)
            return None
        outcome = await self._copy_until_done(
            context, stop, scan_id=want.scan_id if want.stage == "scan" else None
        )
        return outcome

    # -- stages -----------------------------------------------------------------------------

    async def _copy_until_done(
        self, context: MigrationContext, stop: asyncio.Event, *, scan_id: int | None
    ) -> RunOutcome | None:
        """Run the workers until no work is left; "interrupted" when stopped meanwhile.

        ``scan_id``: inventory the source meanwhile, as that scan. Workers claim each batch
        of rows as the scan records it (a run of small objects would otherwise wait for the
        whole listing before its first copy), and a failed scan stops them and is raised.
        """
        workers_stop = asyncio.Event()
        arrivals = Arrivals() if scan_id is not None else None
        scan = (
            asyncio.create_task(self._scan(context, arrivals, scan_id))
            if scan_id is not None
            else None
        )
        if scan is not None:

            def stop_workers_if_failed(task: asyncio.Task[None]) -> None:
                if not task.cancelled() and task.exception() is not None:
                    workers_stop.set()

            scan.add_done_callback(stop_workers_if_failed)
        monitor = asyncio.create_task(self._monitor(stop, workers_stop))
        try:
            await run_claim_loops(
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
        return "interrupted" if stop.is_set() else None

    async def _monitor(self, stop: asyncio.Event, workers_stop: asyncio.Event) -> None:
        """Publish status periodically; stop the workers when the lifecycle says stop.

        The decision is taken again as it is between stages, so a failure budget exceeded
        mid-copy pauses the run here exactly as it would pause the operator's Jobs.
        """
        while True:
            stop_wait = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({stop_wait}, timeout=self._status_interval)
            finally:
                stop_wait.cancel()
            if stop.is_set():
                workers_stop.set()
                return
            observed = await self._observe()
            decision = decide(observed)
            if decision.suspend or decision.fail is not None:
                await record_decision(self._ledger, self._migration_id, observed, decision)
                workers_stop.set()
            elif decision.pause is not None or decision.clear_pause:
                # A pause the workers wait out (a target directory short of space): say
                # so, and say when it ends; nothing else of the decision applies mid-stage.
                pausing = Decision(pause=decision.pause, clear_pause=decision.clear_pause)
                await record_decision(self._ledger, self._migration_id, observed, pausing)
            await self._publish()

    async def _scan(
        self, context: MigrationContext, arrivals: Arrivals | None, scan_id: int | None
    ) -> None:
        """One inventory of the source; ``arrivals`` hears of each batch of rows."""
        try:
            async with context.clients() as (source, _):
                outcome = await run_scan(
                    self._ledger,
                    self._migration_id,
                    context,
                    source,
                    scan_id=scan_id,
                    on_rows=arrivals.arrived if arrivals is not None else None,
                )
            log.info("scan %d found %d new or changed objects", outcome.scan_id, outcome.delta)
        except ApplicationError:
            raise  # the application's worklist says its own reason, as in the scan pod
        except Exception as exc:
            problem = classify(exc)
            if problem.is_config_error:
                raise ConfigurationError(problem, "scan", spec_prefix(context)) from exc
            spec = context.spec.source
            raise scan_failure(exc, spec.bucket, spec.prefix) from exc
        finally:
            if arrivals is not None:
                arrivals.close()

    # -- status -----------------------------------------------------------------------------

    async def _publish(self) -> ObjectMigrationStatus:
        status = await compute_status(
            self._ledger, self._migration_id, self._spec, self._previous, self._rates
        )
        self._previous = status
        self._on_status(status)
        return status


def spec_prefix(context: MigrationContext) -> str:
    """The source location being scanned, for error messages."""
    source = context.spec.source
    if source.filesystem is not None:
        return f"{source.filesystem.path.rstrip('/')}/{source.prefix}"
    return f"{source.bucket or '(every selected bucket)'}/{source.prefix}"
