"""Where objects come from and go to: `spec.source` and `spec.target` (endpoint, bucket,
prefix, credentials, target encryption and key template).
"""

from __future__ import annotations

import re
from string import Formatter
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
from objmig.api.migration.common import BUCKET_PATTERN, KEY_TEMPLATE_FIELDS, StorageClass


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


class BucketSpec(ApiModel):
    """Where objects live: an S3-compatible endpoint, a bucket and a key prefix."""

    model_config = cel_validations(
        cel_rule(
            "!has(self.caBundle) || self.endpoint.startsWith('https://')",
            "caBundle needs an https:// endpoint",
            field_path=".caBundle",
        ),
    )

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
    """The store objects are copied to, and how they are written there."""

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
