"""The ObjectMigration resource: what to move, how to copy and prove it, and when to cut over.

Every field carries a description because the CRD is generated from these models and
``kubectl explain objectmigration.spec...`` shows exactly these texts.
"""

from __future__ import annotations

import re
from datetime import datetime
from string import Formatter
from typing import Annotated, Literal, get_args

from pydantic import ConfigDict, Field, field_validator, model_validator

from objmig.api.base import (
    ApiModel,
    LocalObjectReference,
    SecretKeySelector,
    cel_rule,
    cel_validations,
)
from objmig.api.conditions import Condition
from objmig.api.types import Duration, Quantity, ResourceQuantity, parse_quantity

GROUP = "objmig.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
# Worker pods of one Job; bounds the index suffix of their hostnames (see controller.jobs).
MAX_PARALLELISM = 256

StorageClass = Literal[
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "GLACIER_IR",
    "OUTPOSTS",
    "SNOW",
    "EXPRESS_ONEZONE",
]
ArchivedStorageClass = Literal["GLACIER", "DEEP_ARCHIVE"]
Phase = Literal[
    "Pending",
    "Scanning",
    "Restoring",
    "Copying",
    "Verifying",
    "AwaitingCutover",
    "CutOver",
    "Completed",
    "Paused",
    "Failed",
]

BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$"
KEY_TEMPLATE_FIELDS = frozenset(
    {"key", "relative", "dirname", "basename", "year", "month", "day", "etag"}
)


