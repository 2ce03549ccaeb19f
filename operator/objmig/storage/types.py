"""The S3 layer's value types: what a listing, a HEAD, a GET or a write says of an object.

Small frozen dataclasses and the few pure helpers that read S3's spellings of their fields
(quoted ETags, the "null" version, multipart ETags, checksum values), so that the clients
(`s3http`, `sdk` calls in `bucket`) and everything above them share one vocabulary and
never handle raw SDK dictionaries or headers. Nothing here does I/O.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

MiB = 1024 * 1024
# Chunk size when streaming bodies: large enough that per-chunk Python overhead is noise,
# small enough that many streams in flight stay cheap.
STREAM_CHUNK = 1 * MiB
# Metadata entry marking objects (and, through CreateMultipartUpload, their uploads) as
# written by an objmig migration, so cleanup can recognise them.
MIGRATION_METADATA_KEY = "objmig-migration"
_MULTIPART_ETAG = re.compile(r"^[0-9a-fA-F]{32}-(\d+)$")
#: The additional checksums S3 can keep for an object, strongest first: when both sides of
#: a copy have several, the first they share is compared.
CHECKSUM_ALGORITHMS = ("SHA256", "SHA1", "CRC64NVME", "CRC32C", "CRC32")


def normalise_etag(etag: str | None) -> str:
    """An ETag without surrounding quotes (S3 quotes them; listings sometimes do not)."""
    if not etag:
        return ""
    etag = etag.strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    return etag.strip('"')


def multipart_part_count(etag: str) -> int | None:
    """The part count encoded in a multipart ETag (`<md5>-<n>`), or None for a plain one."""
    match = _MULTIPART_ETAG.match(normalise_etag(etag))
    return int(match.group(1)) if match else None


def version_or_none(version_id: str | None) -> str | None:
    """A version id worth sending: None for absent and for "null"."""
    # Unversioned buckets report the literal version "null"; passing it back is legal on
    # AWS but rejected by some stores, and it carries no information.
    return None if not version_id or version_id == "null" else version_id


def whole_seconds(moment: datetime) -> datetime:
    """A timestamp truncated to whole seconds, in UTC.

    HEAD reports Last-Modified as an HTTP date (whole seconds) while listings carry
    milliseconds on some stores (MinIO); truncating both makes a listed object and a later
    HEAD of the same, unchanged object compare equal.
    """
    return moment.astimezone(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class RestoreStatus:
    """A parsed `x-amz-restore` header.

    `ongoing` True: S3 is still retrieving the object. `ongoing` False: a readable copy
    exists until `expiry` (None when the store did not say).
    """

    ongoing: bool
    expiry: datetime | None = None

    @property
    def available(self) -> bool:
        return not self.ongoing


@dataclass(frozen=True)
class ObjectInfo:
    """One object (or one version of it) as a listing reports it."""

    key: str
    version_id: str | None
    size: int
    etag: str
    last_modified: datetime
    storage_class: str = "STANDARD"
    is_latest: bool = True


@dataclass(frozen=True)
class ContentHeaders:
    """The HTTP representation headers of an object, copied along with it."""

    content_type: str | None = None
    cache_control: str | None = None
    content_disposition: str | None = None
    content_encoding: str | None = None
    content_language: str | None = None
    expires: datetime | None = None
    website_redirect_location: str | None = None

    def as_params(self) -> dict[str, Any]:
        """PutObject / CreateMultipartUpload / CopyObject parameters for these headers."""
        pairs: dict[str, Any] = {
            "ContentType": self.content_type,
            "CacheControl": self.cache_control,
            "ContentDisposition": self.content_disposition,
            "ContentEncoding": self.content_encoding,
            "ContentLanguage": self.content_language,
            "Expires": self.expires,
            "WebsiteRedirectLocation": self.website_redirect_location,
        }
        return {name: value for name, value in pairs.items() if value is not None}


@dataclass(frozen=True)
class EncryptionInfo:
    """Server-side encryption as HEAD reports it."""

    algorithm: str | None = None  # "AES256" (SSE-S3), "aws:kms", "aws:kms:dsse"
    kms_key_id: str | None = None
    bucket_key_enabled: bool | None = None
    customer_algorithm: str | None = None  # "AES256" for SSE-C
    customer_key_md5: str | None = None

    @property
    def mode(self) -> str:
        """`none`, `SSE-S3`, `SSE-KMS` or `SSE-C`, the spec's vocabulary."""
        if self.customer_algorithm:
            return "SSE-C"
        if self.algorithm and self.algorithm.startswith("aws:kms"):
            return "SSE-KMS"
        if self.algorithm == "AES256":
            return "SSE-S3"
        return "none"


