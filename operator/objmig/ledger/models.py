"""Row and result types of the ledger.

Frozen dataclasses and NamedTuples rather than pydantic models: the ledger builds hundreds of
thousands of rows while claiming and streaming, and they never cross a trust boundary (they
come from our own database or our own engine), so validation would be pure cost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

# Annotations only: the pure decision modules read these rows without loading the driver.
if TYPE_CHECKING:
    import asyncpg

__all__ = [
    "ACTIVE_STATES",
    "FAILURE_STATES",
    "BackfillRecord",
    "CleanupItem",
    "CleanupOutcome",
    "CleanupOutcomeKind",
    "ContentCounts",
    "Counts",
    "Digest",
    "InventoryResult",
    "InventoryRow",
    "MigrationRow",
    "ObjectRow",
    "ObjectState",
    "OpenUpload",
    "StateCount",
    "StepCounts",
    "StepResult",
]


class ObjectState(StrEnum):
    """Where one source object stands.

    "In progress" is deliberately not a state: a row is in progress while a worker holds its
    lease (``lease_expires_at > now()``), so a crashed worker leaves rows in a state that
    another worker can pick up as-is once the lease runs out.
    """

    #: Known from the inventory, still to copy.
    PENDING = "pending"
    #: Archived; RestoreObject was issued and we wait for it (``not_before`` = next poll).
    RESTORING = "restoring"
    #: Written to the target, awaiting verification.
    COPIED = "copied"
    #: Target proven identical to the source (``verified_at`` says when).
    VERIFIED = "verified"
    #: Verified (or, with copy.mode none, looked at), and a step of the application's (its
    #: hook, its backfill) is still to be done: claimed again like pending work.
    FINISHING = "finishing"
    #: Deliberately left alone; ``skip_reason`` says why.
    SKIPPED = "skipped"
    #: Permanent error or attempts exhausted; ``last_error`` / ``error_code`` say why.
    FAILED = "failed"
    #: The source changed between scan and verification; a re-scan makes it pending again.
    SOURCE_CHANGED = "source_changed"
    #: The source object was deleted by cleanup (``deleted_at``); terminal.
    DELETED = "deleted"


#: States the status counts as failed: both hold the cutover back (within the budget).
FAILURE_STATES: tuple[ObjectState, ...] = (ObjectState.FAILED, ObjectState.SOURCE_CHANGED)

#: States from which work remains to be done by a worker.
ACTIVE_STATES: tuple[ObjectState, ...] = (
    ObjectState.PENDING,
    ObjectState.RESTORING,
    ObjectState.COPIED,
    ObjectState.FINISHING,
)


@dataclass(frozen=True, slots=True)
class MigrationRow:
    """One migration (one ObjectMigration resource, or one ``objmig run`` spec)."""

    id: int
    name: str
    uid: str
    created_at: datetime
    state: dict[str, Any]


@dataclass(frozen=True, slots=True)
class InventoryRow:
    """One source object as listed by a scan.

    ``version_id`` is ``""`` for unversioned buckets (never None: it is part of the key).
    ``target_key`` is where the engine intends to write the object. ``row_id`` is the
    application's id a SQL worklist returned with the key.
    """

    key: str
    size: int
    etag: str
    last_modified: datetime | None = None
    version_id: str = ""
    storage_class: str = "STANDARD"
    target_key: str | None = None
    row_id: str | None = None
    #: The bucket of a migration of several buckets ("" for one bucket or a directory).
    bucket: str = ""
    #: The object's group (spec.groups.by), for its group's manifest.
    group_key: str | None = None


@dataclass(frozen=True, slots=True)
class InventoryResult:
    """What an inventory upsert did: rows inserted, rows whose source changed, and the rest."""

    new: int = 0
    changed: int = 0
    unchanged: int = 0

    @property
    def total(self) -> int:
        """All rows processed (after de-duplication within a chunk)."""
        return self.new + self.changed + self.unchanged

    def __add__(self, other: InventoryResult) -> InventoryResult:
        return InventoryResult(
            new=self.new + other.new,
            changed=self.changed + other.changed,
            unchanged=self.unchanged + other.unchanged,
        )


class ObjectRow(NamedTuple):
    """One row of the ``objects`` table, every column.

    A NamedTuple rather than a frozen dataclass: claims and reports build hundreds of
    thousands of these, and a frozen dataclass's ``__init__`` (one ``object.__setattr__`` per
    field) cost more than the database round trip that fetched them.
    """

    id: int
    migration_id: int
    key: str
    version_id: str
    size: int
    etag: str
    last_modified: datetime | None
    storage_class: str
    target_key: str | None
    target_etag: str | None
    target_version_id: str | None
    source_checksum: str | None
    target_checksum: str | None
    state: ObjectState
    attempts: int
    last_error: str | None
    error_code: str | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    not_before: datetime | None
    restore_requested_at: datetime | None
    verified_at: datetime | None
    cut_over_at: datetime | None
    deleted_at: datetime | None
    updated_at: datetime
    last_seen_scan: int
    skip_reason: str | None
    # Added by schema version 3 (defaults keep rows made in code short).
    row_id: str | None = None
    target_last_modified: datetime | None = None
    hook_done_at: datetime | None = None
    backfill: dict[str, Any] | None = None
    backfilled_at: datetime | None = None
    #: What proved the copy ("etag", or a checksum algorithm such as "sha256").
    verified_by: str | None = None
    #: Aspects of S3 this object's copy did without (comma-separated), see
    #: `objmig.storage.features.Aspect`.
    degraded: str | None = None
    # Added by schema version 7 (0007_writes).
    not_preserved: str | None = None
    # Added by schema version 6 (0006_buckets).
    #: The bucket of a migration of several buckets ("" for one bucket or a directory).
    bucket: str = ""
    #: The source's metadata as the copy saw it, where a manifest lists it
    #: (``{"metadata": {...}, "contentType": ...}``).
    source_metadata: dict[str, Any] | None = None
    #: The object's group (spec.groups.by), for its group's manifest.
    group_key: str | None = None

    @classmethod
    def from_record(cls, record: asyncpg.Record | Mapping[str, Any]) -> ObjectRow:
        """Build from a database record that has every column of ``objects``."""
        # Positional and without a dict: reports and claims build many thousands of these.
        values = [record[name] for name in _OBJECT_FIELDS]
        values[_STATE_INDEX] = _STATES[values[_STATE_INDEX]]
        return cls._make(values)


#: The columns of ``objects`` in ObjectRow order; used to build SELECT lists and reports.
OBJECT_COLUMNS: tuple[str, ...] = ObjectRow._fields
_OBJECT_FIELDS = OBJECT_COLUMNS
_STATE_INDEX = OBJECT_COLUMNS.index("state")
_STATES: dict[str, ObjectState] = {state.value: state for state in ObjectState}


class StepResult(NamedTuple):
    """The outcome of one pipeline step for one claimed row, written by ``Ledger.record``.

    (A NamedTuple, like :class:`ObjectRow`, because workers make one per object.)

    Field semantics:

    * ``target_*``, ``source_checksum``, ``target_checksum``, ``restore_requested_at``,
      ``source_metadata`` accumulate over steps: ``None`` keeps the stored value.
    * ``last_error``, ``error_code``, ``skip_reason``, ``not_before``, ``verified_by``,
      ``degraded`` and ``not_preserved`` describe the latest step only: they are always
      written, so ``None`` clears them (a successful retry leaves no stale error behind).
    * ``increment_attempts`` adds one to ``attempts`` (set it for every attempt that did
      real work, successful or not, so retry budgets count correctly).
    * ``verified_at`` is set to ``now()`` when ``state`` becomes ``verified`` or
      ``finishing`` (from another state); ``deleted_at`` when it is ``deleted``.
    * ``hook_done`` sets ``hook_done_at = now()`` (the per-object hook answered 2xx);
      ``target_last_modified`` accumulates like the other target fields.
    """

    id: int
    state: ObjectState
    target_key: str | None = None
    target_etag: str | None = None
    target_version_id: str | None = None
    source_checksum: str | None = None
    target_checksum: str | None = None
    last_error: str | None = None
    error_code: str | None = None
    skip_reason: str | None = None
    not_before: datetime | None = None
    increment_attempts: bool = False
    restore_requested_at: datetime | None = None
    target_last_modified: datetime | None = None
    hook_done: bool = False
    verified_by: str | None = None
    degraded: str | None = None
    not_preserved: str | None = None
    source_metadata: dict[str, Any] | None = None


class OpenUpload(NamedTuple):
    """A multipart upload objmig recorded and has not seen end (``Ledger.open_uploads``)."""

    object_id: int
    target_key: str
    upload_id: str
    started_at: datetime


@dataclass(frozen=True, slots=True)
class StateCount:
    """A number of objects and their total size in bytes."""

    objects: int = 0
    bytes: int = 0

    def __add__(self, other: StateCount) -> StateCount:
        return StateCount(objects=self.objects + other.objects, bytes=self.bytes + other.bytes)


@dataclass(frozen=True, slots=True)
class Counts:
    """Exact per-state totals of one migration, taken from one database snapshot.

    ``in_flight`` counts rows whose lease is currently held; those rows are *also* counted
    under their state in ``by_state`` (a leased pending row is still pending).
    ``in_flight_by_state`` splits ``in_flight`` by that state.
    """

    by_state: dict[ObjectState, StateCount] = field(default_factory=dict)
    in_flight: StateCount = field(default_factory=StateCount)
    in_flight_by_state: dict[ObjectState, StateCount] = field(default_factory=dict)

    def state(self, state: ObjectState) -> StateCount:
        """Totals of one state (zero when no row is in it)."""
        return self.by_state.get(state, StateCount())

    @property
    def total(self) -> StateCount:
        """All rows of the migration, whatever their state."""
        total = StateCount()
        for count in self.by_state.values():
            total += count
        return total


@dataclass(frozen=True, slots=True)
class Digest:
    """The verification digest of a migration (see ``Ledger.verification_digest``), and of
    each of its buckets when it has several."""

    objects: int
    bytes: int
    sha256: str
    buckets: Mapping[str, Digest] = field(default_factory=dict)

    @property
    def algorithm(self) -> str:
        """Name and version of the encoding, for ``status.verification.algorithm``."""
        return "objmig-verification-v1/sha256"


@dataclass(frozen=True, slots=True)
class StepCounts:
    """Objects by where their application steps stand (see ``Ledger.step_counts``)."""

    missing: int = 0
    hooks_done: int = 0
    hooks_pending: int = 0
    backfill_written: int = 0
    backfill_already_set: int = 0
    backfill_no_row: int = 0
    backfill_conflicts: int = 0


@dataclass(frozen=True, slots=True)
class BackfillRecord:
    """One row's backfill as the ledger holds it: planned (maybe written) or done."""

    id: int
    key: str
    row_id: str | None
    backfill: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ContentCounts:
    """Verified objects against the distinct content keys they point to (deduplication)."""

    objects: int = 0
    bytes: int = 0
    contents: int = 0
    content_bytes: int = 0

    @property
    def deduplicated(self) -> int:
        """Objects whose content was stored already: written nowhere."""
        return self.objects - self.contents

    @property
    def bytes_saved(self) -> int:
        return self.bytes - self.content_bytes


