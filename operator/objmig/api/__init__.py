"""The objmig API: pydantic models of the custom resources, the single source of the CRDs."""

from objmig.api.conditions import Condition, find_condition, is_true, set_condition
from objmig.api.migration import (
    API_VERSION,
    GROUP,
    VERSION,
    ObjectMigration,
    ObjectMigrationSpec,
    ObjectMigrationStatus,
)
from objmig.api.migration_cleanup import (
    MigrationCleanup,
    MigrationCleanupSpec,
    MigrationCleanupStatus,
)
from objmig.api.types import format_duration, parse_duration, parse_quantity

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "Condition",
    "MigrationCleanup",
    "MigrationCleanupSpec",
    "MigrationCleanupStatus",
    "ObjectMigration",
    "ObjectMigrationSpec",
    "ObjectMigrationStatus",
    "find_condition",
    "format_duration",
    "is_true",
    "parse_duration",
    "parse_quantity",
    "set_condition",
]