@dataclass(frozen=True)
class HeadResult:
    """Everything HEAD says about an object (or, with `part_number`, about one part)."""

    etag: str
    size: int
    last_modified: datetime
    version_id: str | None
    storage_class: str = "STANDARD"
    restore: RestoreStatus | None = None
    archive_status: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    content: ContentHeaders = field(default_factory=ContentHeaders)
    parts_count: int | None = None
    #: Additional checksums (algorithm -> base64 value, as sent), shown only to requests
    #: with `x-amz-checksum-mode: ENABLED`; `checksum_type` FULL_OBJECT or COMPOSITE.
    checksums: Mapping[str, str] = field(default_factory=dict)
    checksum_type: str | None = None
    encryption: EncryptionInfo = field(default_factory=EncryptionInfo)
    tag_count: int = 0
    #: Object Lock as the store shows it (to a caller allowed to read it): the retention
    #: mode (GOVERNANCE, COMPLIANCE) and its end, and whether a legal hold is on.
    lock_mode: str | None = None
    lock_retain_until: datetime | None = None
    legal_hold: bool = False
    #: Only what a listing says (ETag, size, last-modified, class, version): the
    #: object's metadata, content headers, encryption, tags and checksums are unknown,
    #: not empty. See `listed`.
    listed_only: bool = False

    @property
    def is_multipart(self) -> bool:
        return multipart_part_count(self.etag) is not None

    @classmethod
    def listed(
        cls,
        etag: str,
        size: int,
        last_modified: datetime,
        version_id: str | None = None,
        storage_class: str | None = None,
    ) -> HeadResult:
        """An object as its listing showed it, standing in for a HEAD nobody made."""
        return cls(
            etag=normalise_etag(etag),
            size=size,
            last_modified=whole_seconds(last_modified),
            version_id=version_or_none(version_id),
            storage_class=storage_class or "STANDARD",
            listed_only=True,
        )

    def whole_checksums(self) -> dict[str, str]:
        """The additional checksums of the whole object's bytes, as ledger labels (see
        `checksum_label`) by algorithm.

        A composite checksum (a checksum of the parts' checksums: type COMPOSITE, value
        "...-N") depends on where the parts were cut, so it says nothing about the bytes
        of an object cut otherwise: those are left out.
        """
        if self.checksum_type == "COMPOSITE":
            return {}
        return {
            algorithm: checksum_label(algorithm, value)
            for algorithm, value in self.checksums.items()
            if algorithm in CHECKSUM_ALGORITHMS and "-" not in value
        }


def checksum_label(algorithm: str, value: str) -> str:
    """How the ledger records a checksum, whoever computed it: ``sha256:<hex>``.

    `value` is the base64 text S3 sends, decoded so that equal digests give equal labels
    however they were encoded (and match the SHA-256 objmig computes itself).
    """
    try:
        return f"{algorithm.lower()}:{base64.b64decode(value, validate=True).hex()}"
    except (binascii.Error, ValueError):
        return f"{algorithm.lower()}:{value}"


@dataclass(frozen=True)
class PartLayout:
    """Part sizes of an object and how we learned them.

    `source`: "single" (not multipart), "head" (HEAD ?partNumber=n, exact), "uniform" (equal
    parts read from HEAD of part 1 and the part count, or implied by the listing alone; the
    copy checks the resulting ETag and asks for every part's size if it differs),
    "attributes" (GetObjectAttributes ObjectParts, exact), "resized" (the copy's own part
    size, as `copy.preservePartBoundaries: false` asks; another ETag), "guess" (equal parts
    inferred from the ETag's part count: the store answered neither; the copy may then get
    another ETag, which verification reports) or "split" (a single-part object too big for
    one PUT or CopyObject, cut into parts by the copy; its ETag cannot be kept).
    """

    sizes: tuple[int, ...]
    source: Literal["single", "head", "uniform", "attributes", "guess", "split", "resized"]
    multipart: bool

    @property
    def exact(self) -> bool:
        return self.source not in ("guess", "split", "resized")


@dataclass(frozen=True)
class DeleteResult:
    """What DeleteObjects said about one (key, version)."""

    key: str
    version_id: str | None
    deleted: bool
    error_code: str | None = None
    error_message: str | None = None


@dataclass(frozen=True)
class MultipartUploadInfo:
    """An incomplete multipart upload."""

    key: str
    upload_id: str
    initiated: datetime | None
    storage_class: str | None = None


@dataclass(frozen=True)
class WriteResult:
    """What a PUT, CopyObject, UploadPart or CompleteMultipartUpload answered."""

    etag: str
    version_id: str | None = None
    encryption: EncryptionInfo = field(default_factory=EncryptionInfo)
    #: When the store says the object was written (CopyObject's result document).
    last_modified: datetime | None = None


class Body(Protocol):
    """A streamed response body: `read(n)` returns at most n bytes, b"" at the end."""

    async def read(self, n: int = -1) -> bytes: ...


@dataclass(frozen=True)
class GetResult:
    """A GET's answer: the object's headers (as a HEAD would give them), the bytes sent.

    `head.size` is the whole object's size (from Content-Range for a ranged GET);
    `content_length` is the number of bytes in this answer's body.
    """

    head: HeadResult
    content_length: int
    body: Body
