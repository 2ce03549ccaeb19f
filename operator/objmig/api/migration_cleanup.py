"""The MigrationCleanup resource: the explicit, gated request to delete what a migration left."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from objmig.api.base import DNS_LABEL, ApiModel
from objmig.api.conditions import Condition
from objmig.api.migration import BUCKET_PATTERN, JobRef, ObjectMeta, ObjectStatus, WorkersSpec
from objmig.api.migration.common import MAX_COUNT
from objmig.api.types import Duration, DurationBetween

#: Longest wait a cleanup's gates may ask for.
WaitDuration = Annotated[Duration, DurationBetween("0s", "8760h")]

DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
CleanupPhase = Literal["Pending", "Blocked", "Deleting", "Completed", "Failed"]


class MigrationReference(ApiModel):
    """The ObjectMigration a cleanup belongs to, in the cleanup's namespace."""

    name: str = Field(
        description="Name of the ObjectMigration.",
        min_length=1,
        max_length=63,
        pattern=DNS_LABEL,
    )


class ApprovalSpec(ApiModel):
    """The human's yes: the verification digest they reviewed."""

    digest: str = Field(
        description="Must equal the migration's status.verification.digest (`objmig approve "
        "NAME` prints it), or, for a cleanup of one bucket (spec.bucket), that bucket's "
        "digest in status.buckets (`objmig approve NAME --bucket B`).",
        pattern=DIGEST_PATTERN,
    )


class MigrationCleanupSpec(ApiModel):
    """What to delete, and the conditions under which deleting is allowed."""

    migration_ref: MigrationReference = Field(
        description="The ObjectMigration whose objects are cleaned up.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "migrationRef is immutable"}
            ]
        },
    )
    what: Literal["source", "leftovers"] = Field(
        default="source",
        description="source: delete the migrated source objects of a cut-over migration; "
        "leftovers: abort objmig's stale multipart uploads and remove target objects of "
        "failed attempts that no verified object points to. Immutable: another kind of "
        "cleanup is another MigrationCleanup.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "what is immutable"}
            ]
        },
    )
    grace_period: WaitDuration = Field(
        default="72h",
        description="Time that must pass after the cutover before deleting (at most 8760h).",
    )
    min_age: WaitDuration = Field(
        default="1h",
        description="Time that must pass since an object's verification (or, for leftovers, "
        "since an upload started) before it may be deleted (at most 8760h).",
    )
    approval: ApprovalSpec | None = Field(
        default=None, description="Approval quoting the verification digest; required to delete."
    )
    bucket: str | None = Field(
        default=None,
        description="Clean up one bucket of a migration of several (source.buckets): only "
        "its objects are considered, and the approval quotes its own digest. Immutable.",
        pattern=BUCKET_PATTERN,
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "bucket is immutable"}
            ]
        },
    )
    dry_run: bool = Field(default=False, description="List what would be deleted; delete nothing.")
    limit: int | None = Field(
        default=None, ge=1, le=MAX_COUNT, description="Delete at most this many objects."
    )
    workers: WorkersSpec = Field(default_factory=WorkersSpec, description="Deletion worker pods.")


class UnmetGate(ApiModel):
    """A gate that does not hold yet, with the reason."""

    gate: str = Field(description="Gate name, e.g. GracePeriod.")
    reason: str = Field(description="CamelCase reason, e.g. GracePeriodNotElapsed.")
    message: str = Field(description="What is missing, e.g. the time left.")


class CleanupCounts(ApiModel):
    """Deletion counters."""

    planned: int = Field(default=0, ge=0, description="Objects the cleanup considers.")
    deleted: int = Field(default=0, ge=0, description="Objects deleted.")
    would_delete: int = Field(
        default=0,
        ge=0,
        description="Dry run: objects every gate would let go (nothing is deleted).",
    )
    left_by_limit: int = Field(
        default=0,
        ge=0,
        description="Objects not considered because spec.limit was reached; raise the limit "
        "to go on.",
    )
    skipped: int = Field(default=0, ge=0, description="Objects left in place.")
    failed: int = Field(default=0, ge=0, description="Deletions that failed.")
    uploads_aborted: int = Field(
        default=0,
        ge=0,
        description="what: leftovers: objmig's incomplete multipart uploads aborted (in a "
        "dry run: that would be).",
    )
    bytes_freed: int = Field(
        default=0,
        ge=0,
        description="Bytes deleted: objects, and the parts of aborted uploads.",
    )
    skipped_by_reason: dict[str, int] = Field(
        default_factory=dict, description="Skipped objects per reason."
    )


class MigrationCleanupStatus(ApiModel):
    """Observed state of a MigrationCleanup."""

    model_config = ConfigDict(extra="ignore")

    observed_generation: int | None = Field(
        default=None, description="The generation this status describes."
    )
    phase: CleanupPhase = Field(default="Pending", description="Summary of the conditions.")
    conditions: list[Condition] = Field(
        default_factory=list, description="GatesPassed, Complete, Failed."
    )
    unmet_gates: list[UnmetGate] = Field(
        default_factory=list, description="Gates that do not hold, with reasons."
    )
    counts: CleanupCounts = Field(default_factory=CleanupCounts, description="Counters.")
    objects: list[ObjectStatus] = Field(
        default_factory=list, description="A bounded window of per-object outcomes."
    )
    objects_truncated: bool = Field(
        default=False, description="More objects exist than the window shows."
    )
    jobs: list[JobRef] = Field(default_factory=list, description="Deletion Jobs.")
    started_at: datetime | None = Field(default=None, description="When deletion started.")
    completed_at: datetime | None = Field(default=None, description="When it finished.")


class MigrationCleanup(ApiModel):
    """A MigrationCleanup custom resource."""

    api_version: Literal["objmig.dev/v1alpha1"] = Field(
        default="objmig.dev/v1alpha1", description="objmig.dev/v1alpha1"
    )
    kind: Literal["MigrationCleanup"] = Field(default="MigrationCleanup", description="Kind.")
    metadata: ObjectMeta = Field(description="Standard object metadata.")
    spec: MigrationCleanupSpec = Field(description="Desired cleanup.")
    status: MigrationCleanupStatus | None = Field(default=None, description="Observed state.")