class ObjectMeta(ApiModel):
    """The subset of Kubernetes object metadata that objmig reads."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(
        description="Name of the resource.",
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
    )
    namespace: str = Field(default="default", description="Namespace of the resource.")
    uid: str | None = Field(default=None, description="Unique id assigned by the API server.")
    generation: int | None = Field(default=None, description="Generation of the spec.")


# --- endpoints -------------------------------------------------------------------------


class BucketSpec(ApiModel):
    """Where objects live: an S3-compatible endpoint, a bucket and a key prefix."""

    endpoint: str = Field(
        default="",
        description="S3 endpoint URL, e.g. https://minio.example:9000. Empty means AWS S3.",
        max_length=2048,
        pattern=r"^(https?://[^\s/]+(/[^\s]*)?)?$",
    )
    region: str = Field(
        default="us-east-1",
        description="Region used for request signing.",
        max_length=64,
        pattern=r"^[a-z0-9-]*$",
    )
    bucket: str = Field(
        description="Bucket name (3-63 lowercase letters, digits, dots, hyphens).",
        pattern=BUCKET_PATTERN,
    )
    prefix: str = Field(
        default="",
        description="Only keys under this prefix. Keys are taken relative to it for re-layout.",
        max_length=1024,
    )
    credentials_secret_ref: LocalObjectReference | None = Field(
        default=None,
        description=(
            "Secret holding accessKeyId, secretAccessKey and optional sessionToken. "
            "Absent: the worker's environment (e.g. IRSA or AWS_* variables)."
        ),
    )
    addressing_style: Literal["auto", "path", "virtual"] = Field(
        default="auto",
        description=(
            "path (https://host/bucket/key) or virtual (https://bucket.host/key). "
            "auto: virtual for AWS, path for any other endpoint."
        ),
    )
    profile: str | None = Field(
        default=None,
        description="CLI only: AWS shared-config profile to take credentials from.",
        max_length=128,
    )


class SourceSpec(BucketSpec):
    """The store objects are copied from. Immutable once the migration exists."""

    customer_key_secret_ref: SecretKeySelector | None = Field(
        default=None,
        description="Secret key holding the 32-byte SSE-C key the source objects are encrypted "
        "with, if any.",
    )


Encryption = Literal["none", "SSE-S3", "SSE-KMS", "SSE-C"]


class EncryptionSpec(ApiModel):
    """Server-side encryption applied to every object written to the target."""

    model_config = cel_validations(
        cel_rule(
            "self.mode != 'SSE-KMS' || has(self.kmsKeyId)",
            "SSE-KMS needs kmsKeyId",
            field_path=".kmsKeyId",
            reason="FieldValueRequired",
        ),
        cel_rule(
            "self.mode != 'SSE-C' || has(self.customerKeySecretRef)",
            "SSE-C needs customerKeySecretRef (the Secret holding the key)",
            field_path=".customerKeySecretRef",
            reason="FieldValueRequired",
        ),
        cel_rule(
            "self.mode == 'SSE-KMS' || !has(self.kmsKeyId)",
            "kmsKeyId is only valid with mode SSE-KMS",
            field_path=".kmsKeyId",
        ),
    )

    mode: Encryption = Field(
        default="none",
        description="none (the bucket's default), SSE-S3, SSE-KMS (needs kmsKeyId) or SSE-C "
        "(needs customerKeySecretRef).",
    )
    kms_key_id: str | None = Field(
        default=None, description="KMS key id or ARN for SSE-KMS.", min_length=1, max_length=2048
    )
    customer_key_secret_ref: SecretKeySelector | None = Field(
        default=None, description="Secret key holding the 32-byte SSE-C key."
    )

    @model_validator(mode="after")
    def _mode_needs_its_key(self) -> EncryptionSpec:
        if self.mode == "SSE-KMS" and not self.kms_key_id:
            raise ValueError("SSE-KMS needs kmsKeyId")
        if self.mode == "SSE-C" and self.customer_key_secret_ref is None:
            raise ValueError("SSE-C needs customerKeySecretRef (the Secret holding the key)")
        if self.mode != "SSE-KMS" and self.kms_key_id:
            raise ValueError("kmsKeyId is only valid with mode SSE-KMS")
        return self


class TargetSpec(BucketSpec):
    """The store objects are copied to, and how they are written there."""

    storage_class: StorageClass | None = Field(
        default=None,
        description="Storage class of the written objects. Absent: the target's default.",
    )
    encryption: EncryptionSpec = Field(
        default_factory=EncryptionSpec, description="Server-side encryption of written objects."
    )
    key_template: str = Field(
        default="{relative}",
        description=(
            "Target key, appended to the target prefix. Placeholders: {key} (full source key), "
            "{relative} (key relative to the source prefix), {dirname}, {basename}, "
            "{year}/{month}/{day} (of last-modified), {etag}."
        ),
        min_length=1,
        max_length=1024,
    )

    @field_validator("key_template")
    @classmethod
    def _known_placeholders(cls, template: str) -> str:
        try:
            fields = {name for _, name, _, _ in Formatter().parse(template) if name is not None}
        except ValueError as error:
            raise ValueError(f"keyTemplate is malformed: {error}") from None
        unknown = fields - KEY_TEMPLATE_FIELDS
        if unknown:
            raise ValueError(
                f"keyTemplate uses unknown placeholders {sorted(unknown)}; "
                f"known: {sorted(KEY_TEMPLATE_FIELDS)}"
            )
        return template


# --- selection -------------------------------------------------------------------------


class MetadataRequirement(ApiModel):
    """A rule on one user-metadata entry (x-amz-meta-*), like a label selector expression."""

    model_config = cel_validations(
        cel_rule(
            "!(self.operator in ['Exists', 'DoesNotExist']) || "
            "!has(self.values) || size(self.values) == 0",
            "Exists and DoesNotExist take no values",
        ),
        cel_rule(
            "!(self.operator in ['In', 'NotIn']) || (has(self.values) && size(self.values) > 0)",
            "In and NotIn need at least one value",
        ),
        cel_rule(
            "!(self.operator in ['Lt', 'Gt']) || (has(self.values) && "
            "size(self.values) == 1 && self.values[0].matches('^-?[0-9]+$'))",
            "Lt and Gt need exactly one integer value",
        ),
    )

    key: str = Field(
        description="Metadata key without the x-amz-meta- prefix, e.g. storage-version.",
        min_length=1,
        max_length=128,
    )
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Lt", "Gt"] = Field(
        description="In, NotIn, Exists, DoesNotExist, or Lt / Gt for integer comparison."
    )
    # Each value is bounded so the API server can afford the CEL regex match below.
    values: list[Annotated[str, Field(max_length=256)]] = Field(
        default_factory=list,
        description="Values for In / NotIn, or the single integer for Lt / Gt.",
        max_length=64,
    )

    @model_validator(mode="after")
    def _values_fit_operator(self) -> MetadataRequirement:
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError("Exists and DoesNotExist take no values")
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError("In and NotIn need at least one value")
        if self.operator in ("Lt", "Gt") and (
            len(self.values) != 1 or not re.fullmatch(r"-?[0-9]+", self.values[0])
        ):
            raise ValueError("Lt and Gt need exactly one integer value")
        return self


class ManifestObjectRef(ApiModel):
    """A worklist file stored as an object, read with the source's endpoint and credentials."""

    bucket: str = Field(description="Bucket holding the manifest.", pattern=BUCKET_PATTERN)
    key: str = Field(
        description="Key of the manifest: a list, a CSV, or an S3 Inventory manifest.json.",
        min_length=1,
        max_length=1024,
    )


