"""The bookkeeping document of each migration and cleanup, as typed models.

Besides its per-object rows, every migration has one JSON document in the ledger
(``migrations.state``) that says where its lifecycle stands: the spec the workers run, the
scans, catch-up rounds, pause and failure, the cutover and its rollback, the verification
digest. Cleanups have one too (``cleanups.state``). These models are that document's only
reader and writer: the ledger loads them and saves changes to them, and no other module
reads a raw key.

A change is a shallow merge of whole sections (``state || patch`` in SQL), so each section
is written at once and concurrent writers of different sections do not clobber each other.
A section set to ``None`` is cleared. The wire names (camelCase) are the document's keys:
documents written by earlier versions load unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from functools import cache
from typing import Any, TypedDict

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator
from pydantic.alias_generators import to_camel


class StateModel(BaseModel):
    """A part of a bookkeeping document: camelCase keys, immutable, tolerant of old keys.

    Keys that no longer mean anything are ignored rather than refused: a ledger written by
    an older objmig must still load. A key stored as JSON null reads as absent.
    """

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_absent(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: v for k, v in value.items() if v is not None}
        return value


class Problem(StateModel):
    """Why a migration or cleanup stopped (failed) or waits (paused): a condition's words."""

    reason: str
    message: str = ""


class ScanRecord(StateModel):
    """The latest inventory of the source: its number, whether it runs, what it found."""

    id: int = 0
    running: bool = False
    completed_at: datetime | None = None
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    #: Why the last try of this scan failed (cleared when it finishes).
    last_error: str | None = None
    #: Objects the globs select otherwise than before they followed rclone's rules, and a
    #: few of their keys ("+key": selected now, "-key": not any more).
    selected_differently: int = 0
    selected_differently_examples: tuple[str, ...] = ()

    @property
    def finished(self) -> bool:
        """Scan ``id`` ran to its end and no later one is under way."""
        return self.completed_at is not None and not self.running

    @property
    def delta(self) -> int:
        """Objects this scan found new or changed."""
        return self.new + self.changed


class CatchUpRecord(StateModel):
    """What the catch-up re-scans found: see :class:`objmig.engine.policy.CatchUp`."""

    rounds: int = 0
    last_delta: int | None = None
    rolled_back_at_round: int | None = None
    #: The re-scan round started as the cutover's final check (see `CatchUp`).
    final_check_round: int | None = None


class Rounds(StateModel):
    """The lifecycle's counters: the catch-up round, and the wave of workers within it.

    A wave is one attempt at a stage; the operator names its Jobs after round and wave, so
    a retry gets a fresh Job instead of finding the failed one again. Stored as
    ``operator`` for documents of earlier versions, where only the operator counted them.
    """

    round: int = 0
    wave: int = 0


class CutoverProgress(StateModel):
    """A cutover under way: kept until it finishes, so one that stopped can be undone."""

    started_at: datetime
    # None: not read yet. Saved before the ConfigMap is written, so a crash in between
    # cannot make the next attempt take the new values for the ones to restore.
    previous_config_map_data: dict[str, str | None] | None = None


class CutoverRecord(StateModel):
    """What a finished cutover did, and what its rollback did (the ``status.cutover`` shape)."""

    at: datetime | None = None
    actions: tuple[str, ...] = ()
    catalog_rows_swapped: int = 0
    config_map_data: dict[str, str] = Field(default_factory=dict)
    # None: never read (no ConfigMap action, or it stopped before); a rollback then leaves
    # the ConfigMap alone.
    previous_config_map_data: dict[str, str | None] | None = None
    rolled_back_at: datetime | None = None
    rollback_blocked: str | None = None


class BucketDigest(StateModel):
    """One bucket's verification digest, in a migration of several."""

    digest: str
    objects: int = 0
    bytes: int = 0


class RetryRecord(StateModel):
    """The latest request to retry failed objects (``objmig retry``, or the annotation)."""

    at: datetime
    objects: int = 0  # rows returned to pending
    reason: str = ""
    #: The annotation's value it answered (an annotation is honoured once per value).
    request: str | None = None
    #: Requests honoured so far, over the migration's life.
    count: int = 1


class VerificationRecord(StateModel):
    """The digest over the verified rows that a cleanup approval quotes (and, for a
    migration of several buckets, each bucket's, for a cleanup of one bucket)."""

    digest: str
    objects: int = 0
    bytes: int = 0
    buckets: dict[str, BucketDigest] = Field(default_factory=dict)


class AuditRecord(StateModel):
    """What the last audit found: the target directory against the ledger (no copy
    missing, no file extra), and the group manifests written and read back.

    Made once per round and wave of the lifecycle (a wave that copied files found missing
    is audited again) and cleared when the spec changes (an ignore glob added)."""

    round: int = 0
    wave: int = 0
    completed_at: datetime | None = None
    files: int = 0
    missing: int = 0
    extra: int = 0
    extra_examples: tuple[str, ...] = ()
    temporaries_removed: int = 0
    groups: int = 0
    manifests_written: int = 0
    incomplete_groups: int = 0
    incomplete_examples: tuple[str, ...] = ()


