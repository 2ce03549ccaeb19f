"""`ObjectMigrationSpec`: the sections together, with the rules that span them (one bucket
as source and target, rewrites in place, look-only runs, backfills matched by worklist id,
several buckets kept apart, what a directory or a content-addressed layout allows).
"""

from __future__ import annotations

from pydantic import Field, model_validator

from objmig.api.base import ApiModel, cel_rule, cel_validations
from objmig.api.migration.application import BackfillSpec, HooksSpec
from objmig.api.migration.copying import CopySpec, RestoreSpec, VerifySpec
from objmig.api.migration.cutover import CutoverSpec
from objmig.api.migration.endpoints import BucketSpec, SourceSpec, TargetSpec
from objmig.api.migration.layout import GroupsSpec
from objmig.api.migration.running import FailurePolicySpec, HealthSpec, RetrySpec, WorkersSpec
from objmig.api.migration.selection import SelectionSpec
from objmig.api.migration.templates import content_addressed, uses

# An absent target (allowed with copy.mode none only) is the source itself.
_SAME_BUCKET = (
    "(!has(self.target) || (self.source.bucket != ''"
    " && self.source.endpoint == self.target.endpoint"
    " && self.source.bucket == self.target.bucket))"
)
# (An absent target, with copy.mode none, is the source's bucket: none of these.)
_SAME_DIRECTORY = (
    "has(self.target) && has(self.source.filesystem) && has(self.target.filesystem)"
    " && self.source.filesystem.path == self.target.filesystem.path"
)
_BUCKET_IN_TARGET = (
    "(has(self.target) && (self.target.keyTemplate.contains('{bucket}')"
    " || (has(self.target.filesystem) && self.target.filesystem.path.contains('{bucket}'))))"
)
_CONTENT_ADDRESSED = "(has(self.target) && self.target.keyTemplate.contains('{sha256'))"
_A_DIRECTORY = "(has(self.source.filesystem) || (has(self.target) && has(self.target.filesystem)))"
_IN_PLACE = (
    f"(!has(self.target) || ({_SAME_BUCKET} && self.source.prefix == self.target.prefix"
    " && self.target.keyTemplate == '{relative}'))"
)
_IN_PLACE_MESSAGE = (
    "source and target are the same bucket, prefix and keys, so objects are rewritten in "
    "place (e.g. to re-encrypt them or change their storage class): that needs "
    "copy.overwrite: always, as any other policy finds every object already there"
)
_LOOK_ONLY = "has(self.copy) && self.copy.mode == 'none'"
_LOOK_ONLY_MESSAGE = (
    "copy.mode none writes no object: it looks at each one where it is, so target must "
    "name the source itself (the same endpoint, bucket and prefix, keyTemplate {relative})"
)
_TARGET_REQUIRED = (
    "target is required: only copy.mode none, which writes nothing, may leave it out "
    "(it is then the source)"
)
_ID_NEEDS_SQL = (
    "backfill.match id matches the id column of a SQL worklist: set selection.manifest.sql"
)
_IN_PLACE_MARKER_MESSAGE = (
    "objects rewritten in place carry the migration's marker: it is how an interrupted "
    "attempt's copy is known for the migration's own and verified rather than taken for "
    "a change; copy.migrationMarker must stay true"
)
_OWN_PREFIX_MESSAGE = (
    "source and target are one bucket: write the copies under a prefix of their own (a "
    "target.prefix that the source prefix does not start with), or rewrite the objects in "
    "place (the same prefix, keyTemplate {relative}); otherwise copies could land on source "
    "objects not copied yet"
)
_OWN_DIRECTORY_MESSAGE = (
    "source and target are one directory: write the copies under a target.prefix that the "
    "source prefix does not start with (files are never rewritten in place)"
)
_BUCKET_NEEDS_BUCKETS = "{bucket} names the source bucket: it needs source.buckets"
_BUCKETS_APART = (
    "source.buckets copies several buckets into one target: keyTemplate (or the target "
    "filesystem path) needs {bucket} to keep them apart, unless the layout is "
    "content-addressed ({sha256})"
)
_CONTENT_NOT_ALWAYS = (
    "a content-addressed layout ({sha256}) never rewrites a content it finds: its name is "
    "its hash. copy.overwrite must be ifDifferent or never"
)
_DIRECTORY_NOT_SERVER_SIDE = "a directory cannot take part in a server-side copy"
_DIRECTORY_SOURCE_LIMITS = (
    "a directory source has no versions, SSE-C key or bucket to hold a manifest: "
    "selection.allVersions, source.customerKeySecretRef and selection.manifest.object "
    "need a bucket"
)
_BUCKETS_NO_MANIFEST = (
    "source.buckets lists the buckets itself: a worklist (selection.manifest) names the "
    "keys of one bucket"
)


