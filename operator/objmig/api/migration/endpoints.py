"""Where objects come from and go to: `spec.source` and `spec.target` (endpoint, bucket,
prefix, credentials, target encryption and key template).
"""

from __future__ import annotations

from string import Formatter
from typing import Literal

from pydantic import Field, field_validator, model_validator

from objmig.api.base import (
    ApiModel,
    LocalObjectReference,
    SecretKeySelector,
    cel_rule,
    cel_validations,
)
from objmig.api.migration.common import BUCKET_PATTERN, KEY_TEMPLATE_FIELDS, StorageClass


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