class TargetSpace(StateModel):
    """Free space on a target directory as a worker last measured it."""

    free: int
    total: int
    minimum: int
    low: bool
    at: datetime


class ConfigMapWorklist(StateModel):
    """A ConfigMap worklist handed to the scan, which runs where there is no Kubernetes API."""

    name: str
    key: str
    text: str


class StoreFinding(StateModel):
    """An aspect of S3 a store of the migration lacks, and what objmig does instead.

    Recorded by the workers that learned it (see `objmig.storage.features`), one entry per
    store and aspect, kept for the migration's life: the `Degraded` condition says them."""

    store: str
    aspect: str
    message: str


class MigrationState(StateModel):
    """Where one migration's lifecycle stands."""

    spec: dict[str, Any] | None = None  # the wire spec the workers run
    generation: int | None = None  # the resource generation ``spec`` came from
    dry_run: bool = False
    paused: Problem | None = None
    failed: Problem | None = None
    scan: ScanRecord = ScanRecord()
    catch_up: CatchUpRecord = CatchUpRecord()
    rounds: Rounds = Field(default=Rounds(), alias="operator")
    cutover: CutoverRecord | None = None
    cutover_in_progress: CutoverProgress | None = None
    verification: VerificationRecord | None = None
    # Set by one ledger statement each, so a cleanup and a rollback cannot both go ahead.
    cleanup_started: bool = False
    rollback_started: bool = False
    manifest_config_map: ConfigMapWorklist | None = None
    retried: RetryRecord | None = None
    # Written by `Ledger.record_store_findings` only, a key at a time: workers of one
    # migration learn about its stores concurrently.
    store_features: dict[str, StoreFinding] = Field(default_factory=dict)
    audit: AuditRecord | None = None
    target_space: TargetSpace | None = None

    @property
    def cut_over(self) -> bool:
        """Applications point at the target: a cutover finished and was not rolled back."""
        return (
            self.cutover is not None
            and self.cutover.at is not None
            and self.cutover.rolled_back_at is None
        )

    @property
    def rolled_back(self) -> bool:
        """The last cutover was reverted."""
        return self.cutover is not None and self.cutover.rolled_back_at is not None

    @property
    def cutover_begun(self) -> bool:
        """A cutover started and did not finish: some of its actions may be done."""
        return self.cutover_in_progress is not None


class MigrationChanges(TypedDict, total=False):
    """The sections of a :class:`MigrationState` one write may set (``None`` clears one)."""

    spec: dict[str, Any]
    generation: int | None
    dry_run: bool
    paused: Problem | None
    failed: Problem | None
    scan: ScanRecord
    catch_up: CatchUpRecord
    rounds: Rounds
    cutover: CutoverRecord
    cutover_in_progress: CutoverProgress | None
    verification: VerificationRecord
    cleanup_started: bool
    rollback_started: bool
    manifest_config_map: ConfigMapWorklist
    retried: RetryRecord
    audit: AuditRecord | None
    target_space: TargetSpace | None


class Leftovers(StateModel):
    """What a leftovers cleanup removed."""

    uploads_aborted: int = 0
    objects_deleted: int = 0
    objects_kept: int = 0
    #: The parts of the uploads aborted and the objects deleted, in bytes.
    bytes_freed: int = 0


class CleanupState(StateModel):
    """Where one MigrationCleanup stands: its spec, its pass, and how the last pass ended."""

    spec: dict[str, Any] | None = None  # the wire spec the current pass runs
    pass_: int = Field(default=0, alias="pass")
    uid: str | None = None
    completed_at: datetime | None = None
    failed: Problem | None = None
    summary: str | None = None
    leftovers: Leftovers | None = None


class CleanupChanges(TypedDict, total=False):
    """The sections of a :class:`CleanupState` one write may set (``None`` clears one)."""

    spec: dict[str, Any]
    pass_: int
    uid: str | None
    completed_at: datetime | None
    failed: Problem | None
    summary: str | None
    leftovers: Leftovers


def encode_changes(model: type[StateModel], changes: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON patch that sets ``changes`` (Python field names) in a stored document."""
    fields = _fields(model)
    patch: dict[str, Any] = {}
    for name, value in changes.items():
        alias, adapter = fields[name]
        patch[alias] = adapter.dump_python(value, mode="json", by_alias=True, exclude_none=True)
    return patch


@cache
def _fields(model: type[StateModel]) -> dict[str, tuple[str, TypeAdapter[Any]]]:
    fields: dict[str, tuple[str, TypeAdapter[Any]]] = {}
    for name, info in model.model_fields.items():
        assert info.annotation is not None  # every field here is annotated
        fields[name] = (info.alias or name, TypeAdapter(info.annotation))
    return fields
