"""`ObjectMigration`, the custom resource: metadata, spec and status."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from objmig.api.base import ApiModel
from objmig.api.migration.common import ObjectMeta
from objmig.api.migration.spec import ObjectMigrationSpec
from objmig.api.migration.status import ObjectMigrationStatus


class ObjectMigration(ApiModel):
    """An ObjectMigration custom resource."""

    api_version: Literal["objmig.dev/v1alpha1"] = Field(
        default="objmig.dev/v1alpha1", description="objmig.dev/v1alpha1"
    )
    kind: Literal["ObjectMigration"] = Field(default="ObjectMigration", description="Kind.")
    metadata: ObjectMeta = Field(description="Standard object metadata.")
    spec: ObjectMigrationSpec = Field(description="Desired migration.")
    status: ObjectMigrationStatus | None = Field(default=None, description="Observed state.")
