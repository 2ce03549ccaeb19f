"""What a copy is asked to do and what it answers: the source and target objects, the
options, the target's encryption, the result, and the two refusals the engine handles
(`ObjectArchivedError`, `TargetExistsError`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from objmig.storage.compare import MetadataChange, etag_is_content_md5
from objmig.storage.errors import StorageError
from objmig.storage.ratelimit import RateLimiter
from objmig.storage.s3wire import sse_c_headers
from objmig.storage.streaming import ReadAhead
from objmig.storage.types import EncryptionInfo, HeadResult, MiB

EncryptionMode = Literal["none", "SSE-S3", "SSE-KMS", "SSE-C"]

# CopyObject refuses sources above 5 GiB; such single-part objects cannot exist (PutObject
# has the same limit), but a multipart source may be larger, hence UploadPartCopy.
MAX_COPY_OBJECT_SIZE = 5 * 1024 * MiB
# Time allowed for aborting an upload after a failure, so a dead store cannot hang the
# error path forever.
ABORT_TIMEOUT = 60.0


class ObjectArchivedError(StorageError):
    """The source is archived (GLACIER, DEEP_ARCHIVE, Intelligent-Tiering archive) and not
    restored: request a restore and wait, then copy."""

    kind = "invalid_state"
    code = "ObjectArchived"


class MetadataTooLargeError(StorageError):
    """What objmig must add to an object's metadata would take it over S3's 2 KB."""

    kind = "permanent"
    code = "MetadataTooLarge"


class TargetExistsError(StorageError):
    """A create-only write found the target key taken (412 to If-None-Match: *).

    Not a failure: the engine looks at the existing object and decides by its overwrite
    policy. `source` is the source as the copy read it, for that comparison.
    """

    # Retryable should it escape: the next attempt looks at the target again.
    kind = "retryable"
    code = "TargetExists"

    def __init__(self, message: str, source: HeadResult) -> None:
        super().__init__(message)
        self.source = source


class TagsNotSupportedError(StorageError):
    """The object has tags, tags are to be preserved, and the target store has none.

    Permanent for this object (no retry gives the store tags); the migration goes on with
    the others. `copy.preserveTags: false` copies such objects without their tags."""

    kind = "permanent"
    code = "TagsNotSupported"


@dataclass(frozen=True)
class Encryption:
    """Server-side encryption to apply to the target.

    `none` sends no encryption headers (the bucket's default encryption, if any, applies);
    `SSE-KMS` without `kms_key_id` uses the AWS-managed `aws/s3` key; `SSE-C` needs a
    32-byte `sse_c_key`, which is never shown in reprs.
    """

    mode: EncryptionMode = "none"
    kms_key_id: str | None = None
    sse_c_key: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.mode == "SSE-C" and (self.sse_c_key is None or len(self.sse_c_key) != 32):
            raise ValueError("SSE-C needs a 32-byte key")
        if self.mode != "SSE-C" and self.sse_c_key is not None:
            raise ValueError(f"an SSE-C key makes no sense with encryption {self.mode}")
        if self.kms_key_id and self.mode != "SSE-KMS":
            raise ValueError(f"kms_key_id makes no sense with encryption {self.mode}")

    def object_headers(self) -> dict[str, str]:
        """Headers for PutObject, CreateMultipartUpload and CopyObject."""
        if self.mode == "SSE-S3":
            return {"x-amz-server-side-encryption": "AES256"}
        if self.mode == "SSE-KMS":
            headers = {"x-amz-server-side-encryption": "aws:kms"}
            if self.kms_key_id:
                headers["x-amz-server-side-encryption-aws-kms-key-id"] = self.kms_key_id
            return headers
        return self.part_headers()

    def part_headers(self) -> dict[str, str]:
        """Headers for UploadPart, UploadPartCopy and CompleteMultipartUpload (SSE-C must
        be repeated on every part; the others are set once on the upload)."""
        return sse_c_headers(self.sse_c_key) if self.mode == "SSE-C" else {}

    @property
    def etag_is_md5(self) -> bool:
        """Whether S3 ETags of objects written this way are MD5s of their content."""
        return etag_is_content_md5(self.mode)


@dataclass(frozen=True)
class SourceObject:
    """The object to copy, as the scan saw it.

    `etag` and `size` are checked against what the store reports before any byte moves;
    empty `etag` skips the check. `head`: a HEAD the caller already made (saves one).
    `part_sizes` empty means "find out" (HEAD ?partNumber=n). `last_modified` and
    `storage_class`: what the listing said, so a copy that needs no HEAD can stand for one.
    """

    bucket: str
    key: str
    version_id: str | None = None
    size: int | None = None
    etag: str = ""
    part_sizes: tuple[int, ...] = ()
    sse_c_key: bytes | None = field(default=None, repr=False)
    head: HeadResult | None = None
    last_modified: datetime | None = None
    storage_class: str | None = None

    def listed(self) -> HeadResult | None:
        """The object as its listing showed it, or None when the listing said too little."""
        if not self.etag or self.size is None or self.last_modified is None:
            return None
        return HeadResult.listed(
            self.etag, self.size, self.last_modified, self.version_id, self.storage_class
        )


@dataclass(frozen=True)
class TargetObject:
    """Where the copy goes."""

    bucket: str
    key: str


@dataclass(frozen=True)
class CopyOptions:
    """How to copy.

    - `storage_class`: for the target; None = the store's default (CopyObject does NOT
      keep the source's class).
    - `preserve_metadata`: copy user metadata (`x-amz-meta-*`). Content headers
      (Content-Type, Cache-Control, ...) are always copied: they are part of the object's
      HTTP representation, not annotations.
    - `preserve_tags`: copy the object's tags. False: no tagging request or header is sent
      at all (a server-side CopyObject then does what the store does by default).
    - `create_only`: write only if the target key is free (`If-None-Match: *` on the
      PUT, CopyObject or CompleteMultipartUpload); a taken key raises `TargetExistsError`.
      Stores that ignore the header overwrite, so callers that must never overwrite still
      look first.
    - `metadata_change`: user metadata set and removed on the way (with or without
      `preserve_metadata`, the set keys are written); a server-side copy then replaces
      the metadata (REPLACE directive, content headers kept).
    - `extra_metadata`: metadata of objmig's own the copy carries (in-place proofs).
    - `migration_tag`: stored as metadata `objmig-migration` on the target (None: no
      marker), left out where it would take the metadata over S3's 2 KB.
    - `on_upload_started(upload_id)`: awaited right after CreateMultipartUpload, so the
      engine can record the upload id (S3 shows no metadata for incomplete uploads; the
      recorded ids are how leftovers are recognised as objmig's); `on_upload_ended` once
      it is completed or aborted (not when the abort itself failed).
    - `on_progress(nbytes)`: called as bytes move (per chunk streamed, per part copied).
    - `read_ahead`: the memory streamed multipart copies may fill with parts read ahead of
      their upload, shared by the copies of a process; None streams one part at a time.
    - `part_size`: write multipart objects (and objects bigger than it) in parts of this
      size instead of the source's layout; the copy's ETag then differs from the source's
      (`CopyResult.layout_kept` is False) and only a checksum can prove it. None keeps the
      source's parts.
    - `split_part_size`: part size for single-part sources above `max_single_part_size`
      (5 GiB, the PutObject / CopyObject limit; some stores accept bigger single PUTs),
      which must become multipart on the target.
    - `content_sha256`: the SHA-256 (hex) of the source's bytes, known before the copy (a
      content-addressed layout hashes first, to name the copy): a single-part PUT sends
      it (`x-amz-checksum-sha256`), so the store checks the bytes it receives and keeps it.
    - `exact_layout`: learn every part's size before copying a multipart object instead of
      guessing equal parts from part 1 (a wrong guess is copied again, which a copy that
      replaces its own source cannot do).
    - `checksum_algorithm`: have the store compute and keep this additional checksum
      (SHA256, CRC32, ...) of a server-side single-part copy, so that verification can
      compare it with the source's without reading either object. (A streamed copy with
      `compute_sha256` sends the SHA-256 of a buffered body instead, which the store
      checks and keeps.)
    """

    storage_class: str | None = None
    encryption: Encryption = field(default_factory=Encryption)
    preserve_metadata: bool = True
    preserve_tags: bool = True
    part_concurrency: int = 4
    server_side: bool = False
    compute_sha256: bool = False
    create_only: bool = False
    rate_limiter: RateLimiter | None = None
    migration_tag: str | None = None
    metadata_change: MetadataChange = field(default_factory=MetadataChange)
    extra_metadata: Mapping[str, str] = field(default_factory=dict)
    on_upload_started: Callable[[str], Awaitable[None]] | None = None
    on_upload_ended: Callable[[str], Awaitable[None]] | None = None
    on_progress: Callable[[int], None] | None = None
    read_ahead: ReadAhead | None = None
    part_size: int | None = None
    split_part_size: int = 512 * MiB
    max_single_part_size: int = MAX_COPY_OBJECT_SIZE
    checksum_algorithm: str | None = None
    exact_layout: bool = False
    content_sha256: str | None = None


@dataclass(frozen=True)
class CopyResult:
    """What was written.

    `etag_matches_source`: True/False when the comparison is meaningful (both ETags are
    content MD5s and the part layout was exact), None otherwise. `sha256` only with
    `compute_sha256` on the streamed path (a server-side copy never sees the bytes).
    `source` is the source's HEAD (or the headers of the GET that read it): what was
    copied, for verification to compare with.
    """

    etag: str
    version_id: str | None
    bytes: int
    sha256: str | None
    parts: int
    server_side: bool
    source: HeadResult
    source_version_id: str | None
    etag_matches_source: bool | None
    layout_kept: bool = True
    target_encryption: EncryptionInfo = field(default_factory=EncryptionInfo)
    upload_id: str | None = None
    #: When the store wrote the copy, where its answer says (CopyObject).
    last_modified: datetime | None = None
    #: How the copy's parts were cut (`PartLayout.source`): "uniform" ones were assumed
    #: equal, so a differing ETag may mean only that the guess was wrong.
    layout_source: str = "single"
    #: The additional checksum this copy had its store compute or check (its value on the
    #: target is the store's word on the bytes written); None: any the target shows came
    #: some other way, perhaps copied along from the source.
    checksum_algorithm: str | None = None
    #: The source's tags as this copy read them to write them (None: it did not read them;
    #: CopyObject copies them by itself).
    source_tags: Mapping[str, str] | None = None
    #: What the copy left out of its source, in words (see `planning.fit_metadata`).
    not_kept: tuple[str, ...] = ()
    #: The source's store told no part sizes: the copy's parts are a guess of equal ones.
    parts_guessed: bool = False

    @property
    def source_etag(self) -> str:
        return self.source.etag
