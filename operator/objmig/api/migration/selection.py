"""Which source objects take part: `spec.selection` (prefix filters, globs, dates, sizes,
storage classes, metadata requirements, worklists).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, model_validator

from objmig.api.base import ApiModel, SecretKeySelector, cel_rule, cel_validations
from objmig.api.migration.common import BUCKET_PATTERN, MAX_COUNT, StorageClass
from objmig.api.types import Quantity, QuantityBetween, parse_quantity

#: The widest size bounds a filter takes (S3's largest object is a few TiB).
ObjectSize = Annotated[Quantity, QuantityBetween("0", "1Pi")]


_DEFAULT_NOT_WITH_EXISTS = (
    "default is what a missing key counts as; Exists and DoesNotExist ask whether it is "
    "there, so they take none"
)
_DEFAULT_IS_AN_INTEGER = "with Lt and Gt, default must be an integer"


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
        cel_rule(
            "!has(self.default) || !(self.operator in ['Exists', 'DoesNotExist'])",
            _DEFAULT_NOT_WITH_EXISTS,
            field_path=".default",
        ),
        cel_rule(
            "!has(self.default) || !(self.operator in ['Lt', 'Gt']) || "
            "self.default.matches('^-?[0-9]+$')",
            _DEFAULT_IS_AN_INTEGER,
            field_path=".default",
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
    default: str | None = Field(
        default=None,
        description='What an object without the key counts as, e.g. "0" so that '
        "storage-version Lt 3 also selects objects written before versions existed. "
        "Absent: as in a Kubernetes selector, a missing key satisfies only NotIn (and "
        "DoesNotExist). Not with Exists / DoesNotExist; an integer with Lt / Gt.",
        max_length=256,
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
        if self.default is not None:
            if self.operator in ("Exists", "DoesNotExist"):
                raise ValueError(_DEFAULT_NOT_WITH_EXISTS)
            if self.operator in ("Lt", "Gt") and not re.fullmatch(r"-?[0-9]+", self.default):
                raise ValueError(_DEFAULT_IS_AN_INTEGER)
        return self


class ManifestObjectRef(ApiModel):
    """A worklist file stored as an object, read with the source's endpoint and credentials."""

    bucket: str = Field(description="Bucket holding the manifest.", pattern=BUCKET_PATTERN)
    key: str = Field(
        description="Key of the manifest: a list, a CSV, or an S3 Inventory manifest.json.",
        min_length=1,
        max_length=1024,
    )


class SqlWorklist(ApiModel):
    """A worklist the application's own database returns: one row per object."""

    dsn_secret_ref: SecretKeySelector = Field(
        description="Secret key holding the PostgreSQL DSN of the application's database."
    )
    query: str = Field(
        description="A SELECT returning a column key (the object's key in the source bucket) "
        "and optionally a column id (the application's row id, which spec.backfill can "
        "match on). Run in a read-only transaction and streamed through a cursor, never "
        "loaded whole. Rows with a NULL key are left out.",
        min_length=1,
        max_length=65536,
    )


_INVENTORY_NEEDS_OBJECT = (
    "format s3-inventory reads an S3 Inventory manifest.json from its bucket: set object"
)
_ONE_SOURCE = "set exactly one of configMapRef, object, path or sql"
_SQL_HAS_NO_FORMAT = "format describes a file; a sql worklist returns rows (leave format out)"


class ManifestSpec(ApiModel):
    """A worklist of keys instead of (or narrowing) a listing of the source prefix."""

    model_config = cel_validations(
        cel_rule(
            "[has(self.configMapRef), has(self.object), has(self.path), has(self.sql)]"
            ".filter(x, x).size() == 1",
            _ONE_SOURCE,
        ),
        cel_rule(
            # format has a schema default, so the API server always sees it here.
            "!has(self.sql) || self.format == 'lines'",
            _SQL_HAS_NO_FORMAT,
            field_path=".format",
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
    sql: SqlWorklist | None = Field(
        default=None, description="The keys the application's database returns for a query."
    )

    @model_validator(mode="after")
    def _exactly_one_source(self) -> ManifestSpec:
        sources = (self.config_map_ref, self.object, self.path, self.sql)
        if sum(x is not None for x in sources) != 1:
            raise ValueError(_ONE_SOURCE)
        if self.format == "s3-inventory" and self.object is None:
            raise ValueError(_INVENTORY_NEEDS_OBJECT)
        if self.sql is not None and self.format != "lines":
            raise ValueError(_SQL_HAS_NO_FORMAT)
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
        description="Globs on the key relative to the source prefix, as rclone's filter "
        "rules: without a leading / a pattern matches at any depth (*.csv: a.csv and "
        "d/a.csv), with one only at the prefix (/a.csv); * stays within one path segment, "
        "** crosses segments; a pattern ending in / takes everything under such a "
        "directory. Empty includes all.",
        max_length=256,
    )
    exclude: list[str] = Field(
        default_factory=list,
        description="Globs on the relative key, as include; an excluded key is never "
        "selected (*.tmp excludes logs/x.tmp too).",
        max_length=256,
    )
    modified_after: datetime | None = Field(
        default=None, description="Only objects last modified at or after this time (RFC 3339)."
    )
    modified_before: datetime | None = Field(
        default=None, description="Only objects last modified before this time (RFC 3339)."
    )
    min_size: ObjectSize | None = Field(
        default=None, description="Only objects at least this large, e.g. 1Mi (at most 1Pi)."
    )
    max_size: ObjectSize | None = Field(
        default=None, description="Only objects at most this large, e.g. 5Gi (at most 1Pi)."
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
        default=None,
        ge=1,
        le=MAX_COUNT,
        description="Select at most this many objects (in listing order).",
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