CleanupOutcomeKind = Literal["planned", "deleted", "would_delete", "skipped", "failed"]


@dataclass(frozen=True, slots=True)
class CleanupOutcome:
    """What a cleanup decided (and did) for one object, written by ``Ledger.record_cleanup``."""

    object_id: int
    outcome: CleanupOutcomeKind
    reason: str
    message: str = ""


@dataclass(frozen=True, slots=True)
class CleanupItem:
    """One object of a cleanup, for the bounded window of the status."""

    bucket: str
    key: str
    version_id: str
    size: int
    outcome: CleanupOutcomeKind
    reason: str | None
    message: str | None


@dataclass(frozen=True, slots=True)
class WorkerReport:
    """What one worker says about itself: totals since it started, and its latest retry."""

    bytes_moved: int = 0
    bytes_in_flight: int = 0
    retries: int = 0
    last_error: str | None = None
    last_error_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Activity:
    """The sum of a migration's worker reports (see ``Ledger.activity``).

    ``stalled`` counts leases (live by their expiry time) whose owner stopped reporting:
    work nobody does any more, which returns to the pool when the lease expires.
    """

    bytes_moved: int = 0
    bytes_in_flight: int = 0
    retries: int = 0
    last_error: str | None = None
    stalled: StateCount = field(default_factory=StateCount)