_INVENTORY_NEEDS_OBJECT = (
    "format s3-inventory reads an S3 Inventory manifest.json from its bucket: set object"
)


class ManifestSpec(ApiModel):
    """A worklist of keys instead of (or narrowing) a listing of the source prefix."""

    model_config = cel_validations(
        cel_rule(
            "[has(self.configMapRef), has(self.object), has(self.path)].filter(x, x).size() == 1",
            "set exactly one of configMapRef, object or path",
        ),
        cel_rule(
            "!has(self.format) || self.format != 's3-inventory' || has(self.object)",
            _INVENTORY_NEEDS_OBJECT,
            field_path=".format",
        ),
    )

    format: Literal["lines", "csv", "s3-inventory"] = Field(
        default="lines",
        description="lines: one key per line; csv: bucket,key[,versionId]; "
        "s3-inventory: an S3 Inventory manifest.json with CSV data files.",
    )
    config_map_ref: SecretKeySelector | None = Field(
        default=None, description="A ConfigMap key holding the worklist."
    )
    object: ManifestObjectRef | None = Field(
        default=None, description="A manifest stored in a bucket."
    )
    path: str | None = Field(
        default=None, description="CLI only: a local file holding the worklist.", min_length=1
    )

    @model_validator(mode="after")
    def _exactly_one_source(self) -> ManifestSpec:
        given = [x for x in (self.config_map_ref, self.object, self.path) if x is not None]
        if len(given) != 1:
            raise ValueError("set exactly one of configMapRef, object or path")
        if self.format == "s3-inventory" and self.object is None:
            raise ValueError(_INVENTORY_NEEDS_OBJECT)
        return self


class SelectionSpec(ApiModel):
    """Which source objects take part. All given filters must match."""

    model_config = cel_validations(
        cel_rule(
            "!has(self.minSize) || !has(self.maxSize) || "
            "quantity(string(self.minSize)).compareTo(quantity(string(self.maxSize))) <= 0",
            "minSize must not exceed maxSize",
            field_path=".minSize",
        ),
        cel_rule(
            "!has(self.modifiedAfter) || !has(self.modifiedBefore) || "
            "timestamp(self.modifiedAfter) < timestamp(self.modifiedBefore)",
            "modifiedAfter must be before modifiedBefore",
            field_path=".modifiedAfter",
        ),
    )

    include: list[str] = Field(
        default_factory=list,
        description="Globs on the key relative to the source prefix; empty includes all. "
        "* stays within one path segment, ** crosses segments.",
        max_length=256,
    )
    exclude: list[str] = Field(
        default_factory=list,
        description="Globs on the relative key; an excluded key is never selected.",
        max_length=256,
    )
    modified_after: datetime | None = Field(
        default=None, description="Only objects last modified at or after this time (RFC 3339)."
    )
    modified_before: datetime | None = Field(
        default=None, description="Only objects last modified before this time (RFC 3339)."
    )
    min_size: Quantity | None = Field(
        default=None, description="Only objects at least this large, e.g. 1Mi."
    )
    max_size: Quantity | None = Field(
        default=None, description="Only objects at most this large, e.g. 5Gi."
    )
    storage_classes: list[StorageClass] = Field(
        default_factory=list,
        description="Only objects in these storage classes; empty means all.",
        max_length=16,
    )
    metadata: list[MetadataRequirement] = Field(
        default_factory=list,
        description="Rules on user metadata; each candidate is HEADed to check them.",
        max_length=32,
    )
    manifest: ManifestSpec | None = Field(
        default=None, description="Take the keys from a worklist instead of listing the prefix."
    )
    all_versions: bool = Field(
        default=False,
        description="Copy every version of a versioned source, not only the latest.",
    )
    limit: int | None = Field(
        default=None, ge=1, description="Select at most this many objects (in listing order)."
    )

    @model_validator(mode="after")
    def _ranges_are_ordered(self) -> SelectionSpec:
        if (
            self.min_size is not None
            and self.max_size is not None
            and parse_quantity(self.min_size) > parse_quantity(self.max_size)
        ):
            raise ValueError("minSize must not exceed maxSize")
        if (
            self.modified_after is not None
            and self.modified_before is not None
            and self.modified_after >= self.modified_before
        ):
            raise ValueError("modifiedAfter must be before modifiedBefore")
        return self


