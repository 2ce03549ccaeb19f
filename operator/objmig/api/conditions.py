"""Conditions in the shape of Kubernetes ``metav1.Condition``, and the rule for updating them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field

from objmig.api.base import ApiModel

ConditionStatus = Literal["True", "False", "Unknown"]


class ConditionType(StrEnum):
    """Every condition type objmig sets, on either resource: ``kubectl wait`` names these."""

    # ObjectMigration
    SCANNED = "Scanned"
    RESTORED = "Restored"
    COPIED = "Copied"
    VERIFIED = "Verified"
    CUTOVER_READY = "CutoverReady"
    CUT_OVER = "CutOver"
    PAUSED = "Paused"
    FAILED = "Failed"
    #: Unhealthy short of Paused or Failed: too many objects fail (spec.health), or a store
    #: lacks an aspect of S3 (tags, part sizes, ...) that objmig does without.
    DEGRADED = "Degraded"
    READY = "Ready"
    # Health (ObjectMigration): unhealthy when True, short of Paused or Failed
    STALLED = "Stalled"
    TARGET_SPACE_LOW = "TargetSpaceLow"
    # MigrationCleanup (also Failed)
    GATES_PASSED = "GatesPassed"
    COMPLETE = "Complete"
    # Both: the operator could not reach the ledger database
    LEDGER_UNAVAILABLE = "LedgerUnavailable"


class Reason(StrEnum):
    """The fixed reasons of objmig's conditions and Events.

    A condition's reason is one of these, or a reason built from a store's error code
    (``S3AccessDenied``, ``S3NoSuchBucket``: :func:`s3_reason`), which no list can hold.
    """

    # Scanned / Restored / Copied / Verified
    NOT_STARTED = "NotStarted"
    SCANNING = "Scanning"
    SCAN_COMPLETE = "ScanComplete"
    RESTORE_IN_PROGRESS = "RestoreInProgress"
    NOTHING_TO_RESTORE = "NothingToRestore"
    COPY_IN_PROGRESS = "CopyInProgress"
    ALL_COPIED = "AllCopied"
    VERIFICATION_PENDING = "VerificationPending"
    SOME_OBJECTS_FAILED = "SomeObjectsFailed"
    ALL_VERIFIED = "AllVerified"
    # CutoverReady, CutOver, Ready: the cutover gate and its outcome
    DRY_RUN = "DryRun"
    SCAN_INCOMPLETE = "ScanIncomplete"
    NOTHING_SELECTED = "NothingSelected"
    NOT_ALL_VERIFIED = "NotAllVerified"
    OBJECTS_FAILED = "ObjectsFailed"
    NOTHING_VERIFIED = "NothingVerified"
    STEPS_PENDING = "StepsPending"
    CATCH_UP_PENDING = "CatchUpPending"
    CATCH_UP_NOT_CONVERGING = "CatchUpNotConverging"
    RESCANNING_BEFORE_CUTOVER = "RescanningBeforeCutover"
    AWAITING_APPROVAL = "AwaitingApproval"
    GATES_PASSED = "GatesPassed"
    CUT_OVER = "CutOver"
    NOT_CUT_OVER = "NotCutOver"
    ROLLED_BACK = "RolledBack"
    PLAN_READY = "PlanReady"
    PLANNING = "Planning"
    # The failure budget (Paused, and the cutover gate)
    WITHIN_BUDGET = "WithinBudget"
    FAILURE_BUDGET_EXCEEDED = "FailureBudgetExceeded"
    FAILURE_RATIO_EXCEEDED = "FailureRatioExceeded"
    # Paused
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    TARGET_SPACE_LOW = "TargetSpaceLow"
    # Health: Degraded, Stalled, TargetSpaceLow
    ERROR_RATE_HIGH = "ErrorRateHigh"
    THROUGHPUT_BELOW_FLOOR = "ThroughputBelowFloor"
    PROGRESSING = "Progressing"
    NOTHING_OUTSTANDING = "NothingOutstanding"
    FREE_SPACE_BELOW_MINIMUM = "FreeSpaceBelowMinimum"
    FREE_SPACE_AVAILABLE = "FreeSpaceAvailable"
    NOT_A_DIRECTORY = "NotADirectory"
    # The audit of a target directory and of group manifests (CutoverReady)
    AUDIT_PENDING = "AuditPending"
    EXTRA_FILES = "ExtraFiles"
    MANIFESTS_INCOMPLETE = "ManifestsIncomplete"
    # Rollback
    ROLLBACK_ALLOWED = "RollbackAllowed"
    CLEANUP_STARTED = "CleanupStarted"
    # Failed
    NO_ERROR = "NoError"
    INVALID_SPEC = "InvalidSpec"
    LEDGER_CONFLICT = "LedgerConflict"
    SCAN_FAILED = "ScanFailed"
    WORKER_JOB_FAILED = "WorkerJobFailed"
    CUTOVER_FAILED = "CutoverFailed"
    ROLLBACK_FAILED = "RollbackFailed"
    SECRET_NOT_FOUND = "SecretNotFound"  # noqa: S105 - a reason, not a secret
    CONFIG_MAP_NOT_FOUND = "ConfigMapNotFound"
    MANIFEST_NOT_FOUND = "ManifestNotFound"
    CONFIGURATION_ERROR = "ConfigurationError"
    # Failed: the application's side (spec.selection.manifest.sql, spec.backfill, spec.hooks)
    WORKLIST_QUERY_FAILED = "WorklistQueryFailed"
    BACKFILL_INVALID = "BackfillInvalid"
    HOOK_UNREACHABLE = "HookUnreachable"
    JOB_REJECTED = "JobRejected"
    # LedgerUnavailable (either resource)
    LEDGER_UNAVAILABLE = "LedgerUnavailable"
    LEDGER_AVAILABLE = "LedgerAvailable"
    # Degraded
    ALL_FEATURES_PRESENT = "AllFeaturesPresent"
    STORE_FEATURE_MISSING = "StoreFeatureMissing"
    AUDIT_FAILED = "AuditFailed"
    # MigrationCleanup
    MIGRATION_NOT_FOUND = "MigrationNotFound"
    CLEANUP_JOB_FAILED = "CleanupJobFailed"
    COMPLETE = "Complete"
    IN_PROGRESS = "InProgress"
    BLOCKED = "Blocked"
    # Retrying failed objects (Events, and the CLI)
    RETRY_REQUESTED = "RetryRequested"
    RETRY_REFUSED = "RetryRefused"
    # Events only
    PHASE_CHANGED = "PhaseChanged"
    OBJECTS_MISSING = "ObjectsMissing"
    RECONCILE_ERROR = "ReconcileError"


def s3_reason(code: str) -> str:
    """The reason for a migration stopped by a store's error ``code`` (``S3AccessDenied``).

    A directory's errors are named for themselves (``FilesystemUnavailable``).
    """
    return code if code.startswith("Filesystem") else f"S3{code}"


REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


class Condition(ApiModel):
    """One aspect of the resource's state, as ``kubectl wait --for=condition=X`` reads it."""

    type: str = Field(
        description="Type of condition in CamelCase, e.g. CutOver.",
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        description="A CamelCase word saying why the condition has its status.",
        min_length=1,
        max_length=1024,
        pattern=REASON_PATTERN,
    )
    message: str = Field(
        default="", description="Human-readable detail about the transition.", max_length=32768
    )
    last_transition_time: datetime = Field(
        description="When the status last changed (not when the message last changed)."
    )
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="The .metadata.generation the condition was computed from.",
    )


