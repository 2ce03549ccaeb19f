"""How objects are restored, copied and proven: `spec.restore`, `spec.copy`, `spec.verify`."""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import Field, model_validator

from objmig.api.base import ApiModel, cel_rule, cel_validations
from objmig.api.migration.common import ArchivedStorageClass
from objmig.api.types import Duration, DurationBetween, Quantity, QuantityBetween


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
    poll_interval: Annotated[Duration, DurationBetween("100ms", "24h")] = Field(
        default="15m",
        description="The longest wait between two looks at a restore (100ms to 24h). The "
        "first look comes 30 s after the request, and each wait is as long as all the "
        "waiting so far, up to this.",
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

    mode: Literal["auto", "serverSide", "stream", "none"] = Field(
        default="auto",
        description="serverSide: CopyObject / UploadPartCopy inside one store; stream: GET "
        "then PUT through the worker; auto: serverSide when source and target share endpoint "
        "and credentials; none: write no object, only look at each selected one where it is "
        "(listing facts, or a HEAD where they do not suffice) and run the application's "
        "steps (spec.backfill, spec.hooks). With none, target may be left out (it is the "
        "source itself) and, if given, must name the source.",
    )
    missing_objects: Literal["Skip", "Fail"] | None = Field(
        default=None,
        description="A worklist's key (selection.manifest) that names no object in the "
        "source: Skip (skipped with reason NotFound, counted as missing, a Warning Event; "
        "the default) or Fail (failed with error NotFound, counted against the failure "
        "budget). Any copy mode.",
    )
    preserve_part_boundaries: bool = Field(
        default=True,
        description="Write multipart objects with the source's part sizes, so ETags match.",
    )
    part_size: Annotated[
        Quantity,
        QuantityBetween(
            "5Mi", "5Gi", "S3 refuses parts under 5 MiB (but an object's last) and over 5 GiB"
        ),
    ] = Field(
        default="16Mi",
        description="Part size when part boundaries are not preserved (5Mi to 5Gi).",
    )
    concurrency: int = Field(default=16, ge=1, le=1024, description="Objects in flight per worker.")
    part_concurrency: int = Field(
        default=4, ge=1, le=64, description="Parts in flight per multipart object."
    )
    preserve_metadata: bool = Field(
        default=True, description="Copy user metadata and content headers."
    )
    preserve_tags: bool = Field(
        default=True,
        description="Copy object tags, and prove them: the copy's tags are compared with "
        "the source's (read only for objects that have tags). On a target store without "
        "tags, objects that have tags fail with TagsNotSupported (the others copy). false: "
        "no tagging request or header is sent at all: streamed copies carry no tags, a "
        "server-side CopyObject does what the store does by default (S3 copies them).",
    )
    migration_marker: bool = Field(
        default=True,
        description="Write the user-metadata key objmig-migration (the migration's "
        "namespace/name) on every copy. It is left out where it would take an object's "
        "metadata over S3's 2 KB (noted per object in the report); false never writes it. "
        "Cleanups know objmig's copies by what the ledger recorded of them, not by it. "
        "Rewrites in place need it.",
    )
    preserve_object_lock: bool = Field(
        default=True,
        description="Give the copy the source's Object Lock retention (mode and date) and "
        "legal hold, once it is verified. A target bucket without Object Lock cannot keep "
        "them: noted per object in the report.",
    )
    preserve_acl: bool = Field(
        default=False,
        description="Give the copy the source's ACL grants (read from GetObjectAcl, "
        "written with PutObjectAcl once it is verified). Grants to canonical user ids mean "
        "something only within one AWS partition; what the target refuses is noted per "
        "object in the report.",
    )
    overwrite: Literal["never", "ifDifferent", "always"] = Field(
        default="ifDifferent",
        description="An existing target object: never (skip it), ifDifferent (skip when "
        "identical, else replace), always (replace).",
    )
    bandwidth_limit: (
        Annotated[Quantity, QuantityBetween("1Ki", "100Gi", "leave it out for no limit")] | None
    ) = Field(
        default=None,
        description="Bytes per second per worker, e.g. 100Mi (1Ki to 100Gi). Absent: unlimited.",
    )

    @property
    def writes(self) -> bool:
        """Whether objects are written at all (every mode but none)."""
        return self.mode != "none"


class VerifySpec(ApiModel):
    """How each copy is proven identical before it can be cut over."""

    mode: Literal["etag", "checksum", "full"] = Field(
        default="etag",
        description="etag: target ETag equals source ETag (falls back to checksum when "
        "encryption makes ETags opaque); checksum: S3 checksums or a SHA-256 taken while "
        "copying; full: re-read both sides and compare SHA-256.",
    )
    metadata: bool = Field(
        default=True,
        description="Also compare user metadata and content headers (Content-Type, "
        "Cache-Control, Content-Disposition, Content-Encoding, Content-Language, Expires, "
        "website redirect). objmig's own keys (objmig-*) are left out on both sides. "
        "Tags are compared whenever copy.preserveTags is on.",
    )
    content_type: Literal["Equivalent", "Exact"] = Field(
        default="Equivalent",
        description="How Content-Type must match. Equivalent: as RFC 9110 makes equal and "
        "stores normalise: media type and parameter names in any case, the charset value in "
        "any case, spaces around ';', quoted or plain values, any parameter order "
        "(text/plain; charset=utf-8 = text/plain;charset=UTF-8). Exact: the same string.",
    )
    verify_only: bool = Field(
        default=False,
        description="Check an existing copy; write nothing to the target, call no hook and "
        "backfill nothing. Objects whose per-object hook is not done are skipped with reason "
        "HookPending, so the status and report show them.",
    )