# --- how -------------------------------------------------------------------------------


class RestoreSpec(ApiModel):
    """Restore archived objects before copying them. Absent: archived objects are skipped."""

    model_config = cel_validations(
        cel_rule(
            # storageClasses has a schema default, so the API server always sees it here.
            "self.tier != 'Expedited' || !('DEEP_ARCHIVE' in self.storageClasses)",
            "Expedited retrieval is not available for DEEP_ARCHIVE; "
            "use Standard or Bulk, or restrict storageClasses to GLACIER",
            field_path=".tier",
        ),
    )

    tier: Literal["Bulk", "Standard", "Expedited"] = Field(
        default="Bulk",
        description="Retrieval tier. Expedited is not available for DEEP_ARCHIVE.",
    )
    days: int = Field(default=3, ge=1, le=365, description="Days the restored copy stays readable.")
    poll_interval: Duration = Field(
        default="15m", description="How often to check whether a restore has finished."
    )
    # A plain default (pydantic copies it per instance) so the CRD carries it too: the CEL rule
    # above reads storageClasses, which must not be absent on the API server.
    storage_classes: list[ArchivedStorageClass] = Field(
        default=list(get_args(ArchivedStorageClass)),
        description="Archived classes to restore. GLACIER_IR is readable and needs no restore.",
        min_length=1,
        max_length=2,
    )

    @model_validator(mode="after")
    def _no_expedited_deep_archive(self) -> RestoreSpec:
        if self.tier == "Expedited" and "DEEP_ARCHIVE" in self.storage_classes:
            raise ValueError(
                "Expedited retrieval is not available for DEEP_ARCHIVE; "
                "use Standard or Bulk, or restrict storageClasses to GLACIER"
            )
        return self


class CopySpec(ApiModel):
    """How bytes move from source to target."""

    mode: Literal["auto", "serverSide", "stream"] = Field(
        default="auto",
        description="serverSide: CopyObject / UploadPartCopy inside one store; stream: GET "
        "then PUT through the worker; auto: serverSide when source and target share endpoint "
        "and credentials.",
    )
    preserve_part_boundaries: bool = Field(
        default=True,
        description="Write multipart objects with the source's part sizes, so ETags match.",
    )
    part_size: Quantity = Field(
        default="16Mi",
        description="Part size when part boundaries are not preserved.",
    )
    concurrency: int = Field(default=16, ge=1, le=1024, description="Objects in flight per worker.")
    part_concurrency: int = Field(
        default=4, ge=1, le=64, description="Parts in flight per multipart object."
    )
    preserve_metadata: bool = Field(
        default=True, description="Copy user metadata and content headers."
    )
    preserve_tags: bool = Field(default=True, description="Copy object tags.")
    overwrite: Literal["never", "ifDifferent", "always"] = Field(
        default="ifDifferent",
        description="An existing target object: never (skip it), ifDifferent (skip when "
        "identical, else replace), always (replace).",
    )
    bandwidth_limit: Quantity | None = Field(
        default=None, description="Bytes per second per worker, e.g. 100Mi. Absent: unlimited."
    )