def set_condition(
    conditions: Sequence[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    *,
    now: datetime,
    observed_generation: int | None = None,
) -> list[Condition]:
    """Return ``conditions`` with ``type_`` set, keeping its transition time if status held.

    Kubernetes clients rely on ``lastTransitionTime`` to tell how long a state has lasted, so
    it only moves when ``status`` flips; reason and message may change freely.
    """
    previous = find_condition(conditions, type_)
    transition = (
        previous.last_transition_time if previous is not None and previous.status == status else now
    )
    updated = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=transition,
        observed_generation=observed_generation,
    )
    # Replace in place: a stable order keeps status patches minimal and diffs readable.
    if previous is None:
        return [*conditions, updated]
    return [updated if c.type == type_ else c for c in conditions]


def set_conditions(
    conditions: Sequence[Condition],
    updates: Iterable[tuple[str, ConditionStatus, str, str]],
    *,
    now: datetime,
    observed_generation: int | None = None,
) -> list[Condition]:
    """Apply several ``(type, status, reason, message)`` updates with :func:`set_condition`."""
    result = list(conditions)
    for type_, status, reason, message in updates:
        result = set_condition(
            result, type_, status, reason, message, now=now, observed_generation=observed_generation
        )
    return result


def find_condition(conditions: Sequence[Condition], type_: str) -> Condition | None:
    """The condition of the given type, if present."""
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: Sequence[Condition], type_: str) -> bool:
    """Whether the condition of the given type is present with status True."""
    condition = find_condition(conditions, type_)
    return condition is not None and condition.status == "True"
