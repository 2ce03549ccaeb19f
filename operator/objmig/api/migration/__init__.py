"""The ObjectMigration resource: what to move, how to copy and prove it, and when to cut over.

Every field carries a description because the CRD is generated from these models and
``kubectl explain objectmigration.spec...`` shows exactly these texts.

One module a section of the spec: `endpoints` (source, target), `selection`, `copying`
(restore, copy, verify), `running` (workers, retry, failure policy), `cutover`,
`application` (backfill, hooks: the application's side), `spec`
(the whole spec and its cross-field rules), `status`, `resource` (the custom resource),
and `common` (group, version, storage classes, phases, metadata). Import the models from
this package.
"""

from objmig.api.migration.application import (
    BACKFILL_ATTRIBUTES,
    BackfillColumns,
    BackfillSpec,
    HooksSpec,
    PerObjectHook,
)
from objmig.api.migration.common import (
    API_VERSION,
    BUCKET_PATTERN,
    GROUP,
    KEY_TEMPLATE_FIELDS,
    MAX_PARALLELISM,
    VERSION,
    ArchivedStorageClass,
    ObjectMeta,
    Phase,
    StorageClass,
)
from objmig.api.migration.copying import CopySpec, RestoreSpec, VerifySpec
from objmig.api.migration.cutover import CatalogAction, ConfigMapAction, CutoverSpec
from objmig.api.migration.endpoints import (
    BucketSpec,
    BucketsSpec,
    Encryption,
    EncryptionSpec,
    FilesystemSpec,
    FilesystemTargetSpec,
    MetadataChangeSpec,
    SourceSpec,
    TargetSpec,
)
from objmig.api.migration.layout import GroupsSpec
from objmig.api.migration.resource import ObjectMigration
from objmig.api.migration.running import (
    BackoffSpec,
    FailurePolicySpec,
    HealthSpec,
    ResourceRequirements,
    RetrySpec,
    Toleration,
    WorkersSpec,
)
from objmig.api.migration.selection import (
    ManifestObjectRef,
    ManifestSpec,
    MetadataRequirement,
    SelectionSpec,
    SqlWorklist,
)
from objmig.api.migration.spec import ObjectMigrationSpec
from objmig.api.migration.status import (
    BucketStatus,
    ContentStatus,
    Counters,
    CutoverStatus,
    GroupsStatus,
    HealthStatus,
    JobRef,
    ObjectMigrationStatus,
    ObjectStatus,
    PlanStatus,
    Progress,
    ReportRef,
    StepsStatus,
    VerificationStatus,
)

__all__ = [
    "API_VERSION",
    "BACKFILL_ATTRIBUTES",
    "BUCKET_PATTERN",
    "GROUP",
    "KEY_TEMPLATE_FIELDS",
    "MAX_PARALLELISM",
    "VERSION",
    "ArchivedStorageClass",
    "BackfillColumns",
    "BackfillSpec",
    "BackoffSpec",
    "BucketSpec",
    "BucketStatus",
    "BucketsSpec",
    "CatalogAction",
    "ConfigMapAction",
    "ContentStatus",
    "CopySpec",
    "Counters",
    "CutoverSpec",
    "CutoverStatus",
    "Encryption",
    "EncryptionSpec",
    "FailurePolicySpec",
    "FilesystemSpec",
    "FilesystemTargetSpec",
    "GroupsSpec",
    "GroupsStatus",
    "HealthSpec",
    "HealthStatus",
    "HooksSpec",
    "JobRef",
    "ManifestObjectRef",
    "ManifestSpec",
    "MetadataChangeSpec",
    "MetadataRequirement",
    "ObjectMeta",
    "ObjectMigration",
    "ObjectMigrationSpec",
    "ObjectMigrationStatus",
    "ObjectStatus",
    "PerObjectHook",
    "Phase",
    "PlanStatus",
    "Progress",
    "ReportRef",
    "ResourceRequirements",
    "RestoreSpec",
    "RetrySpec",
    "SelectionSpec",
    "SourceSpec",
    "SqlWorklist",
    "StepsStatus",
    "StorageClass",
    "TargetSpec",
    "Toleration",
    "VerificationStatus",
    "VerifySpec",
    "WorkersSpec",
]