class VerifySpec(ApiModel):
    """How each copy is proven identical before it can be cut over."""

    mode: Literal["etag", "checksum", "full"] = Field(
        default="etag",
        description="etag: target ETag equals source ETag (falls back to checksum when "
        "encryption makes ETags opaque); checksum: S3 checksums or a SHA-256 taken while "
        "copying; full: re-read both sides and compare SHA-256.",
    )
    metadata: bool = Field(
        default=True, description="Also compare user metadata and content headers."
    )
    verify_only: bool = Field(
        default=False, description="Check an existing copy; write nothing to the target."
    )


class Toleration(ApiModel):
    """A Kubernetes toleration for worker pods."""

    key: str | None = Field(default=None, description="Taint key; empty matches all keys.")
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Exists or Equal.")
    value: str | None = Field(default=None, description="Taint value for Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; empty matches all."
    )
    toleration_seconds: int | None = Field(
        default=None, description="For NoExecute: how long the pod stays bound."
    )


class ResourceRequirements(ApiModel):
    """CPU and memory for each worker pod."""

    requests: dict[str, ResourceQuantity] = Field(
        default_factory=dict, description="Minimum resources, e.g. cpu: 500m, memory: 256Mi."
    )
    limits: dict[str, ResourceQuantity] = Field(
        default_factory=dict, description="Maximum resources."
    )


class WorkersSpec(ApiModel):
    """The Job pods that claim and copy objects."""

    parallelism: int = Field(
        default=2, ge=1, le=MAX_PARALLELISM, description="Worker pods run at once."
    )
    image: str | None = Field(
        default=None, description="Worker image. Absent: the operator's configured image."
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="Resources of each worker. Absent: the operator's default."
    )
    service_account_name: str | None = Field(
        default=None, description="ServiceAccount the worker pods run as (needs no RBAC)."
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels the worker pods must match."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Tolerations of the worker pods."
    )


class BackoffSpec(ApiModel):
    """Exponential, capped, jittered delay between attempts."""

    initial: Duration = Field(default="1s", description="Delay before the second attempt.")
    max: Duration = Field(default="5m", description="Longest delay between attempts.")
    factor: int = Field(default=2, ge=1, le=10, description="Growth factor per attempt.")
    jitter: bool = Field(default=True, description="Randomise each delay by up to 100%.")


class RetrySpec(ApiModel):
    """Retries of retryable errors (throttling, 5xx, resets). 403/404 are never retried."""

    attempts: int = Field(default=5, ge=1, le=100, description="Attempts per object.")
    backoff: BackoffSpec = Field(default_factory=BackoffSpec, description="Delay policy.")
    object_timeout: Duration = Field(
        default="1h", description="Longest one attempt on one object may take."
    )


class FailurePolicySpec(ApiModel):
    """How many failed objects pause the migration."""

    max_failed_objects: int | None = Field(
        default=None, ge=0, description="Pause when more objects than this have failed."
    )
    max_failure_ratio: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Pause when failed / finished exceeds this (0-1), after minObjects.",
    )
    min_objects: int = Field(
        default=100, ge=1, description="Finished objects before maxFailureRatio applies."
    )


class ConfigMapAction(ApiModel):
    """Cutover action: write keys into a ConfigMap the applications read."""

    name: str = Field(
        description="ConfigMap in the migration's namespace.",
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
    )
    data: dict[str, str] = Field(
        description="Keys and values to set at cutover, e.g. BUCKET: new-bucket.",
        min_length=1,
    )


class CatalogAction(ApiModel):
    """Cutover action: compare-and-swap per-object locations in the application's table."""

    dsn_secret_ref: SecretKeySelector = Field(
        description="Secret key holding the PostgreSQL DSN of the application's database."
    )
    table: str = Field(
        description="Table, optionally schema-qualified.",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$",
    )
    key_column: str = Field(
        description="Column holding the object's source key.",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
    )
    location_column: str = Field(
        description="Column holding the object's location, swapped at cutover.",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
    )
    location_format: str = Field(
        default="s3://{bucket}/{key}",
        description="How a location is written; {bucket} and {key} are filled in.",
    )
    batch_size: int = Field(default=1000, ge=1, le=100000, description="Rows per transaction.")


