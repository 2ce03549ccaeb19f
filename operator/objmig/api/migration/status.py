"""`ObjectMigrationStatus`: what the operator and `objmig status` report (phase,
conditions, counters, progress, the bounded window of objects, verification, cutover).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import ConfigDict, Field

from objmig.api.base import ApiModel
from objmig.api.conditions import Condition
from objmig.api.migration.common import Phase


class Counters(ApiModel):
    """Objects or bytes by state."""

    total: int = Field(default=0, ge=0, description="Selected.")
    pending: int = Field(default=0, ge=0, description="Waiting to be copied or restored.")
    in_progress: int = Field(default=0, ge=0, description="Held by a worker right now.")
    stalled: int = Field(
        default=0,
        ge=0,
        description="Held by a worker that stopped reporting (killed, or cut off): nobody "
        "works on them, and they return to pending when the worker's lease expires.",
    )
    succeeded: int = Field(default=0, ge=0, description="Copied and verified.")
    failed: int = Field(default=0, ge=0, description="Failed for good, or changed at source.")
    skipped: int = Field(default=0, ge=0, description="Deliberately left alone.")
    processed: int = Field(
        default=0, ge=0, description="Finished one way or another: succeeded, failed or skipped."
    )
    remaining: int = Field(default=0, ge=0, description="Not finished yet: total - processed.")


class Progress(ApiModel):
    """How far the migration has come."""

    objects: Counters = Field(default_factory=Counters, description="Object counts.")
    bytes: Counters = Field(default_factory=Counters, description="Byte counts.")
    objects_done: str = Field(
        default="0/0",
        description="Finished objects (verified, failed or skipped) of all selected, e.g. "
        "1441/1500.",
    )
    percent: int = Field(
        default=0,
        ge=0,
        le=100,
        description="How far along: the mean of the finished share of objects and the share "
        "of bytes finished or already written, so neither many small objects nor a few "
        "large ones make it misleading (objects alone with copy.mode none, which moves no "
        "bytes).",
    )
    bytes_per_second: int = Field(
        default=0,
        ge=0,
        description="Bytes written to the target per second, recently (including bytes of "
        "objects still being copied).",
    )
    objects_per_second: int = Field(default=0, ge=0, description="Objects finished per second.")
    eta: str | None = Field(
        default=None,
        description="Estimated time left at the recent rates of bytes and objects, e.g. "
        "1h20m; 'waiting for restores' while archived objects are being restored (no rate "
        "predicts how long that takes).",
    )
    retries: int = Field(
        default=0,
        ge=0,
        description="Attempts that ended in an error to be retried (throttling, 5xx, "
        "timeouts), over the whole migration.",
    )
    last_retryable_error: str | None = Field(
        default=None, description="The most recent error that led to a retry."
    )
    started_at: datetime | None = Field(default=None, description="When copying started.")


class ObjectStatus(ApiModel):
    """One object's state, in the bounded window of the status."""

    key: str = Field(description="Source key.")
    version_id: str | None = Field(default=None, description="Source version id, if versioned.")
    state: str = Field(description="Ledger state, e.g. failed, verified.")
    attempts: int = Field(default=0, ge=0, description="Attempts so far.")
    last_error: str | None = Field(default=None, description="Most recent error.")


class JobRef(ApiModel):
    """A worker Job and its counts."""

    name: str = Field(description="Job name.")
    stage: str = Field(description="scan, copy, audit or cleanup.")
    active: int = Field(default=0, ge=0, description="Running pods.")
    succeeded: int = Field(default=0, ge=0, description="Finished indexes.")
    failed: int = Field(default=0, ge=0, description="Failed pods.")


