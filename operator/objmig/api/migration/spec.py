"""`ObjectMigrationSpec`: the sections together, with the rules that span them (one bucket
as source and target, rewrites in place, look-only runs, backfills matched by worklist id).
"""

from __future__ import annotations

from pydantic import Field, model_validator

from objmig.api.base import ApiModel, cel_rule, cel_validations
from objmig.api.migration.application import BackfillSpec, HooksSpec
from objmig.api.migration.copying import CopySpec, RestoreSpec, VerifySpec
from objmig.api.migration.cutover import CutoverSpec
from objmig.api.migration.endpoints import BucketSpec, SourceSpec, TargetSpec
from objmig.api.migration.running import FailurePolicySpec, RetrySpec, WorkersSpec
from objmig.api.migration.selection import SelectionSpec

# An absent target (allowed with copy.mode none only) is the source itself.
_SAME_BUCKET = (
    "(!has(self.target) || (self.source.endpoint == self.target.endpoint"
    " && self.source.bucket == self.target.bucket))"
)
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
    backfill: BackfillSpec | None = Field(
        default=None,
        description="Write each object's attributes (ETag, last-modified, size, ...) into "
        "the application's own table.",
    )
    hooks: HooksSpec | None = Field(
        default=None, description="Steps of the application's own, run for each object."
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
            raise ValueError(_OWN_PREFIX_MESSAGE)
        manifest = self.selection.manifest
        if (
            self.backfill is not None
            and self.backfill.match == "id"
            and (manifest is None or manifest.sql is None)
        ):
            raise ValueError(_ID_NEEDS_SQL)
        return self
