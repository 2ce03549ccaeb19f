"""The ledger: per-object migration state in PostgreSQL.

Fixed decision 2 of the brief: the resource status is a bounded summary; the full per-object
record lives here. Import from this package, not from its modules::

    from objmig.ledger import Ledger, ObjectState, InventoryRow, StepResult

except in the pure decision modules (`objmig.engine.status`, `.policy`, `.lifecycle`,
`.deletion`, the pipeline's `outcomes`), which import the row and state types from
`objmig.ledger.models` and `objmig.ledger.state`: this package loads the store and its
driver, and `make lint` (import-linter) keeps those modules free of I/O.
"""

from objmig.ledger.models import (
    ACTIVE_STATES,
    FAILURE_STATES,
    Activity,
    BackfillRecord,
    CleanupItem,
    CleanupOutcome,
    ContentCounts,
    Counts,
    Digest,
    InventoryResult,
    InventoryRow,
    MigrationRow,
    ObjectRow,
    ObjectState,
    OpenUpload,
    StateCount,
    StepCounts,
    StepResult,
    WorkerReport,
)
from objmig.ledger.report import DigestBuilder, ReportFormat
from objmig.ledger.schema import SchemaTooNew, apply_schema, code_schema_version
from objmig.ledger.state import (
    AuditRecord,
    BucketDigest,
    CatchUpRecord,
    CleanupState,
    ConfigMapWorklist,
    CutoverProgress,
    CutoverRecord,
    Leftovers,
    MigrationState,
    Problem,
    RetryRecord,
    Rounds,
    ScanRecord,
    StoreFinding,
    TargetSpace,
    VerificationRecord,
)
from objmig.ledger.store import (
    AsyncSink,
    Ledger,
    LedgerError,
    LedgerUnavailable,
    LedgerWait,
    MigrationConflict,
    UnknownMigration,
)

__all__ = [
    "ACTIVE_STATES",
    "FAILURE_STATES",
    "Activity",
    "AsyncSink",
    "AuditRecord",
    "BackfillRecord",
    "BucketDigest",
    "CatchUpRecord",
    "CleanupItem",
    "CleanupOutcome",
    "CleanupState",
    "ConfigMapWorklist",
    "ContentCounts",
    "Counts",
    "CutoverProgress",
    "CutoverRecord",
    "Digest",
    "DigestBuilder",
    "InventoryResult",
    "InventoryRow",
    "Ledger",
    "LedgerError",
    "LedgerUnavailable",
    "LedgerWait",
    "Leftovers",
    "MigrationConflict",
    "MigrationRow",
    "MigrationState",
    "ObjectRow",
    "ObjectState",
    "OpenUpload",
    "Problem",
    "ReportFormat",
    "RetryRecord",
    "Rounds",
    "ScanRecord",
    "SchemaTooNew",
    "StateCount",
    "StepCounts",
    "StepResult",
    "StoreFinding",
    "TargetSpace",
    "UnknownMigration",
    "VerificationRecord",
    "WorkerReport",
    "apply_schema",
    "code_schema_version",
]
