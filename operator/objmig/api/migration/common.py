"""Shared by every section of the ObjectMigration: the API group and version, storage
classes, phases, the bucket name pattern, key template fields, and object metadata.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from objmig.api.base import DNS_LABEL, ApiModel

GROUP = "objmig.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
# Worker pods of one Job; bounds the index suffix of their hostnames (see controller.jobs).
MAX_PARALLELISM = 256
#: Largest count a spec may give (objects, failures): far beyond any bucket, small for JSON.
MAX_COUNT = 10**12

StorageClass = Literal[
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "GLACIER_IR",
    "OUTPOSTS",
    "SNOW",
    "EXPRESS_ONEZONE",
]
ArchivedStorageClass = Literal["GLACIER", "DEEP_ARCHIVE"]
Phase = Literal[
    "Pending",
    "Scanning",
    "Restoring",
    "Copying",
    "Verifying",
    "AwaitingCutover",
    "CutOver",
    "Completed",
    "Paused",
    "Failed",
]

BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$"
#: A table of the application's database, optionally schema-qualified, and a column: the
#: unquoted identifiers PostgreSQL reads (objmig quotes them, keeping their case).
TABLE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$"
COLUMN_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
#: A bucket name, or "" where a spec names no single bucket (several, or a directory).
OPTIONAL_BUCKET_PATTERN = r"^([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])?$"
#: Placeholders of a key template that describe the source object, known at scan time.
LISTING_TEMPLATE_FIELDS = frozenset(
    {"key", "relative", "dirname", "basename", "year", "month", "day", "etag", "bucket", "group"}
)
#: Placeholders of the content (content-addressed layouts): known once it has been read.
CONTENT_TEMPLATE_FIELDS = frozenset({"sha256"})
KEY_TEMPLATE_FIELDS = LISTING_TEMPLATE_FIELDS | CONTENT_TEMPLATE_FIELDS


class ObjectMeta(ApiModel):
    """The subset of Kubernetes object metadata that objmig reads."""

    model_config = ConfigDict(extra="allow")

    # A DNS label, not the subdomain Kubernetes allows other resources: the name becomes a
    # label value of the resource's Jobs and a part of their pods' hostnames.
    name: str = Field(
        description="Name of the resource (a DNS label: at most 63 lowercase letters, "
        "digits and '-').",
        min_length=1,
        max_length=63,
        pattern=DNS_LABEL,
    )
    namespace: str = Field(
        default="default",
        description="Namespace of the resource.",
        min_length=1,
        max_length=63,
        pattern=DNS_LABEL,
    )
    uid: str | None = Field(default=None, description="Unique id assigned by the API server.")
    generation: int | None = Field(default=None, description="Generation of the spec.")
