"""Reconciling one ObjectMigration: gather, decide, act, and describe the result.

The Kopf handlers call :meth:`MigrationService.reconcile` on a timer. It reads the ledger and
the migration's Jobs, asks :func:`objmig.controller.decide.decide` what to do, does it, and
returns the new status (or None when nothing changed), plus the Events worth emitting.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from pydantic import ValidationError

from objmig.api.conditions import find_condition, set_condition
from objmig.api.loading import explain
from objmig.api.migration import (
    JobRef,
    ObjectMigration,
    ObjectMigrationSpec,
    ObjectMigrationStatus,
    ObjectStatus,
    ReportRef,
)
from objmig.controller.config import OperatorConfig
from objmig.controller.decide import (
    Decision,
    JobObservation,
    Observed,
    decide,
    rounds,
    section,
)
from objmig.controller.jobs import JobWant, worker_job
from objmig.controller.kube import Kube, KubeConfigMaps
from objmig.engine.context import ledger_name
from objmig.engine.cutover import perform_cutover, perform_rollback, stopped_half_way
from objmig.engine.policy import CatchUp
from objmig.engine.run import RateMeter, compute_status, record_verification, switch_plan_mode
from objmig.engine.scan import config_map_manifest_patch, manifest_config_map
from objmig.engine.secrets import (
    SESSION_TOKEN,
    ConfigMapNotFound,
    EnvSecrets,
    env_name,
    referenced_secrets,
)
from objmig.engine.status import tally
from objmig.ledger import Counts, Ledger, MigrationConflict

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Annotation that keeps the ledger rows (the full report) after the resource is deleted.
RETAIN_REPORT = "objmig.dev/retain-report"

#: Most bytes the per-object window may take in the status. The window holds up to 50
#: entries, and an S3 key alone may be 1 KiB: without a byte bound the status could pass
#: 64 KiB on keys alone. Typical keys fit all 50 entries in a few KiB.
WINDOW_BYTES = 16 * 1024
#: Longest lastError kept in the window (the ledger and the report keep the full text).
ERROR_CHARS = 300

#: CutoverReady reasons that mean "waiting on someone", worth an Event when they appear.
_BLOCKING = frozenset(
    {"AwaitingApproval", "FailureBudgetExceeded", "FailureRatioExceeded", "CatchUpNotConverging"}
)


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post about the migration."""

    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass
