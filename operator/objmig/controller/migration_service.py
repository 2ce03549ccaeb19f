"""Reconciling one ObjectMigration: gather, decide, act, and describe the result.

The Kopf handlers call :meth:`MigrationService.reconcile` on a timer. It reads the ledger and
the migration's Jobs, asks :func:`objmig.engine.lifecycle.decide` what to do (the decision
``objmig run`` asks too), carries it out with Jobs, and returns the new status (or None when
nothing changed), plus the Events worth emitting.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ValidationError

from objmig.api.conditions import ConditionType, Reason, find_condition, set_condition
from objmig.api.loading import explain
from objmig.api.migration import (
    JobRef,
    ObjectMigration,
    ObjectMigrationStatus,
    ObjectStatus,
    ReportRef,
)
from objmig.controller.config import OperatorConfig
from objmig.controller.jobs import JobObservation, JobWant, job_name, stage_run, worker_job
from objmig.controller.kube import Kube, KubeConfigMaps, KubeRefused
from objmig.controller.outcome import Event, Outcome, ledger_reachable
from objmig.engine.bookkeeping import (
    RateMeter,
    compute_status,
    cut_over,
    record_decision,
    record_failure,
    refresh_verification,
    retry_failed,
    roll_back,
    take_up_spec,
)
from objmig.engine.context import ledger_name
from objmig.engine.lifecycle import Decision, Observed, RunObservation, StageWant, decide
from objmig.engine.policy import Tally
from objmig.engine.scan import config_map_worklist, manifest_config_map
from objmig.engine.secrets import (
    SESSION_TOKEN,
    ConfigMapNotFound,
    EnvSecrets,
    env_name,
    referenced_config_maps,
    secret_fields,
)
from objmig.engine.status import tally
from objmig.ledger import Ledger, MigrationConflict, MigrationState, Problem, RetryRecord

log = logging.getLogger(__name__)

#: How a user of the operator tries again after a cutover or rollback stopped half-way.
_RETRY = "edit the spec"

#: Annotation that keeps the ledger rows (the full report) after the resource is deleted.
RETAIN_REPORT = "objmig.dev/retain-report"
#: Annotation asking to retry the failed objects (``objmig retry`` in the cluster): each new
#: value is honoured once, e.g. ``kubectl annotate om NAME objmig.dev/retry-failed=$(date +%s)``.
RETRY_FAILED = "objmig.dev/retry-failed"

#: Most bytes the per-object window may take in the status. The window holds up to 50
#: entries, and an S3 key alone may be 1 KiB: without a byte bound the status could pass
#: 64 KiB on keys alone. Typical keys fit all 50 entries in a few KiB.
WINDOW_BYTES = 16 * 1024
#: Longest lastError kept in the window (the ledger and the report keep the full text).
ERROR_CHARS = 300

#: CutoverReady reasons that mean "waiting on someone", worth an Event when they appear.
_BLOCKING = frozenset(
    {
        Reason.AWAITING_APPROVAL,
        Reason.FAILURE_BUDGET_EXCEEDED,
        Reason.FAILURE_RATIO_EXCEEDED,
        Reason.CATCH_UP_NOT_CONVERGING,
    }
)


class MigrationService:
    """Reconciles ObjectMigrations against the ledger and the cluster."""

    def __init__(self, ledger: Ledger, kube: Kube, config: OperatorConfig) -> None:
        self._ledger = ledger
        self._kube = kube
        self._config = config

    async def reconcile(self, body: Mapping[str, Any], rates: RateMeter) -> Outcome:
        """One level-based pass over one migration."""
        previous = _previous_status(body)
        try:
            migration = ObjectMigration.model_validate(dict(body))
        except ValidationError as error:
            return self._failed_outcome(previous, Reason.INVALID_SPEC, "; ".join(explain(error)))
        if await self._kube.namespace_terminating(migration.metadata.namespace):
            await self._wind_down(migration)
            return Outcome(None)
        name = ledger_name(migration)
        try:
            migration_id = await self._ledger.ensure_migration(name, migration.metadata.uid or "")
        except MigrationConflict as error:
            return self._failed_outcome(previous, Reason.LEDGER_CONFLICT, str(error))

        state = await self._sync_spec(migration_id, migration)
        asked = await self._honour_retry(body, migration_id, state)
        jobs = await self._kube.jobs_of(migration.metadata.namespace, migration.metadata.name)
        counts = await self._ledger.counts(migration_id)
        observed = self._observe(migration, state, tally(counts), jobs)
        decision = decide(observed)
        await record_decision(self._ledger, migration_id, observed, decision)
        events = asked + await self._act(migration, migration_id, state, jobs, decision)

        # Acting changes bookkeeping and Jobs, not object states: the counts taken for the
        # decision still describe this pass.
        await refresh_verification(self._ledger, migration_id, counts)
        status = await compute_status(
            self._ledger,
            migration_id,
            migration.spec,
            previous,
            rates,
            generation=migration.metadata.generation,
            counts=counts,
            scan_starting=decision.stage is not None and decision.stage.stage == "scan",
        )
        if decision.stage is not None and self._job_name(migration, decision.stage) not in jobs:
            # A Job was just created: list again so the status names it now.
            jobs = await self._kube.jobs_of(migration.metadata.namespace, migration.metadata.name)
        status.jobs = [_job_ref(job) for job in sorted(jobs.values(), key=lambda j: j.name)]
        status.report = ReportRef(
            location=f"ledger://{name}",
            command=f"objmig report {name} --database-url $OBJMIG_DATABASE_URL",
        )
        bound_window(status)
        status.conditions, back = ledger_reachable(status.conditions)
        events += back + transition_events(previous, status)
        wire = status.to_wire()
        changed = wire if wire != previous.to_wire() else None
        return Outcome(changed, events, status, counts)

    @staticmethod
    def _job_name(migration: ObjectMigration, want: StageWant) -> str:
        return job_name(migration.metadata.name, stage_run(want.stage, want.round, want.wave))

    def _observe(
        self,
        migration: ObjectMigration,
        state: MigrationState,
        view: Tally,
        jobs: Mapping[str, JobObservation],
    ) -> Observed:
        """The lifecycle's view: this round's and wave's scan and copy Jobs, if they exist."""
        name, rounds = migration.metadata.name, state.rounds

        def run(stage: Literal["scan", "copy", "audit"]) -> RunObservation | None:
            job = jobs.get(job_name(name, stage_run(stage, rounds.round, rounds.wave)))
            return job.run() if job is not None else None

        return Observed(
            spec=migration.spec,
            tally=view,
            state=state,
            copies_while_scanning=False,
            scan_run=run("scan"),
            copy_run=run("copy"),
            audit_run=run("audit"),
        )

    async def _honour_retry(
        self, body: Mapping[str, Any], migration_id: int, state: MigrationState
    ) -> list[Event]:
        """Retry the failed objects once per new value of the retry annotation."""
        annotations = body.get("metadata", {}).get("annotations") or {}
        request = annotations.get(RETRY_FAILED)
        if not request or (state.retried is not None and state.retried.request == request):
            return []
        outcome = await retry_failed(
            self._ledger, migration_id, reason=f"{RETRY_FAILED}={request}", request=request
        )
        if isinstance(outcome, Problem):
            # Answered all the same: the same request is not refused again every pass.
            await self._ledger.update_state(
                migration_id,
                retried=RetryRecord(
                    at=datetime.now(UTC),
                    request=request,
                    count=state.retried.count if state.retried is not None else 0,
                ),
            )
            return [Event("Warning", Reason.RETRY_REFUSED, outcome.message)]
        message = f"{outcome.objects} failed objects pending again, with fresh attempts"
        return [Event("Normal", Reason.RETRY_REQUESTED, f"{message} ({RETRY_FAILED}={request})")]

    async def _wind_down(self, migration: ObjectMigration) -> None:
        """The namespace is being deleted: delete the migration's unfinished Jobs.

        Kubernetes deletes a terminating namespace's pods before anything else. The Job
        controller keeps a failed pod of an index with ``backoffLimitPerIndex`` (and its
        tracking finalizer) until it has created the index's replacement pod, which a
        terminating namespace refuses: the pods, and with them the namespace, would stay
        forever. A deleted Job lets its pods go; the ObjectMigration follows, and its
        ledger rows with it (see :meth:`forget`).
        """
        namespace = migration.metadata.namespace
        jobs = await self._kube.jobs_of(namespace, migration.metadata.name)
        for job in jobs.values():
            if not job.finished:
                await self._kube.delete_job(namespace, job.name)
                log.info("namespace %s is terminating: deleted Job %s", namespace, job.name)

    async def forget(self, body: Mapping[str, Any]) -> bool:
        """On deletion: drop the ledger rows unless the resource asks to retain the report."""
        annotations = body.get("metadata", {}).get("annotations") or {}
        if annotations.get(RETAIN_REPORT) == "true":
            return False
        namespace = body["metadata"].get("namespace", "default")
        migration_id = await self._ledger.find_migration(f"{namespace}/{body['metadata']['name']}")
        if migration_id is None:
            return False
        return await self._ledger.delete_migration(migration_id)

    # -- acting ---------------------------------------------------------------------------

    async def _sync_spec(self, migration_id: int, migration: ObjectMigration) -> MigrationState:
        """Store the spec for the workers when it changed; a changed spec clears a failure."""
        state = await self._ledger.get_state(migration_id)
        generation = migration.metadata.generation
        if state.generation == generation and state.spec is not None:
            return state
        return await take_up_spec(self._ledger, migration_id, migration.spec, generation=generation)

    async def _act(
        self,
        migration: ObjectMigration,
        migration_id: int,
        state: MigrationState,
        jobs: dict[str, JobObservation],
        decision: Decision,
    ) -> list[Event]:
        namespace = migration.metadata.namespace
        events: list[Event] = []
        try:
            if decision.suspend:
                for job in jobs.values():
                    if not job.finished and not job.suspended:
                        await self._kube.suspend_job(namespace, job.name, True)
            if decision.stage is not None:
                want = decision.stage
                await self._ensure_job(
                    migration,
                    migration_id,
                    JobWant(
                        self._job_name(migration, want),
                        want.stage,
                        want.parallelism,
                        suspend=False,
                        scan_id=want.scan_id,
                    ),
                    jobs,
                )
        except KubeRefused as refused:
            if not refused.permanent:
                raise  # tried again at the next pass (the handler says so in an Event)
            # The same Job would be refused again: only a changed spec can help.
            message = f"{refused}; fix the spec (editing it tries again)"
            await record_failure(self._ledger, migration_id, Reason.JOB_REJECTED, message)
        if decision.cut_over:
            record = await cut_over(
                self._ledger,
                migration_id,
                migration.spec,
                await self._secrets_for_cutover(migration),
                KubeConfigMaps(self._kube, namespace),
                retry=_RETRY,
            )
            if isinstance(record, Problem):
                events.append(Event("Warning", record.reason, record.message))
            else:
                events.append(
                    Event("Normal", Reason.CUT_OVER, "; ".join(record.actions) or "cut over")
                )
        if decision.roll_back:
            gate = await roll_back(
                self._ledger,
                migration_id,
                migration.spec,
                await self._secrets_for_cutover(migration),
                KubeConfigMaps(self._kube, namespace),
                retry=_RETRY,
            )
            if isinstance(gate, Problem):
                events.append(Event("Warning", gate.reason, gate.message))
            elif gate.ok:
                events.append(Event("Normal", Reason.ROLLED_BACK, "cutover actions reverted"))
            elif gate.reason != Reason.NOT_CUT_OVER and not (
                state.cutover is not None and state.cutover.rollback_blocked
            ):
                events.append(Event("Warning", gate.reason, gate.message))
        return events

    async def _ensure_job(
        self,
        migration: ObjectMigration,
        migration_id: int,
        want: JobWant,
        jobs: dict[str, JobObservation],
    ) -> None:
        namespace = migration.metadata.namespace
        existing = jobs.get(want.name)
        if existing is None:
            if not await self._secrets_exist(migration, migration_id):
                return
            if want.stage == "scan" and not await self._hand_over_worklist(migration, migration_id):
                return
            created = await self._kube.create_job(worker_job(migration, want, self._config))
            if created:
                log.info("created Job %s/%s", namespace, want.name)
            return
        if existing.finished:
            return
        if existing.suspended != want.suspend or existing.parallelism != want.parallelism:
            await self._kube.scale_job(namespace, want.name, want.parallelism, suspend=want.suspend)

    async def _secrets_exist(self, migration: ObjectMigration, migration_id: int) -> bool:
        """Whether every Secret and ConfigMap key the workers' environment names is there.

        A pod referencing a missing one never starts (CreateContainerConfigError) and its
        Job neither fails nor progresses: say so instead, and create no Job. False, with
        the migration failed, when one is missing.
        """
        namespace = migration.metadata.namespace
        for (name, key), named_by in secret_fields(migration.spec).items():
            if key == SESSION_TOKEN:
                continue  # optional
            # None (not allowed to read Secrets): the pods will tell.
            if await self._kube.secret_has_key(namespace, name, key) is False:
                message = (
                    f"Secret {name!r} with key {key!r} ({named_by}) not found in "
                    f"namespace {namespace!r}: create it, then edit the spec to retry"
                )
                await record_failure(self._ledger, migration_id, Reason.SECRET_NOT_FOUND, message)
                return False
        for name, key in referenced_config_maps(migration.spec):
            data = await self._kube.config_map_data(namespace, name)
            if data is None or key not in data:
                message = (
                    f"ConfigMap {name!r} with key {key!r} (referenced by the spec) not found in "
                    f"namespace {namespace!r}: create it, then edit the spec to retry"
                )
                await record_failure(
                    self._ledger, migration_id, Reason.CONFIG_MAP_NOT_FOUND, message
                )
                return False
        return True

    async def _hand_over_worklist(self, migration: ObjectMigration, migration_id: int) -> bool:
        """Store the spec's ConfigMap worklist for the scan pod, which has no API access.

        Read again before every scan, so a catch-up round sees the ConfigMap as it is now.
        False, with the migration failed, when the ConfigMap or its key is missing.
        """
        ref = manifest_config_map(migration.spec)
        if ref is None:
            return True
        namespace = migration.metadata.namespace
        data = await self._kube.config_map_data(namespace, ref.name)
        try:
            worklist = config_map_worklist(ref, data, f"in namespace {namespace!r}")
        except ConfigMapNotFound as error:
            message = f"{error}: create it, then edit the spec to retry"
            await record_failure(self._ledger, migration_id, Reason.MANIFEST_NOT_FOUND, message)
            return False
        await self._ledger.update_state(migration_id, manifest_config_map=worklist)
        return True

    async def _secrets_for_cutover(self, migration: ObjectMigration) -> EnvSecrets:
        """The Secret values the cutover needs (the catalog's and the backfill's DSNs), read
        from the cluster."""
        environ: dict[str, str] = {}
        spec = migration.spec
        refs = [
            action.dsn_secret_ref
            for action in (spec.cutover.catalog, spec.backfill)
            if action is not None
        ]
        for ref in refs:
            value = await self._kube.read_secret(migration.metadata.namespace, ref.name, ref.key)
            if value is not None:
                environ[env_name(ref.name, ref.key)] = value
        return EnvSecrets(environ=environ)

    def _failed_outcome(
        self, previous: ObjectMigrationStatus, reason: str, message: str
    ) -> Outcome:
        status = previous.model_copy(deep=True)
        status.conditions = set_condition(
            status.conditions, ConditionType.FAILED, "True", reason, message, now=datetime.now(UTC)
        )
        status.phase = "Failed"
        wire = status.to_wire()
        if wire == previous.to_wire():
            return Outcome(None)  # said already: no new Event every pass
        return Outcome(wire, [Event("Warning", reason, message)])


