"""Groups of objects and their manifests: `spec.groups`.

A content-addressed layout (`{sha256}` in target.keyTemplate) stores each content once,
under its hash; what a group of source objects (a package, a release, a directory) was
made of is then told by the group's manifest: every member's path relative to the group,
its content key, size and metadata.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from objmig.api.base import ApiModel
from objmig.api.migration.common import LISTING_TEMPLATE_FIELDS
from objmig.api.migration.templates import check_template


class GroupsSpec(ApiModel):
    """Which objects belong together, and where each group's manifest is written."""

    by: str = Field(
        default="{group}",
        description="The group of a source object, as a template of its listing "
        "placeholders: {group} (the first path segment of the key relative to the source "
        "prefix, the default), {dirname}, {bucket}, {year}, ... Members' paths in the "
        "manifest are relative to the rendered group when it is a prefix of them.",
        min_length=1,
        max_length=256,
    )
    manifest_key: str = Field(
        default="manifests/{group}.json",
        description="Where each group's manifest goes, under the target prefix; {group} is "
        "the rendered group (also {bucket}). Written after every member is verified and "
        "before the cutover, which publishes them through its ConfigMap and catalog "
        "actions.",
        min_length=1,
        max_length=1024,
    )

    @field_validator("by")
    @classmethod
    def _listing_placeholders(cls, template: str) -> str:
        return check_template(template, LISTING_TEMPLATE_FIELDS, "groups.by")

    @field_validator("manifest_key")
    @classmethod
    def _group_placeholder(cls, template: str) -> str:
        check_template(template, {"group", "bucket"}, "groups.manifestKey")
        if "{group}" not in template:
            raise ValueError("groups.manifestKey needs {group}: one manifest per group")
        return template