class Outcome:
    """What a reconcile produced: the status to write (None: unchanged) and Events."""

    status: dict[str, Any] | None
    events: list[Event] = field(default_factory=list)
    current: ObjectMigrationStatus | None = None
    counts: Counts | None = None


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
            return self._failed_outcome(previous, "InvalidSpec", "; ".join(explain(error)))
        name = ledger_name(migration)
        try:
            migration_id = await self._ledger.ensure_migration(name, migration.metadata.uid or "")
        except MigrationConflict as error:
            return self._failed_outcome(previous, "LedgerConflict", str(error))

        state = await self._sync_spec(migration_id, migration)
        jobs = await self._kube.jobs_of(migration.metadata.namespace, migration.metadata.name)
        counts = await self._ledger.counts(migration_id)
        decision = decide(
            Observed(
                name=migration.metadata.name,
                spec=migration.spec,
                tally=tally(counts),
                state=state,
                jobs=jobs,
            )
        )
        events = await self._act(migration, migration_id, state, jobs, decision)

        # Acting changes bookkeeping and Jobs, not object states: the counts taken for the
        # decision still describe this pass.
        state = await self._ledger.get_state(migration_id)
        view = tally(counts)
        if (
            not view.outstanding
            and section(state, "scan").get("completedAt")
            and section(state, "verification").get("objects") != view.verified
        ):
            await record_verification(self._ledger, migration_id)
        status = await compute_status(
            self._ledger,
            migration_id,
            migration.spec,
            previous,
            rates,
            generation=migration.metadata.generation,
            counts=counts,
        )
        if decision.job is not None and decision.job.name not in jobs:
            # A Job was just created: list again so the status names it now.
            jobs = await self._kube.jobs_of(migration.metadata.namespace, migration.metadata.name)
        status.jobs = [_job_ref(job) for job in sorted(jobs.values(), key=lambda j: j.name)]
        status.report = ReportRef(
            location=f"ledger://{name}",
            command=f"objmig report {name} --database-url $OBJMIG_DATABASE_URL",
        )
        bound_window(status)
        events += _transition_events(previous, status)
        wire = status.to_wire()
        changed = wire if wire != previous.to_wire() else None
        return Outcome(changed, events, status, counts)

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

    async def _sync_spec(self, migration_id: int, migration: ObjectMigration) -> dict[str, Any]:
        """Store the spec for the workers when it changed; a changed spec clears a failure."""
        state = await self._ledger.get_state(migration_id)
        generation = migration.metadata.generation
        if state.get("generation") == generation and "spec" in state:
            return state
        await switch_plan_mode(self._ledger, migration_id, dry_run=migration.spec.dry_run)
        patch: dict[str, Any] = {"spec": migration.spec.to_wire(), "generation": generation}
        if state.get("failed"):
            round_, wave = rounds(state)
            # The user changed something: try again with fresh Jobs.
            patch["failed"] = None
            patch["operator"] = {"round": round_, "wave": wave + 1}
        return await self._ledger.update_state(migration_id, patch)

    async def _act(
        self,
        migration: ObjectMigration,
        migration_id: int,
        state: dict[str, Any],
        jobs: dict[str, JobObservation],
        decision: Decision,
    ) -> list[Event]:
        namespace = migration.metadata.namespace
        events: list[Event] = []
        if decision.failed is not None:
            reason, message = decision.failed
            await self._ledger.update_state(
                migration_id, {"failed": {"reason": reason, "message": message}}
            )
        if (
            decision.paused is not None
            and section(state, "paused").get("reason") != (decision.paused[0])
        ):
            reason, message = decision.paused
            await self._ledger.update_state(
                migration_id, {"paused": {"reason": reason, "message": message}}
            )
        if decision.clear_paused:
            await self._ledger.update_state(migration_id, {"paused": None})
        if decision.suspend_jobs:
            for job in jobs.values():
                if not job.finished and not job.suspended:
                    await self._kube.suspend_job(namespace, job.name, True)
        if decision.job is not None:
            await self._ensure_job(migration, migration_id, decision.job, jobs)
        round_, wave = rounds(state)
        if decision.next_wave:
            await self._ledger.update_state(
                migration_id, {"operator": {"round": round_, "wave": wave + 1}}
            )
        if decision.next_round:
            await self._ledger.update_state(
                migration_id, {"operator": {"round": round_ + 1, "wave": 0}}
            )
        if decision.catch_up_result is not None:
            await self._ledger.update_state(
                migration_id, CatchUp.of(state).recorded(*decision.catch_up_result)
            )
        if decision.cut_over:
            # The digest a cleanup approval quotes must describe what is cut over: a
            # catch-up may have re-copied objects without changing how many are verified.
            await record_verification(self._ledger, migration_id)
            record = await self._carry_out(
                "cutover", migration_id, perform_cutover, migration, events
            )
            if record is None:
                return events
            events.append(Event("Normal", "CutOver", "; ".join(record["actions"]) or "cut over"))
        if decision.roll_back:
            gate = await self._carry_out(
                "rollback", migration_id, perform_rollback, migration, events
            )
            if gate is None:
                return events
            if gate.ok:
                events.append(Event("Normal", "RolledBack", "cutover actions reverted"))
            elif gate.reason != "NotCutOver" and not section(state, "cutover").get(
                "rollbackBlocked"
            ):
                events.append(Event("Warning", gate.reason, gate.message))
        return events

    async def _carry_out(
        self,
        step: Literal["cutover", "rollback"],
        migration_id: int,
        perform: Callable[
            [Ledger, int, ObjectMigrationSpec, EnvSecrets, KubeConfigMaps], Awaitable[T]
        ],
        migration: ObjectMigration,
        events: list[Event],
    ) -> T | None:
        """Perform the cutover or the rollback; None when it raised.

        Some actions may be done by then (catalog rows swapped in committed batches): they
        stay recorded, for the next attempt to finish (or, after a cutover, a rollback to
        undo; a half-reverted cutover keeps rollbackStarted, which keeps cleanups out). A
        Failed condition says so, instead of a reconcile failing every few seconds.
        """
        try:
            return await perform(
                self._ledger,
                migration_id,
                migration.spec,
                await self._secrets_for_cutover(migration),
                KubeConfigMaps(self._kube, migration.metadata.namespace),
            )
        except Exception as error:
            patch = stopped_half_way(step, error, "edit the spec")
            await self._ledger.update_state(migration_id, patch)
            events.append(Event("Warning", patch["failed"]["reason"], patch["failed"]["message"]))
            return None

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
        """Whether every Secret key the workers' environment names is there.

        A pod referencing a missing one never starts (CreateContainerConfigError) and its
        Job neither fails nor progresses: say so instead, and create no Job. False, with
        the migration failed, when one is missing.
        """
        namespace = migration.metadata.namespace
        for name, key in referenced_secrets(migration.spec):
            if key == SESSION_TOKEN:
                continue  # optional
            # None (not allowed to read Secrets): the pods will tell.
            if await self._kube.secret_has_key(namespace, name, key) is False:
                message = (
                    f"Secret {name!r} with key {key!r} (referenced by the spec) not found in "
                    f"namespace {namespace!r}: create it, then edit the spec to retry"
                )
                await self._ledger.update_state(
                    migration_id, {"failed": {"reason": "SecretNotFound", "message": message}}
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
            patch = config_map_manifest_patch(ref, data, f"in namespace {namespace!r}")
        except ConfigMapNotFound as error:
            message = f"{error}: create it, then edit the spec to retry"
            await self._ledger.update_state(
                migration_id, {"failed": {"reason": "ManifestNotFound", "message": message}}
            )
            return False
        await self._ledger.update_state(migration_id, patch)
        return True

    async def _secrets_for_cutover(self, migration: ObjectMigration) -> EnvSecrets:
        """The Secret values the cutover needs (the catalog DSN), read from the cluster."""
        environ: dict[str, str] = {}
        catalog = migration.spec.cutover.catalog
        if catalog is not None:
            ref = catalog.dsn_secret_ref
            value = await self._kube.read_secret(migration.metadata.namespace, ref.name, ref.key)
            if value is not None:
                environ[env_name(ref.name, ref.key)] = value
        return EnvSecrets(environ=environ)

    def _failed_outcome(
        self, previous: ObjectMigrationStatus, reason: str, message: str
    ) -> Outcome:
        status = previous.model_copy(deep=True)
        status.conditions = set_condition(
            status.conditions, "Failed", "True", reason, message, now=datetime.now(UTC)
        )
        status.phase = "Failed"
        wire = status.to_wire()
        return Outcome(
            None if wire == previous.to_wire() else wire, [Event("Warning", reason, message)]
        )


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
    stage = "scan" if "-scan-" in job.name else "copy"
    return JobRef(
        name=job.name, stage=stage, active=job.active, succeeded=job.succeeded, failed=job.failed
    )


def _transition_events(
    previous: ObjectMigrationStatus, status: ObjectMigrationStatus
) -> list[Event]:
    """Events for the changes a user watching ``kubectl get events`` wants to see."""
    events: list[Event] = []
    if previous.phase != status.phase:
        kind = "Warning" if status.phase in ("Failed", "Paused") else "Normal"
        condition = find_condition(status.conditions, status.phase)
        reason = "PhaseChanged"
        if status.phase in ("Failed", "Paused"):
            # The condition's reason says why (FailureBudgetExceeded, Suspended, S3...).
            reason = condition.reason if condition is not None else status.phase
        detail = f": {condition.message}" if condition is not None and condition.message else ""
        events.append(Event(kind, reason, f"{previous.phase} -> {status.phase}{detail}"))
    before = find_condition(previous.conditions, "CutoverReady")
    after = find_condition(status.conditions, "CutoverReady")
    if (
        after is not None
        and after.reason in _BLOCKING
        and (before is None or before.reason != after.reason)
        and all(event.reason != after.reason for event in events)
    ):
        events.append(Event("Warning", after.reason, after.message))
    return events
