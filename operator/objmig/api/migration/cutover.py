"""When and how applications move to the copies: `spec.cutover` (policy, approval,
catch-up, the catalog and ConfigMap actions, rollback).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from objmig.api.base import (
    DNS_SUBDOMAIN,
    ApiModel,
    DataKey,
    SecretKeySelector,
    cel_rule,
    cel_validations,
)
from objmig.api.migration.common import COLUMN_PATTERN, TABLE_PATTERN


class ConfigMapAction(ApiModel):
    """Cutover action: write keys into a ConfigMap the applications read."""

    name: str = Field(
        description="ConfigMap in the migration's namespace.",
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
    )
    data: dict[DataKey, str] = Field(
        description="Keys and values to set at cutover, e.g. BUCKET: new-bucket.",
        min_length=1,
        max_length=64,
    )


class CatalogAction(ApiModel):
    """Cutover action: compare-and-swap per-object locations in the application's table."""

    dsn_secret_ref: SecretKeySelector = Field(
        description="Secret key holding the PostgreSQL DSN of the application's database."
    )
    table: str = Field(
        description="Table, optionally schema-qualified.",
        pattern=TABLE_PATTERN,
    )
    key_column: str = Field(
        description="Column holding the object's source key.",
        pattern=COLUMN_PATTERN,
    )
    location_column: str = Field(
        description="Column holding the object's location, swapped at cutover.",
        pattern=COLUMN_PATTERN,
    )
    location_format: str = Field(
        default="s3://{bucket}/{key}",
        description="How a location is written; {bucket} and {key} are filled in.",
        min_length=1,
        max_length=1024,
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
        "appeared, until a re-scan finds nothing new. Without it the source is re-scanned "
        "once after the copies all the same: nothing is cut over whose source changed since "
        "its verification.",
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