class CutoverSpec(ApiModel):
    """When and how applications are switched to the target."""

    model_config = cel_validations(
        cel_rule(
            "!has(self.approved) || !self.approved || self.policy == 'Manual'",
            "approved is only meaningful with policy Manual",
            field_path=".approved",
        ),
    )

    policy: Literal["Automatic", "Manual"] = Field(
        default="Automatic",
        description="Automatic: cut over as soon as the gates hold; Manual: also wait for "
        "approved: true.",
    )
    approved: bool = Field(default=False, description="Manual policy: permission to cut over.")
    catch_up: bool = Field(
        default=False,
        description="Before cutting over, re-scan the source and copy what changed or "
        "appeared, until a re-scan finds nothing new.",
    )
    max_catch_up_rounds: int = Field(
        default=5, ge=1, le=100, description="Give up catching up after this many re-scans."
    )
    config_map_ref: ConfigMapAction | None = Field(
        default=None, description="Patch this ConfigMap at cutover (old values kept for rollback)."
    )
    catalog: CatalogAction | None = Field(
        default=None, description="Swap per-object locations in the application's table."
    )
    rollback: bool = Field(
        default=False,
        description="Revert the cutover actions; refused once a cleanup has started.",
    )

    @model_validator(mode="after")
    def _approval_needs_manual(self) -> CutoverSpec:
        if self.approved and self.policy != "Manual":
            raise ValueError("approved is only meaningful with policy Manual")
        return self


_SAME_BUCKET = (
    "self.source.endpoint == self.target.endpoint && self.source.bucket == self.target.bucket"
)
_IN_PLACE = (
    f"{_SAME_BUCKET} && self.source.prefix == self.target.prefix"
    " && self.target.keyTemplate == '{relative}'"
)
_IN_PLACE_MESSAGE = (
    "source and target are the same bucket, prefix and keys, so objects are rewritten in "
    "place (e.g. to re-encrypt them or change their storage class): that needs "
    "copy.overwrite: always, as any other policy finds every object already there"
)
_OWN_PREFIX_MESSAGE = (
    "source and target are one bucket: write the copies under a prefix of their own (a "
    "target.prefix that the source prefix does not start with), or rewrite the objects in "
    "place (the same prefix, keyTemplate {relative}); otherwise copies could land on source "
    "objects not copied yet"
)


class ObjectMigrationSpec(ApiModel):
    """What to migrate, how, and when to cut over."""

    model_config = cel_validations(
        cel_rule(
            f"!({_IN_PLACE}) || (has(self.copy) && self.copy.overwrite == 'always')",
            _IN_PLACE_MESSAGE,
            field_path=".copy.overwrite",
        ),
        cel_rule(
            f"!({_SAME_BUCKET}) || ({_IN_PLACE})"
            " || !self.source.prefix.startsWith(self.target.prefix)",
            _OWN_PREFIX_MESSAGE,
            field_path=".target.prefix",
        ),
    )

    source: SourceSpec = Field(
        description="Where objects are copied from.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "source is immutable"}
            ]
        },
    )
    target: TargetSpec = Field(
        description="Where objects are copied to.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.bucket == oldSelf.bucket && self.endpoint == oldSelf.endpoint "
                    "&& self.prefix == oldSelf.prefix && self.keyTemplate == oldSelf.keyTemplate",
                    "message": "target endpoint, bucket, prefix and keyTemplate are immutable",
                }
            ]
        },
    )
    selection: SelectionSpec = Field(
        default_factory=SelectionSpec, description="Which source objects take part."
    )
    restore: RestoreSpec | None = Field(
        default=None,
        description="Restore archived objects first. Absent: archived objects are skipped.",
    )
    # `copy` on the wire; `copy_` here, since `BaseModel.copy` is a method of every model.
    copy_: CopySpec = Field(
        default_factory=CopySpec, alias="copy", description="How bytes are copied."
    )
    verify: VerifySpec = Field(
        default_factory=VerifySpec, description="How copies are proven identical."
    )
    workers: WorkersSpec = Field(default_factory=WorkersSpec, description="Worker pods.")
    retry: RetrySpec = Field(default_factory=RetrySpec, description="Retries per object.")
    failure_policy: FailurePolicySpec = Field(
        default_factory=FailurePolicySpec, description="Failure budget before pausing."
    )
    cutover: CutoverSpec = Field(
        default_factory=CutoverSpec, description="Gated switch of applications to the target."
    )
    dry_run: bool = Field(
        default=False, description="Plan only: inventory and report, write nothing."
    )
    suspend: bool = Field(default=False, description="Pause all work; set false to resume.")

    @property
    def same_bucket(self) -> bool:
        """Whether source and target are one bucket (of one endpoint)."""
        return (
            self.source.endpoint.rstrip("/").lower() == self.target.endpoint.rstrip("/").lower()
            and self.source.bucket == self.target.bucket
        )

    @property
    def rewrites_in_place(self) -> bool:
        """Whether every object is copied onto its own key in its own bucket."""
        return (
            self.same_bucket
            and self.source.prefix == self.target.prefix
            and self.target.key_template == "{relative}"
        )

    @model_validator(mode="after")
    def _one_bucket_needs_in_place_or_a_prefix_of_its_own(self) -> ObjectMigrationSpec:
        if self.rewrites_in_place and self.copy_.overwrite != "always":
            raise ValueError(_IN_PLACE_MESSAGE)
        if (
            self.same_bucket
            and not self.rewrites_in_place
            and self.source.prefix.startswith(self.target.prefix)
        ):
            raise ValueError(_OWN_PREFIX_MESSAGE)
        return self