class ObjectMigrationSpec(ApiModel):
    """What to migrate, how, and when to cut over."""

    model_config = cel_validations(
        cel_rule(f"has(self.target) || {_LOOK_ONLY}", _TARGET_REQUIRED, field_path=".target"),
        cel_rule(
            f"!({_IN_PLACE}) || {_LOOK_ONLY}"
            " || (has(self.copy) && self.copy.overwrite == 'always')",
            _IN_PLACE_MESSAGE,
            field_path=".copy.overwrite",
        ),
        cel_rule(f"!({_LOOK_ONLY}) || ({_IN_PLACE})", _LOOK_ONLY_MESSAGE, field_path=".target"),
        cel_rule(
            "!has(self.backfill) || self.backfill.match != 'id' || (has(self.selection)"
            " && has(self.selection.manifest) && has(self.selection.manifest.sql))",
            _ID_NEEDS_SQL,
            field_path=".backfill.match",
        ),
        cel_rule(
            f"!({_SAME_BUCKET}) || ({_IN_PLACE})"
            " || !self.source.prefix.startsWith(self.target.prefix)",
            _OWN_PREFIX_MESSAGE,
            field_path=".target.prefix",
        ),
        cel_rule(
            f"!({_IN_PLACE}) || {_LOOK_ONLY} || !has(self.copy)"
            " || !has(self.copy.migrationMarker) || self.copy.migrationMarker",
            _IN_PLACE_MARKER_MESSAGE,
            field_path=".copy.migrationMarker",
        ),
        cel_rule(
            f"!({_SAME_DIRECTORY}) || !self.source.prefix.startsWith(self.target.prefix)",
            _OWN_DIRECTORY_MESSAGE,
            field_path=".target.prefix",
        ),
        cel_rule(
            f"!{_BUCKET_IN_TARGET} || has(self.source.buckets)",
            _BUCKET_NEEDS_BUCKETS,
            field_path=".target.keyTemplate",
        ),
        cel_rule(
            f"!has(self.source.buckets) || {_BUCKET_IN_TARGET} || {_CONTENT_ADDRESSED}",
            _BUCKETS_APART,
            field_path=".target.keyTemplate",
        ),
        cel_rule(
            f"!({_CONTENT_ADDRESSED}) || !has(self.copy) || self.copy.overwrite != 'always'",
            _CONTENT_NOT_ALWAYS,
            field_path=".copy.overwrite",
        ),
        cel_rule(
            f"!{_A_DIRECTORY} || !has(self.copy) || self.copy.mode != 'serverSide'",
            _DIRECTORY_NOT_SERVER_SIDE,
            field_path=".copy.mode",
        ),
        cel_rule(
            "!has(self.source.filesystem) || (!has(self.source.customerKeySecretRef)"
            " && (!has(self.selection) || ((!has(self.selection.allVersions)"
            " || !self.selection.allVersions) && (!has(self.selection.manifest)"
            " || !has(self.selection.manifest.object)))))",
            _DIRECTORY_SOURCE_LIMITS,
            field_path=".source",
        ),
        cel_rule(
            "!has(self.source.buckets) || !has(self.selection) || !has(self.selection.manifest)",
            _BUCKETS_NO_MANIFEST,
            field_path=".selection.manifest",
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
    # `target` is a property: absent (copy.mode none only), it is the source.
    given_target: TargetSpec | None = Field(
        default=None,
        alias="target",
        description="Where objects are copied to. Only with copy.mode none may it be left "
        "out: it is then the source (endpoint, bucket, prefix, credentials) itself.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.bucket == oldSelf.bucket && self.endpoint == oldSelf.endpoint "
                    "&& self.prefix == oldSelf.prefix && self.keyTemplate == oldSelf.keyTemplate "
                    "&& has(self.filesystem) == has(oldSelf.filesystem) "
                    "&& (!has(self.filesystem) || self.filesystem.path == oldSelf.filesystem.path)",
                    "message": "target endpoint, bucket, directory path, prefix and keyTemplate "
                    "are immutable",
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
    backfill: BackfillSpec | None = Field(
        default=None,
        description="Write each object's attributes (ETag, last-modified, size, ...) into "
        "the application's own table.",
    )
    hooks: HooksSpec | None = Field(
        default=None, description="Steps of the application's own, run for each object."
    )
    groups: GroupsSpec | None = Field(
        default=None,
        description="Group the source objects (packages, releases) and write one manifest "
        "per group listing every member's path, target key, size and metadata: how a "
        "content-addressed layout says what each group was made of.",
    )
    health: HealthSpec = Field(
        default_factory=HealthSpec,
        description="When the status reports Degraded (error rate) or Stalled (throughput).",
    )
    dry_run: bool = Field(
        default=False, description="Plan only: inventory and report, write nothing."
    )
    suspend: bool = Field(default=False, description="Pause all work; set false to resume.")

    @property
    def target(self) -> TargetSpec:
        """Where objects are written (or, with copy.mode none, looked at)."""
        assert self.given_target is not None, "validation sets it"
        return self.given_target

    @property
    def same_bucket(self) -> bool:
        """Whether source and target are one bucket (of one endpoint), or one directory."""
        if self.source.filesystem is not None and self.target.filesystem is not None:
            return self.source.filesystem.path == self.target.filesystem.path
        return (
            bool(self.source.bucket)
            and self.source.endpoint.rstrip("/").lower() == self.target.endpoint.rstrip("/").lower()
            and self.source.bucket == self.target.bucket
        )

    @property
    def content_addressed(self) -> bool:
        """Whether target keys name the content ({sha256}): identical content is stored once."""
        return content_addressed(self.target.key_template)

    @property
    def several_buckets(self) -> bool:
        """Whether the source is several buckets of an account (rows carry their bucket)."""
        return self.source.buckets is not None

    @property
    def rewrites_in_place(self) -> bool:
        """Whether every object is copied onto its own key in its own bucket."""
        return (
            self.same_bucket
            and self.source.filesystem is None
            and self.source.prefix == self.target.prefix
            and self.target.key_template == "{relative}"
        )

    @property
    def per_object_hook(self) -> bool:
        """Whether each object has a hook of the application's to run."""
        return self.hooks is not None and self.hooks.per_object is not None

    @property
    def backfills_per_object(self) -> bool:
        """Whether each object's row is backfilled as soon as the object is looked at.

        After a real copy the target's attributes are written at cutover instead, when
        the applications are pointed at the target.
        """
        return self.backfill is not None and not self.copy_.writes

    @model_validator(mode="after")
    def _one_bucket_needs_in_place_or_a_prefix_of_its_own(self) -> ObjectMigrationSpec:
        if self.given_target is None:
            if self.copy_.writes:
                raise ValueError(_TARGET_REQUIRED)
            # copy.mode none looks at objects where they are: the target is the source.
            where = self.source.model_dump(include=set(BucketSpec.model_fields))
            self.given_target = TargetSpec.model_validate(where)
        if not self.copy_.writes:
            if not self.rewrites_in_place:
                raise ValueError(_LOOK_ONLY_MESSAGE)
        elif self.rewrites_in_place and self.copy_.overwrite != "always":
            raise ValueError(_IN_PLACE_MESSAGE)
        if self.copy_.writes and self.rewrites_in_place and not self.copy_.migration_marker:
            raise ValueError(_IN_PLACE_MARKER_MESSAGE)
        if (
            self.same_bucket
            and not self.rewrites_in_place
            and self.source.prefix.startswith(self.target.prefix)
        ):
            raise ValueError(
                _OWN_DIRECTORY_MESSAGE if self.source.filesystem else _OWN_PREFIX_MESSAGE
            )
        manifest = self.selection.manifest
        if (
            self.backfill is not None
            and self.backfill.match == "id"
            and (manifest is None or manifest.sql is None)
        ):
            raise ValueError(_ID_NEEDS_SQL)
        return self

    @model_validator(mode="after")
    def _stores_and_layouts_fit(self) -> ObjectMigrationSpec:
        source, target = self.source, self.target
        bucket_in_target = uses(target.key_template, "bucket") or (
            target.filesystem is not None and "{bucket}" in target.filesystem.path
        )
        if bucket_in_target and source.buckets is None:
            raise ValueError(_BUCKET_NEEDS_BUCKETS)
        if source.buckets is not None and not (bucket_in_target or self.content_addressed):
            raise ValueError(_BUCKETS_APART)
        if self.content_addressed and self.copy_.overwrite == "always":
            raise ValueError(_CONTENT_NOT_ALWAYS)
        directory = source.filesystem is not None or target.filesystem is not None
        if directory and self.copy_.mode == "serverSide":
            raise ValueError(_DIRECTORY_NOT_SERVER_SIDE)
        manifest = self.selection.manifest
        if source.filesystem is not None and (
            source.customer_key_secret_ref is not None
            or self.selection.all_versions
            or (manifest is not None and manifest.object is not None)
        ):
            raise ValueError(_DIRECTORY_SOURCE_LIMITS)
        if source.buckets is not None and manifest is not None:
            raise ValueError(_BUCKETS_NO_MANIFEST)
        return self
