"""Reconciling one MigrationCleanup: report the gates, run the deletion Job, show the outcome.

:func:`objmig.engine.cleanup_lifecycle.decide_cleanup` (which ``objmig cleanup`` asks too)
says whether a pass runs; here a pass is a Job.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from objmig.api.conditions import ConditionType, Reason, set_condition
from objmig.api.loading import explain
from objmig.api.migration import JobRef, ObjectMeta, ObjectMigration, ObjectMigrationSpec
from objmig.api.migration_cleanup import MigrationCleanup, MigrationCleanupStatus, UnmetGate
from objmig.controller.config import OperatorConfig
from objmig.controller.jobs import CLEANUP_LABEL, JobWant, cleanup_job, cleanup_run, job_name
from objmig.controller.kube import Kube, KubeRefused
from objmig.controller.outcome import Event, Outcome, ledger_reachable
from objmig.engine.cleanup_lifecycle import CleanupObserved, decide_cleanup
from objmig.engine.deletion_pass import cleanup_status, migration_facts, take_up_spec
from objmig.ledger import Ledger, MigrationConflict, Problem


class CleanupService:
    """Reconciles MigrationCleanups against the ledger and the cluster."""

    def __init__(self, ledger: Ledger, kube: Kube, config: OperatorConfig) -> None:
        self._ledger = ledger
        self._kube = kube
        self._config = config

    async def reconcile(self, body: Mapping[str, Any]) -> Outcome:
        """One level-based pass over one cleanup."""
        previous = _previous(body)
        try:
            cleanup = MigrationCleanup.model_validate(dict(body))
        except ValidationError as error:
            return _blocked(previous, Reason.INVALID_SPEC, "; ".join(explain(error)), failed=True)
        meta, spec = cleanup.metadata, cleanup.spec
        if await self._kube.namespace_terminating(meta.namespace):
            # See MigrationService._wind_down: a deleted Job lets the namespace go.
            running = await self._kube.jobs_of(meta.namespace, meta.name, CLEANUP_LABEL)
            for unfinished in running.values():
                if not unfinished.finished:
                    await self._kube.delete_job(meta.namespace, unfinished.name)
            return Outcome(None)
        migration_name = f"{meta.namespace}/{spec.migration_ref.name}"
        migration_id = await self._ledger.find_migration(migration_name)
        if migration_id is None:
            return _blocked(
                previous,
                Reason.MIGRATION_NOT_FOUND,
                f"no ObjectMigration {spec.migration_ref.name} has run in this namespace",
            )
        try:
            cleanup_id = await self._ledger.ensure_cleanup(
                f"{meta.namespace}/{meta.name}", meta.uid or "", migration_id
            )
        except MigrationConflict as error:
            return _blocked(previous, Reason.LEDGER_CONFLICT, str(error), failed=True)
        # The worker reads the spec from the ledger, like migration workers do; a changed
        # spec starts a new pass, with a Job of its own.
        pass_ = await take_up_spec(self._ledger, cleanup_id, spec)
        await self._ledger.update_cleanup_state(cleanup_id, uid=meta.uid)
        state = await self._ledger.get_state(migration_id)
        jobs = await self._kube.jobs_of(meta.namespace, meta.name, CLEANUP_LABEL)
        name = job_name(meta.name, cleanup_run(pass_))
        job = jobs.get(name)
        decision = decide_cleanup(
            CleanupObserved(
                spec=spec,
                facts=migration_facts(state, spec),
                state=await self._ledger.get_cleanup_state(cleanup_id),
                now=datetime.now(UTC),
                run=job.run() if job is not None else None,
            )
        )
        events: list[Event] = []
        if decision.fail is not None:
            await self._ledger.update_cleanup_state(cleanup_id, failed=decision.fail)
        if decision.run_pass:
            migration = ObjectMigration(
                metadata=ObjectMeta(name=spec.migration_ref.name, namespace=meta.namespace),
                spec=ObjectMigrationSpec.model_validate(state.spec),
            )
            want = JobWant(name, "cleanup", 1, suspend=False)
            try:
                created = await self._kube.create_job(
                    cleanup_job(cleanup, migration, want, self._config)
                )
            except KubeRefused as refused:
                if not refused.permanent:
                    raise  # tried again at the next pass (the handler says so in an Event)
                message = f"{refused}; fix the spec (editing it tries again)"
                failure = Problem(reason=Reason.JOB_REJECTED, message=message)
                await self._ledger.update_cleanup_state(cleanup_id, failed=failure)
                created = False
            if created:
                verb = "dry run" if spec.dry_run else "deleting"
                events.append(Event("Normal", "CleanupStarted", f"gates passed; {verb}"))
        status = await cleanup_status(
            self._ledger, cleanup_id, migration_id, spec, previous, generation=meta.generation
        )
        status.jobs = [
            JobRef(
                name=j.name,
                stage="cleanup",
                active=j.active,
                succeeded=j.succeeded,
                failed=j.failed,
            )
            for j in sorted(jobs.values(), key=lambda j: j.name)
        ]
        status.conditions, back = ledger_reachable(status.conditions)
        events += back
        if previous.phase != status.phase:
            kind = "Warning" if status.phase in ("Blocked", "Failed") else "Normal"
            detail = "; ".join(f"{g.reason}: {g.message}" for g in status.unmet_gates)
            events.append(
                Event(
                    kind,
                    status.phase,
                    f"{previous.phase} -> {status.phase}" + (f": {detail}" if detail else ""),
                )
            )
        wire = status.to_wire()
        return Outcome(wire if wire != previous.to_wire() else None, events)

    async def forget(self, body: Mapping[str, Any]) -> bool:
        """On deletion: drop the cleanup's per-object outcomes (the migration keeps its rows)."""
        meta = body["metadata"]
        cleanup_id = await self._ledger.find_cleanup(
            f"{meta.get('namespace', 'default')}/{meta['name']}"
        )
        return cleanup_id is not None and await self._ledger.delete_cleanup(cleanup_id)


def _previous(body: Mapping[str, Any]) -> MigrationCleanupStatus:
    try:
        return MigrationCleanupStatus.model_validate(dict(body.get("status") or {}))
    except ValidationError:
        return MigrationCleanupStatus()


def _blocked(
    previous: MigrationCleanupStatus, reason: str, message: str, *, failed: bool = False
) -> Outcome:
    status = previous.model_copy(deep=True)
    now = datetime.now(UTC)
    status.conditions = set_condition(
        status.conditions, ConditionType.GATES_PASSED, "False", reason, message, now=now
    )
    if failed:
        status.conditions = set_condition(
            status.conditions, ConditionType.FAILED, "True", reason, message, now=now
        )
    status.unmet_gates = [UnmetGate(gate="Migration", reason=reason, message=message)]
    status.phase = "Failed" if failed else "Blocked"
    wire = status.to_wire()
    if wire == previous.to_wire():
        return Outcome(None)  # said already: no new Event every pass
    return Outcome(wire, [Event("Warning", reason, message)])