# --- status ----------------------------------------------------------------------------


class Counters(ApiModel):
    """Objects or bytes by state."""

    total: int = Field(default=0, ge=0, description="Selected.")
    pending: int = Field(default=0, ge=0, description="Waiting to be copied or restored.")
    in_progress: int = Field(default=0, ge=0, description="Held by a worker right now.")
    succeeded: int = Field(default=0, ge=0, description="Copied and verified.")
    failed: int = Field(default=0, ge=0, description="Failed for good, or changed at source.")
    skipped: int = Field(default=0, ge=0, description="Deliberately left alone.")


class Progress(ApiModel):
    """How far the migration has come."""

    objects: Counters = Field(default_factory=Counters, description="Object counts.")
    bytes: Counters = Field(default_factory=Counters, description="Byte counts.")
    percent: int = Field(default=0, ge=0, le=100, description="Finished share of bytes.")
    bytes_per_second: int = Field(default=0, ge=0, description="Recent copy throughput.")
    objects_per_second: int = Field(default=0, ge=0, description="Recent object rate.")
    eta: str | None = Field(default=None, description="Estimated time left, e.g. 1h20m.")
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
    stage: str = Field(description="scan, restore, copy, catchup or cleanup.")
    active: int = Field(default=0, ge=0, description="Running pods.")
    succeeded: int = Field(default=0, ge=0, description="Finished indexes.")
    failed: int = Field(default=0, ge=0, description="Failed pods.")


class VerificationStatus(ApiModel):
    """What has been proven, and the digest a cleanup approval must quote."""

    objects: int = Field(default=0, ge=0, description="Verified objects.")
    bytes: int = Field(default=0, ge=0, description="Verified bytes.")
    mismatched: int = Field(default=0, ge=0, description="Objects whose copy differed.")
    algorithm: str = Field(default="", description="etag, checksum or sha256.")
    digest: str | None = Field(
        default=None,
        description="sha256 over every verified (key, version, size, ETag, target) tuple; "
        "a MigrationCleanup's approval.digest must equal it.",
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


class ObjectMigration(ApiModel):
    """An ObjectMigration custom resource."""

    api_version: Literal["objmig.dev/v1alpha1"] = Field(
        default="objmig.dev/v1alpha1", description="objmig.dev/v1alpha1"
    )
    kind: Literal["ObjectMigration"] = Field(default="ObjectMigration", description="Kind.")
    metadata: ObjectMeta = Field(description="Standard object metadata.")
    spec: ObjectMigrationSpec = Field(description="Desired migration.")
    status: ObjectMigrationStatus | None = Field(default=None, description="Observed state.")
