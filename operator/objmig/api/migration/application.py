"""The application's side of a migration: `spec.backfill` (object attributes written into
the application's own table) and `spec.hooks` (a per-object HTTP step of its own).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from objmig.api.base import ApiModel, SecretKeySelector, cel_rule, cel_validations
from objmig.api.migration.common import COLUMN_PATTERN, TABLE_PATTERN
from objmig.api.types import Duration, DurationBetween

_ONE_COLUMN = "name at least one column to write"
_DISTINCT = "each column may receive one attribute only"

#: Attribute names as the spec spells them, in the order the backfill writes them.
BACKFILL_ATTRIBUTES = ("hash", "lastModified", "size", "checksum", "versionId")


def _column(description: str) -> Any:
    """An optional column name (a field's default and its schema)."""
    return Field(default=None, description=description, max_length=63, pattern=COLUMN_PATTERN)


class BackfillColumns(ApiModel):
    """Which attribute of each object goes into which column of the application's table."""

    model_config = cel_validations(
        cel_rule(
            "[has(self.hash), has(self.lastModified), has(self.size), has(self.checksum), "
            "has(self.versionId)].exists(x, x)",
            _ONE_COLUMN,
        ),
    )

    hash: str | None = _column("Column receiving the object's ETag, without quotes.")
    last_modified: str | None = _column(
        "Column receiving the object's last-modified time, as lastModifiedAs says."
    )
    size: str | None = _column("Column receiving the object's size in bytes.")
    checksum: str | None = _column(
        "Column receiving a checksum of the object's bytes as algorithm:value "
        "(sha256:<hex>, crc32:<base64>...): one the store keeps (S3 additional checksums) or, "
        "after a copy, the one verification recorded. Left alone where none is known."
    )
    version_id: str | None = _column(
        "Column receiving the object's version id (left alone for unversioned objects)."
    )

    @model_validator(mode="after")
    def _some_distinct_columns(self) -> BackfillColumns:
        named = list(self.by_attribute().values())
        if not named:
            raise ValueError(_ONE_COLUMN)
        if len(set(named)) != len(named):
            raise ValueError(_DISTINCT)
        return self

    def by_attribute(self) -> dict[str, str]:
        """Column by attribute (spec spelling), for the attributes given, in write order."""
        given = {
            "hash": self.hash,
            "lastModified": self.last_modified,
            "size": self.size,
            "checksum": self.checksum,
            "versionId": self.version_id,
        }
        return {attribute: column for attribute, column in given.items() if column is not None}


class BackfillSpec(ApiModel):
    """Write each object's attributes (ETag, last-modified, size, ...) into the application's
    own table, in batches, into columns that are still empty unless told to overwrite.

    With copy.mode none each object's row is written as soon as the object is looked at;
    after a real copy the target's attributes are written at cutover, beside the catalog's
    location swap. Every value written is recorded in the ledger first, so a crash at any
    point resumes without writing a row twice, and spec.cutover.rollback removes exactly
    what was written and nothing else.
    """

    dsn_secret_ref: SecretKeySelector = Field(
        description="Secret key holding the PostgreSQL DSN of the application's database."
    )
    table: str = Field(
        description="Table, optionally schema-qualified.", max_length=127, pattern=TABLE_PATTERN
    )
    key_column: str = Field(
        description="Column that finds an object's row; it should be unique.",
        max_length=63,
        pattern=COLUMN_PATTERN,
    )
    match: Literal["key", "id"] = Field(
        default="key",
        description="What keyColumn holds: key, the object's key in the source bucket; id, "
        "the id column of a selection.manifest.sql worklist.",
    )
    columns: BackfillColumns = Field(description="Where each attribute goes.")
    last_modified_as: Literal["epochMillis", "timestamp"] = Field(
        default="epochMillis",
        description="epochMillis: milliseconds since 1970 (a bigint column); timestamp: an "
        "RFC 3339 time (a timestamptz, timestamp or text column).",
    )
    overwrite: bool = Field(
        default=False,
        description="Also replace values already there. Absent: only empty (NULL) columns "
        "are written.",
    )
    batch_size: int = Field(
        default=500,
        ge=1,
        le=10000,
        description="Rows per transaction. A batch goes out when this many objects wait, "
        "or when nothing else is on its way.",
    )


class PerObjectHook(ApiModel):
    """An HTTP endpoint of the application, called once for each verified object."""

    url: str = Field(
        description="Where each object's JSON document is POSTed. It must be idempotent: an "
        "object whose answer was lost (a crash between the answer and its record) is sent "
        "again.",
        max_length=2048,
        pattern=r"^https?://[^\s/]+(/[^\s]*)?$",
    )
    bearer_token_secret_ref: SecretKeySelector | None = Field(
        default=None,
        description="Secret key holding a token sent as Authorization: Bearer <token>.",
    )
    timeout: Annotated[Duration, DurationBetween("100ms", "10m")] = Field(
        default="30s",
        description="Longest wait for one answer (100ms to 10m); a timeout is retried like a 5xx.",
    )


class HooksSpec(ApiModel):
    """Steps of the application's own, run by objmig for each object."""

    per_object: PerObjectHook | None = Field(
        default=None,
        description="Called after each object is verified (with copy.mode none: after it is "
        "looked at). 2xx marks the object's hook done; 5xx, 429 and timeouts are retried "
        "by spec.retry; any other 4xx fails the object with the endpoint's message. The "
        "cutover waits for every hook.",
    )
