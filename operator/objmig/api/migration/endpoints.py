"""Where objects come from and go to: `spec.source` and `spec.target` (a bucket, several
buckets, or a directory; endpoint, prefix, credentials, target encryption and key
template).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from objmig.api.base import (
    ApiModel,
    ConfigMapKeySelector,
    LocalObjectReference,
    SecretKeySelector,
    cel_rule,
    cel_validations,
)
from objmig.api.migration.common import (
    KEY_TEMPLATE_FIELDS,
    OPTIONAL_BUCKET_PATTERN,
    StorageClass,
)
from objmig.api.migration.templates import check_template, placeholders
from objmig.api.types import Quantity, QuantityBetween

_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
_DOTDOT = "(^|/)[.][.](/|$)"
_ONE_STORE = "[self.bucket != '', has(self.buckets), has(self.filesystem)]"


class FilesystemSpec(ApiModel):
    """A directory as a store: on a laptop a path; in the operator a volume (a
    PersistentVolumeClaim) that every worker pod mounts at that path."""

    model_config = cel_validations(
        cel_rule(
            f"!self.path.matches('{_DOTDOT}')",
            "path must not have '..' segments",
            field_path=".path",
        ),
    )

    path: str = Field(
        description="Absolute path of the directory. In the operator, where the claim is "
        "mounted in the worker pods.",
        min_length=1,
        max_length=1024,
        pattern=r"^/[^\x00]*$",
    )
    claim_name: str | None = Field(
        default=None,
        description="Operator: the PersistentVolumeClaim (in the migration's namespace) the "
        "worker pods mount at path. Absent: the pods must already see the path (objmig run "
        "ignores it).",
        min_length=1,
        max_length=253,
        pattern=_NAME_PATTERN,
    )

    @field_validator("path")
    @classmethod
    def _no_dotdot(cls, path: str) -> str:
        if ".." in path.split("/"):
            raise ValueError("path must not have '..' segments")
        return path


_DEFAULT_IGNORED = [".DS_Store", "**/.DS_Store", "Thumbs.db", "**/Thumbs.db"]


class FilesystemTargetSpec(FilesystemSpec):
    """A directory that objects are written to, with the free space it keeps."""

    model_config = cel_validations(
        cel_rule(
            "!self.path.contains('{') || self.path.matches('^(/([^/{}]+|[{]bucket[}]))+/?$')",
            "the only placeholder a path takes is {bucket}, as a whole path segment",
            field_path=".path",
        ),
    )

    min_free_space: Annotated[Quantity, QuantityBetween("0", "1Pi")] = Field(
        default="1Gi",
        description="Free space every write leaves on the filesystem. A file that would "
        "leave less waits, and the migration pauses with condition TargetSpaceLow until "
        "there is room.",
    )
    ignore: list[Annotated[str, Field(max_length=256)]] = Field(
        default_factory=lambda: list(_DEFAULT_IGNORED),
        description="Globs of files the directory may hold besides the copies (e.g. "
        ".DS_Store): the audit before cutover lists every other file no object was copied "
        "to as extra, and extra files hold the cutover back.",
        max_length=64,
    )

    @field_validator("path")
    @classmethod
    def _only_bucket_segments(cls, path: str) -> str:
        names = {name for name, _ in placeholders(path)}
        if names - {"bucket"} or any(
            "{" in segment and segment != "{bucket}" for segment in path.split("/")
        ):
            raise ValueError(
                "the only placeholder a path takes is {bucket}, as a whole path segment"
            )
        return path


class BucketsSpec(ApiModel):
    """Several buckets of one account, by name."""

    include: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=lambda: ["*"],
        description="Bucket names or globs (*, ?, [a-z], {a,b}) to migrate; default all.",
        min_length=1,
        max_length=256,
    )
    exclude: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list,
        description="Bucket names or globs left out even when included.",
        max_length=256,
    )


class CABundleSource(ApiModel):
    """The PEM certificates of the authorities an HTTPS endpoint's certificate chains to:
    a key of a ConfigMap (CA certificates are public) or of a Secret. Exactly one."""

    model_config = cel_validations(
        cel_rule(
            "has(self.configMapKeyRef) != has(self.secretKeyRef)",
            "set exactly one of configMapKeyRef and secretKeyRef",
        ),
    )

    config_map_key_ref: ConfigMapKeySelector | None = Field(
        default=None,
        description="A ConfigMap key holding the PEM bundle, e.g. the ca.crt a trust "
        "distributor publishes.",
    )
    secret_key_ref: SecretKeySelector | None = Field(
        default=None, description="A Secret key holding the PEM bundle."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> CABundleSource:
        if (self.config_map_key_ref is None) == (self.secret_key_ref is None):
            raise ValueError("set exactly one of configMapKeyRef and secretKeyRef")
        return self


#: On BucketSpec and on each of its kinds (a subclass's model_config replaces its parent's).
_CA_BUNDLE_NEEDS_HTTPS = cel_rule(
    "!has(self.caBundle) || self.endpoint.startsWith('https://')",
    "caBundle needs an https:// endpoint",
    field_path=".caBundle",
)


class BucketSpec(ApiModel):
    """Where objects live: an S3-compatible endpoint, a bucket and a key prefix."""

    model_config = cel_validations(_CA_BUNDLE_NEEDS_HTTPS)

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
        default="",
        description="Bucket name (3-63 lowercase letters, digits, dots, hyphens). Empty "
        "when the side is several buckets (source.buckets) or a directory (filesystem).",
        pattern=OPTIONAL_BUCKET_PATTERN,
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
    ca_bundle: CABundleSource | None = Field(
        default=None,
        description="The certificate authorities an https endpoint's certificate must chain "
        "to (a private CA), as PEM. Every request to this store trusts exactly these. "
        "Absent: the system's trust store (objmig run also reads AWS_CA_BUNDLE, then "
        "SSL_CERT_FILE).",
    )

    @model_validator(mode="after")
    def _ca_bundle_needs_https(self) -> BucketSpec:
        if self.ca_bundle is not None and not self.endpoint.startswith("https://"):
            raise ValueError("caBundle needs an https:// endpoint")
        return self


class SourceSpec(BucketSpec):
    """The store objects are copied from: one bucket, several buckets of the account, or a
    directory. Immutable once the migration exists."""

    model_config = cel_validations(
        cel_rule(
            f"{_ONE_STORE}.filter(x, x).size() == 1",
            "set exactly one of bucket, buckets or filesystem",
        ),
    )

    buckets: BucketsSpec | None = Field(
        default=None,
        description="Every bucket of the account the credentials list (ListBuckets) that "
        "matches include and not exclude; the ledger records each object's bucket. The "
        "target keyTemplate (or filesystem path) needs {bucket} to keep them apart.",
    )
    filesystem: FilesystemSpec | None = Field(
        default=None,
        description="A directory to copy files from (a mounted claim in the operator).",
    )
    customer_key_secret_ref: SecretKeySelector | None = Field(
        default=None,
        description="Secret key holding the 32-byte SSE-C key the source objects are encrypted "
        "with, if any.",
    )

    @model_validator(mode="after")
    def _one_kind_of_store(self) -> SourceSpec:
        given = [bool(self.bucket), self.buckets is not None, self.filesystem is not None]
        if given.count(True) != 1:
            raise ValueError("set exactly one of bucket, buckets or filesystem")
        return self


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


#: A user-metadata key as S3 stores it (lower-case; S3 lower-cases keys it is given).
METADATA_KEY_PATTERN = r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$"
#: objmig marks what it writes with keys of this prefix (`objmig-migration`, proofs).
_OWN_PREFIX = "objmig-"
_KEYS_DISJOINT = "a key cannot be both set and removed"
_KEY_NOT_OURS = f"keys starting with {_OWN_PREFIX} are objmig's own and cannot be changed"
_KEY_SHAPE = (
    "metadata keys are lower-case letters, digits, '.', '_' and '-', "
    "starting and ending with a letter or digit"
)

MetadataKey = Annotated[str, Field(min_length=1, max_length=128, pattern=METADATA_KEY_PATTERN)]


class MetadataChangeSpec(ApiModel):
    """User metadata (x-amz-meta-*) set on, or removed from, every object written.

    What an object says about itself, e.g. a new storage version. The copy carries the
    source's metadata with these changes (a server-side copy uses the REPLACE directive,
    keeping the content headers), and verification compares the copy with what was meant:
    the source's metadata, plus set, minus remove.
    """

    model_config = cel_validations(
        cel_rule(
            "!has(self.set) || !has(self.remove) || self.remove.all(k, !(k in self.set))",
            _KEYS_DISJOINT,
            field_path=".remove",
        ),
        cel_rule(
            f"(!has(self.set) || self.set.all(k, !k.startsWith('{_OWN_PREFIX}')))"
            f" && (!has(self.remove) || self.remove.all(k, !k.startsWith('{_OWN_PREFIX}')))",
            _KEY_NOT_OURS,
        ),
    )

    set: dict[str, Annotated[str, Field(max_length=1024)]] = Field(
        default_factory=dict,
        description='Keys and values to write, e.g. storage-version: "3". A key the source '
        "has is replaced.",
        max_length=64,
    )
    remove: list[MetadataKey] = Field(
        default_factory=list,
        description="Keys to leave out of the written object, e.g. legacy-layout.",
        max_length=64,
    )

    @model_validator(mode="after")
    def _keys_are_ours_to_change(self) -> MetadataChangeSpec:
        for key in self.set:
            if len(key) > 128 or not re.fullmatch(METADATA_KEY_PATTERN, key):
                raise ValueError(f"{_KEY_SHAPE}: {key!r}")
        if set(self.set) & set(self.remove):
            raise ValueError(_KEYS_DISJOINT)
        if any(k.startswith(_OWN_PREFIX) for k in [*self.set, *self.remove]):
            raise ValueError(_KEY_NOT_OURS)
        return self

    @property
    def changes_anything(self) -> bool:
        """Whether written objects differ in their metadata from their sources."""
        return bool(self.set or self.remove)


class TargetSpec(BucketSpec):
    """The store objects are copied to (a bucket or a directory), and how they are written
    there."""

    model_config = cel_validations(
        cel_rule(
            "[self.bucket != '', has(self.filesystem)].filter(x, x).size() == 1",
            "set exactly one of bucket or filesystem",
        ),
        cel_rule(
            "!has(self.filesystem) || (!has(self.storageClass)"
            " && (!has(self.encryption) || self.encryption.mode == 'none'))",
            "a directory has no storage class or server-side encryption",
        ),
    )

    filesystem: FilesystemTargetSpec | None = Field(
        default=None,
        description="A directory to write files to (a mounted claim in the operator). What a "
        "file cannot hold (ETag, SHA-256, parts, metadata, headers, tags) goes to "
        "<path>/.objmig/index.jsonl.",
    )
    storage_class: StorageClass | None = Field(
        default=None,
        description="Storage class of the written objects. Absent: the target's default.",
    )
    encryption: EncryptionSpec = Field(
        default_factory=EncryptionSpec, description="Server-side encryption of written objects."
    )
    metadata: MetadataChangeSpec | None = Field(
        default=None,
        description="User metadata set on, or removed from, every written object (e.g. a new "
        "storage version). Verification compares the copy with the source's metadata so "
        "changed.",
    )
    key_template: str = Field(
        default="{relative}",
        description=(
            "Target key (or path under the directory), appended to the target prefix. "
            "Placeholders: {key} (full source key), {relative} (key relative to the source "
            "prefix), {dirname}, {basename}, {group} (first path segment of {relative}), "
            "{year}/{month}/{day} (of last-modified), {etag}, {bucket} (source bucket, with "
            "source.buckets), and {sha256} or {sha256:N} (the content's SHA-256, or its first "
            "N hex digits): a content-addressed layout that stores identical content once, "
            "e.g. objects/{sha256:2}/{sha256}."
        ),
        min_length=1,
        max_length=1024,
    )

    @field_validator("key_template")
    @classmethod
    def _known_placeholders(cls, template: str) -> str:
        return check_template(template, KEY_TEMPLATE_FIELDS, "keyTemplate")

    @model_validator(mode="after")
    def _one_kind_of_store(self) -> TargetSpec:
        if bool(self.bucket) == (self.filesystem is not None):
            raise ValueError("set exactly one of bucket or filesystem")
        if self.filesystem is not None and (
            self.storage_class is not None or self.encryption.mode != "none"
        ):
            raise ValueError("a directory has no storage class or server-side encryption")
        return self