class VerificationStatus(ApiModel):
    """What has been proven, and the digest a cleanup approval must quote."""

    objects: int = Field(default=0, ge=0, description="Verified objects.")
    bytes: int = Field(default=0, ge=0, description="Verified bytes.")
    mismatched: int = Field(default=0, ge=0, description="Objects whose copy differed.")
    algorithm: str = Field(default="", description="etag, checksum or sha256.")
    etag_unproven: int = Field(
        default=0,
        ge=0,
        description="With verify.mode etag: verified objects whose ETag could not prove the "
        "copy (a store that tells no part sizes, opaque ETags, parts cut anew), proven by "
        "a checksum or their SHA-256 instead (the report's verified_by column says which).",
    )
    etag_unproven_by: dict[str, int] = Field(
        default_factory=dict,
        description="etagUnproven by what proved them instead (sha256, crc32c, ...).",
    )
    digest: str | None = Field(
        default=None,
        description="sha256 over every verified (key, version, size, ETag, target) tuple; "
        "a MigrationCleanup's approval.digest must equal it.",
    )
    audited_at: datetime | None = Field(
        default=None,
        description="When the target directory (or the group manifests) was last audited "
        "against the ledger.",
    )
    missing_files: int = Field(
        default=0, ge=0, description="Verified objects whose file the audit did not find."
    )
    extra_files: int = Field(
        default=0,
        ge=0,
        description="Files in the target directory no object was copied to (and no ignore "
        "glob matches); they hold the cutover back.",
    )
    extra_file_examples: list[str] = Field(
        default_factory=list, description="Some of the extra files.", max_length=10
    )


class BucketStatus(ApiModel):
    """One bucket of a migration of several (source.buckets)."""

    name: str = Field(description="Bucket name.")
    objects: int = Field(default=0, ge=0, description="Objects selected.")
    bytes: int = Field(default=0, ge=0, description="Bytes selected.")
    verified: int = Field(default=0, ge=0, description="Objects copied and verified.")
    failed: int = Field(default=0, ge=0, description="Objects failed or changed at source.")
    digest: str | None = Field(
        default=None,
        description="The verification digest of this bucket's objects alone: what a "
        "MigrationCleanup of this bucket (spec.bucket) quotes.",
    )


class ContentStatus(ApiModel):
    """Deduplication of a content-addressed layout ({sha256} in target.keyTemplate)."""

    processed: int = Field(default=0, ge=0, description="Source objects verified.")
    contents: int = Field(
        default=0, ge=0, description="Distinct contents stored (content keys written)."
    )
    deduplicated: int = Field(
        default=0,
        ge=0,
        description="Objects whose content was stored already: written nowhere.",
    )
    bytes_saved: int = Field(
        default=0, ge=0, description="Bytes not written because the content was stored."
    )


class GroupsStatus(ApiModel):
    """The group manifests (spec.groups)."""

    groups: int = Field(default=0, ge=0, description="Groups, one manifest each.")
    manifests_written: int = Field(
        default=0, ge=0, description="Manifests written and read back identical."
    )
    written_at: datetime | None = Field(default=None, description="When they were written.")


class HealthStatus(ApiModel):
    """The migration's health in a word (the Health column), and what it is measured by."""

    summary: str = Field(
        default="Healthy",
        description="Healthy, or the unhealthy conditions that hold: Degraded, Stalled, "
        "TargetSpaceLow.",
    )
    below_floor_since: datetime | None = Field(
        default=None,
        description="Since when throughput has been under spec.health.minThroughput while "
        "objects wait (Stalled after spec.health.stalledAfter).",
    )
    target_free_bytes: int | None = Field(
        default=None, ge=0, description="Free bytes on the target filesystem, last measured."
    )
    target_total_bytes: int | None = Field(
        default=None, ge=0, description="Size of the target filesystem."
    )


class CutoverStatus(ApiModel):
    """What the cutover did, and what rollback needs."""

    at: datetime | None = Field(default=None, description="When the cutover happened.")
    actions: list[str] = Field(default_factory=list, description="Actions performed.")
    previous_config_map_data: dict[str, str | None] = Field(
        default_factory=dict,
        description="ConfigMap values before the cutover. Keys that did not exist are not "
        "listed; rollback removes them again.",
    )
    config_map_data: dict[str, str] = Field(
        default_factory=dict, description="Values written to the ConfigMap at cutover."
    )
    catalog_rows_swapped: int = Field(default=0, ge=0, description="Catalog rows switched.")
    rolled_back_at: datetime | None = Field(default=None, description="When rolled back.")
    rollback_blocked: str | None = Field(
        default=None, description="Why rollback is no longer possible, if it is not."
    )