def merge_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns ``current`` into ``desired``.

    Keys missing from ``desired`` become null at every depth, so nothing stale survives;
    objects are patched key by key; lists and scalars are replaced whole.
    """
    patch: dict[str, Any] = {key: None for key in current if key not in desired}
    for key, value in desired.items():
        old = current.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            nested = merge_patch(old, value)
            if nested:
                patch[key] = nested
        elif key not in current or old != value:
            patch[key] = value
    return patch


def bound_window(
    status: ObjectMigrationStatus, budget: int = WINDOW_BYTES, error_chars: int = ERROR_CHARS
) -> None:
    """Keep ``status.objects`` within ``budget`` bytes of JSON, in order (failed first).

    Long errors are shortened; entries past the budget are dropped, and ``objectsTruncated``
    says so. Keys are never shortened: a window entry must name its object exactly.
    """
    kept: list[ObjectStatus] = []
    used = 0
    for entry in status.objects:
        if entry.last_error is not None and len(entry.last_error) > error_chars:
            entry = entry.model_copy(
                update={"last_error": entry.last_error[: error_chars - 3] + "..."}
            )
        size = len(json.dumps(entry.to_wire())) + 2  # and the list's ", "
        if used + size > budget:
            status.objects_truncated = True
            break
        kept.append(entry)
        used += size
    status.objects = kept


def _previous_status(body: Mapping[str, Any]) -> ObjectMigrationStatus:
    raw = body.get("status") or {}
    try:
        return ObjectMigrationStatus.model_validate(dict(raw))
    except ValidationError:
        # A status we cannot read (an older operator's, or hand-edited) is rebuilt.
        return ObjectMigrationStatus()


def _job_ref(job: JobObservation) -> JobRef:
    stage = next((s for s in ("scan", "audit") if f"-{s}-" in job.name), "copy")
    return JobRef(
        name=job.name, stage=stage, active=job.active, succeeded=job.succeeded, failed=job.failed
    )


def transition_events(
    previous: ObjectMigrationStatus, status: ObjectMigrationStatus
) -> list[Event]:
    """Events for the changes a user watching ``kubectl get events`` wants to see."""
    events: list[Event] = []
    missing = status.steps.missing if status.steps is not None else 0
    missing_before = previous.steps.missing if previous.steps is not None else 0
    missing_note = f"; {missing} selected objects do not exist" if missing else ""
    if previous.phase != status.phase:
        kind = "Warning" if status.phase in ("Failed", "Paused") else "Normal"
        condition = find_condition(status.conditions, status.phase)
        reason: str = Reason.PHASE_CHANGED
        if status.phase in ("Failed", "Paused"):
            # The condition's reason says why (FailureBudgetExceeded, Suspended, S3...).
            reason = condition.reason if condition is not None else status.phase
        detail = f": {condition.message}" if condition is not None and condition.message else ""
        events.append(
            Event(kind, reason, f"{previous.phase} -> {status.phase}{detail}{missing_note}")
        )
    if missing and not missing_before:
        # Once, when the first is found: the count then rises in the status (and rides on
        # each phase change above), not in an Event per reconcile.
        events.append(
            Event(
                "Warning",
                Reason.OBJECTS_MISSING,
                f"selected objects do not exist ({missing} so far; reason NotFound); "
                "status.steps.missing counts them and objmig report NAME lists them",
            )
        )
    for type_ in (ConditionType.DEGRADED, ConditionType.STALLED, ConditionType.TARGET_SPACE_LOW):
        was = find_condition(previous.conditions, type_)
        now = find_condition(status.conditions, type_)
        if now is None or (was is not None and was.status == now.status):
            continue
        if now.status == "True":
            if all(event.reason != now.reason for event in events):
                events.append(Event("Warning", now.reason, f"{type_}: {now.message}"))
        elif was is not None:
            events.append(Event("Normal", now.reason, f"no longer {type_}: {now.message}"))
    before = find_condition(previous.conditions, ConditionType.CUTOVER_READY)
    after = find_condition(status.conditions, ConditionType.CUTOVER_READY)
    if (
        after is not None
        and after.reason in _BLOCKING
        and (before is None or before.reason != after.reason)
        and all(event.reason != after.reason for event in events)
    ):
        events.append(Event("Warning", after.reason, after.message))
    return events