class StepsStatus(ApiModel):
    """The application's steps: missing objects, per-object hooks, backfilled rows."""

    missing: int = Field(
        default=0,
        ge=0,
        description="Worklist keys that name no object in the source (skipped, or failed "
        "with copy.missingObjects Fail; reason NotFound).",
    )
    hooks_done: int = Field(default=0, ge=0, description="Objects whose hook answered 2xx.")
    hooks_pending: int = Field(
        default=0,
        ge=0,
        description="Verified objects whose hook is not done yet (with verifyOnly: skipped "
        "with reason HookPending).",
    )
    backfill_written: int = Field(
        default=0, ge=0, description="Rows objmig wrote at least one value into."
    )
    backfill_already_set: int = Field(
        default=0, ge=0, description="Rows whose columns held values already (left alone)."
    )
    backfill_no_row: int = Field(
        default=0, ge=0, description="Objects the application's table has no row for."
    )
    backfill_conflicts: int = Field(
        default=0,
        ge=0,
        description="Rows the application changed while objmig was writing them (left as "
        "the application wrote them).",
    )


class ReportRef(ApiModel):
    """Where the full per-object report can be read."""

    location: str = Field(description="Where the report lives, e.g. ledger://ns/name.")
    command: str = Field(description="How to fetch it.")


class PlanStatus(ApiModel):
    """Dry-run result: what a real run would do."""

    objects: int = Field(default=0, ge=0, description="Objects selected.")
    bytes: int = Field(default=0, ge=0, description="Bytes selected.")
    by_storage_class: dict[str, int] = Field(
        default_factory=dict, description="Objects per source storage class."
    )
    bytes_by_storage_class: dict[str, int] = Field(
        default_factory=dict, description="Bytes per source storage class."
    )
    need_restore: int = Field(default=0, ge=0, description="Objects that need a restore.")
    would_skip: int = Field(default=0, ge=0, description="Objects already identical on the target.")
    would_copy: int = Field(default=0, ge=0, description="Objects that would be copied.")
    selected_differently: int = Field(
        default=0,
        ge=0,
        description="Objects the include/exclude globs select otherwise than before they "
        "followed rclone's filter rules (a pattern without a leading / matches at any "
        "depth now). Not 0: check the globs before running for real.",
    )
    selected_differently_examples: list[str] = Field(
        default_factory=list,
        description="A few of them: +key is selected now and was not, -key the reverse.",
        max_length=5,
    )


class ObjectMigrationStatus(ApiModel):
    """Observed state of an ObjectMigration: a bounded summary of the ledger."""

    model_config = ConfigDict(extra="ignore")

    observed_generation: int | None = Field(
        default=None, description="The generation this status describes."
    )
    phase: Phase = Field(default="Pending", description="Summary of the conditions.")
    conditions: list[Condition] = Field(
        default_factory=list, description="Scanned, Restored, Copied, Verified, ..."
    )
    progress: Progress = Field(default_factory=Progress, description="Counters and rates.")
    objects: list[ObjectStatus] = Field(
        default_factory=list,
        description="A bounded window of objects: failed first, then in progress.",
    )
    objects_truncated: bool = Field(
        default=False, description="More objects exist than the window shows."
    )
    jobs: list[JobRef] = Field(default_factory=list, description="Worker Jobs.")
    verification: VerificationStatus = Field(
        default_factory=VerificationStatus, description="Verification summary."
    )
    cutover: CutoverStatus = Field(default_factory=CutoverStatus, description="Cutover record.")
    report: ReportRef | None = Field(default=None, description="The full per-object report.")
    plan: PlanStatus | None = Field(default=None, description="Dry-run plan.")
    steps: StepsStatus | None = Field(
        default=None,
        description="The application's steps (spec.backfill, spec.hooks, copy.mode none).",
    )
    buckets: list[BucketStatus] = Field(
        default_factory=list,
        description="Per bucket (source.buckets), in name order, at most 100.",
        max_length=100,
    )
    buckets_truncated: bool = Field(
        default=False, description="More buckets exist than the list shows."
    )
    content: ContentStatus | None = Field(
        default=None, description="Deduplication, for content-addressed layouts."
    )
    groups: GroupsStatus | None = Field(
        default=None, description="The group manifests (spec.groups)."
    )
    health: HealthStatus = Field(
        default_factory=HealthStatus,
        description="Degraded, Stalled and TargetSpaceLow in a word, and their measures.",
    )
