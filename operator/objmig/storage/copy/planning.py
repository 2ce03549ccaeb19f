"""Everything decided before the first byte moves: the source re-checked against the scan,
its part layout, the metadata and tags the copy carries, the headers every write sends,
and what the result proves (`CopyResult.etag_matches_source`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from urllib.parse import urlencode

from objmig.storage.compare import etag_is_content_md5, without_objmig_keys
from objmig.storage.copy.model import (
    CopyOptions,
    CopyResult,
    MetadataTooLargeError,
    ObjectArchivedError,
    SourceObject,
    TagsNotSupportedError,
    TargetObject,
)
from objmig.storage.errors import S3ResponseError, SourceChangedError
from objmig.storage.features import Aspect, unsupported
from objmig.storage.parts import guessed_layout, parts_unsupported, resolve_part_layout
from objmig.storage.reader import ObjectReader
from objmig.storage.restore import needs_restore
from objmig.storage.s3wire import content_headers, metadata_headers
from objmig.storage.types import (
    MIGRATION_METADATA_KEY,
    HeadResult,
    PartLayout,
    WriteResult,
    multipart_part_count,
    normalise_etag,
)


@dataclass(frozen=True)
class Plan:
    """Everything decided before the first byte moves."""

    head: HeadResult
    layout: PartLayout
    version_id: str | None
    metadata: dict[str, str]
    metadata_changed: bool
    tags: dict[str, str] | None
    #: What the copy leaves out of its source, in words (see `fit_metadata`).
    not_kept: tuple[str, ...] = ()


def single_part_by_listing(listed: HeadResult, options: CopyOptions) -> bool:
    """Whether the listing shows a plain single-part object that one write copies whole."""
    return (
        not listed.is_multipart
        and listed.size <= options.max_single_part_size
        and (options.part_size is None or listed.size <= options.part_size)
    )


def copies_metadata_unchanged(options: CopyOptions) -> bool:
    """Whether a server-side copy may leave metadata to the store (directive COPY).

    Only then can CopyObject go without a HEAD: REPLACE must name every metadata key and
    content header, which only a HEAD tells. COPY cannot add a key either, so such a copy
    carries no `objmig-migration` mark (see `plan_by_listing`).
    """
    return options.preserve_metadata and not options.metadata_change and not options.extra_metadata


def multipart_by_listing(listed: HeadResult, options: CopyOptions) -> bool:
    """Whether a multipart source may be copied in the layout its listing implies."""
    return listed.is_multipart and options.part_size is None and not options.exact_layout


def plan_by_listing(source: SourceObject, listed: HeadResult) -> Plan:
    """A server-side single-part copy planned from the listing alone: CopyObject with
    directive COPY (the store copies metadata, content headers and, with tagging directive
    COPY, tags) pinned to the listed ETag by `x-amz-copy-source-if-match`.

    Writing the migration's mark would take REPLACE and so a HEAD per object; without it,
    a cleanup of leftovers keeps such a copy of a failed attempt (it cannot tell it from
    an object someone else wrote) and the deletion gate tells source from copy by their
    answers (a copy is written later than its source).
    """
    return Plan(
        head=listed,
        layout=PartLayout((listed.size,), "single", multipart=False),
        version_id=source.version_id,
        metadata={},
        metadata_changed=False,
        tags=None,
    )


async def head_by_first_part(
    client: ObjectReader, source: SourceObject, listed: HeadResult
) -> tuple[HeadResult, PartLayout | None, str | None]:
    """The source's headers and part layout from one HEAD `?partNumber=1` where a store
    answers it with the object's headers (AWS, MinIO: the object's ETag, metadata and
    content headers; the part's length and the part count), instead of a HEAD and a
    HEAD of part 1. Elsewhere (moto gives the part's ETag) a plain HEAD; the third value
    is the store's refusal of `?partNumber`, for `plan_copy` not to ask again.
    """
    count = multipart_part_count(listed.etag)
    first, refused = None, None
    if not client.features.lacks(Aspect.PART_SIZES):
        first, refused = await _first_part(client, source, listed.version_id)
    if first is not None and first.etag == listed.etag and count and first.parts_count == count:
        layout = _equal_parts(first, listed.size, count)
        return replace(first, size=listed.size, parts_count=None), layout, None
    head = await client.head(
        source.bucket, source.key, version_id=source.version_id, sse_c=source.sse_c_key
    )
    return head, None, refused


def check_source(source: SourceObject, head: HeadResult) -> None:
    """Refuse a source that is not what was scanned, or not readable yet."""
    where = f"s3://{source.bucket}/{source.key}"
    if source.etag and normalise_etag(source.etag) != head.etag:
        raise SourceChangedError(f"{where}: ETag is now {head.etag}, scanned {source.etag}")
    if source.size is not None and source.size != head.size:
        raise SourceChangedError(f"{where}: size is now {head.size}, scanned {source.size}")
    if source.version_id and head.version_id and source.version_id != head.version_id:
        raise SourceChangedError(f"{where}: HEAD returned version {head.version_id}")
    if needs_restore(head.storage_class, head.restore, head.archive_status):
        state = "being restored" if head.restore else "archived and not restored"
        raise ObjectArchivedError(f"{where} ({head.storage_class}) is {state}")


async def plan_copy(
    client: ObjectReader,
    source: SourceObject,
    options: CopyOptions,
    head: HeadResult,
    layout: PartLayout | None = None,
    part_heads_refused: str | None = None,
) -> Plan:
    """The plan for a copy of `head` (`layout`: the part layout, when already known;
    `part_heads_refused`: the store's refusal of HEAD `?partNumber`, already had)."""
    check_source(source, head)
    if layout is None:
        layout = await _layout(client, source, options, head, part_heads_refused)
    if not layout.multipart and head.size > options.max_single_part_size:
        # Some stores (MinIO) accept single PUTs above AWS's 5 GiB; neither PutObject nor
        # CopyObject can write those to S3, so they become multipart (new ETag).
        layout = PartLayout(
            tuple(split_sizes(head.size, options.split_part_size)), "split", multipart=True
        )
    tags: dict[str, str] | None = None
    # A single-part copy gets the tags another way: CopyObject copies them, and the GET of
    # a streamed copy says whether there are any (x-amz-tagging-count).
    if options.preserve_tags and layout.multipart:
        tags = await read_tags(client, source, head.version_id)
    return plan_for(source, options, head, layout, tags)


async def _layout(
    client: ObjectReader,
    source: SourceObject,
    options: CopyOptions,
    head: HeadResult,
    part_heads_refused: str | None,
) -> PartLayout:
    """How the copy of `head` is cut: the source's parts, or the copy's own size."""
    count = multipart_part_count(head.etag)
    given = source.part_sizes
    if options.part_size is not None and (count is not None or head.size > options.part_size):
        sizes = tuple(split_sizes(head.size, options.part_size)) or (0,)
        return PartLayout(sizes, "resized", multipart=len(sizes) > 1)
    if given and sum(given) == head.size and (count is None or count == len(given)):
        return PartLayout(tuple(given), "head" if count else "single", multipart=bool(count))
    if count is None:
        return PartLayout((head.size,), "single", multipart=False)
    if options.exact_layout:
        return await resolve_part_layout(
            client,
            source.bucket,
            source.key,
            head.version_id,
            source.sse_c_key,
            head=head,
            part_heads_refused=part_heads_refused,
        )
    return await multipart_layout(client, source, head, count, part_heads_refused)


def is_directory_marker(key: str, head: HeadResult) -> bool:
    """A zero-byte object whose key ends in "/", as consoles and file gateways make them."""
    return key.endswith("/") and head.size == 0


def may_have_tags(key: str, head: HeadResult) -> bool:
    """Whether the object may have tags: its tag count says so, or it is a directory
    marker, whose tag count SeaweedFS does not report although it keeps its tags."""
    return bool(head.tag_count) or is_directory_marker(key, head)


async def read_tags(
    client: ObjectReader, source: SourceObject, version_id: str | None
) -> dict[str, str] | None:
    """The source's tags; None from a store without tags (its objects have none)."""
    if client.features.lacks(Aspect.TAGS):
        return None
    try:
        return await client.get_tags(source.bucket, source.key, version_id)
    except S3ResponseError as exc:
        if not unsupported(exc):
            raise
        client.features.learn_missing(Aspect.TAGS, f"GetObjectTagging: {exc.code}")
        return None


def check_tags_writable(
    client: ObjectReader, target: TargetObject, options: CopyOptions, plan: Plan
) -> None:
    """Refuse to copy an object with tags to a store without tags when they are to be kept:
    the copy would lose them. Objects without tags copy as usual."""
    if not options.preserve_tags or not client.features.lacks(Aspect.TAGS):
        return
    count = len(plan.tags) if plan.tags else plan.head.tag_count
    if count:
        raise TagsNotSupportedError(
            f"s3://{target.bucket}/{target.key}: the source has {count} tags and the "
            f"{client.features.store} keeps no tags: set copy.preserveTags: false to copy "
            "it without them"
        )


def plan_for(
    source: SourceObject,
    options: CopyOptions,
    head: HeadResult,
    layout: PartLayout,
    tags: dict[str, str] | None,
) -> Plan:
    # objmig's own keys describe the copy an earlier migration made, not this one: they
    # are not carried along (see `compare.without_objmig_keys`).
    change = options.metadata_change
    kept = without_objmig_keys(head.metadata) if options.preserve_metadata else {}
    meant = change.apply(kept) if options.preserve_metadata else dict(change.set)
    metadata, not_kept = fit_metadata(meant, options)
    return Plan(
        head=head,
        layout=layout,
        # Pin the version we saw, so every part reads the same version.
        version_id=head.version_id or source.version_id,
        metadata=metadata,
        metadata_changed=metadata != dict(head.metadata),
        tags=tags,
        not_kept=not_kept,
    )


#: S3's limit on user metadata, in bytes (see `metadata_size`).
METADATA_LIMIT = 2048
_HEADER_PREFIX = len("x-amz-meta-")


def metadata_size(metadata: Mapping[str, str]) -> int:
    """User metadata's size against `METADATA_LIMIT`, as the strictest store counts it:
    the UTF-8 bytes of every header name and value (AWS leaves the `x-amz-meta-` prefix
    out, MinIO counts it)."""
    return sum(_HEADER_PREFIX + len(k.encode()) + len(v.encode()) for k, v in metadata.items())


def fit_metadata(
    kept: Mapping[str, str], options: CopyOptions
) -> tuple[dict[str, str], tuple[str, ...]]:
    """The copy's metadata, `kept` of the source plus what objmig adds, and what it left
    out: objmig's additions never take an object over S3's 2 KB (checked before writing,
    where the store would refuse the whole object).

    The migration marker is left out where it does not fit (cleanups know objmig's copies
    by what the ledger recorded of them, not by the marker); the proof of a rewrite in
    place (`extra_metadata`, with the marker it is recognised by) cannot be: an object it
    does not fit is refused. Metadata over the limit already at the source is copied as it
    is, for the target store to judge.
    """
    metadata = dict(kept)
    metadata.update({k.lower(): v for k, v in options.extra_metadata.items()})
    marked = (
        {**metadata, MIGRATION_METADATA_KEY: options.migration_tag}
        if options.migration_tag
        else metadata
    )
    own = metadata_size(kept)
    if own > METADATA_LIMIT:
        # Not objmig's doing: the store judges (AWS counts less strictly than MinIO).
        return metadata, _marker_left_out(options, marked)
    if options.extra_metadata and metadata_size(marked) > METADATA_LIMIT:
        raise MetadataTooLargeError(
            f"the proof of the copy in place ({', '.join(sorted(marked.keys() - kept.keys()))}) "
            f"would take the object's metadata over S3's {METADATA_LIMIT} bytes "
            f"({metadata_size(marked)})"
        )
    if metadata_size(marked) > METADATA_LIMIT:
        return metadata, _marker_left_out(options, marked)
    return marked, ()


def _marker_left_out(options: CopyOptions, marked: Mapping[str, str]) -> tuple[str, ...]:
    if not options.migration_tag:
        return ()
    return (
        f"migration marker ({MIGRATION_METADATA_KEY}): left out, the metadata would be "
        f"{metadata_size(marked)} bytes, over S3's {METADATA_LIMIT}",
    )


async def multipart_layout(
    client: ObjectReader,
    source: SourceObject,
    head: HeadResult,
    count: int,
    part_heads_refused: str | None = None,
) -> PartLayout:
    """The source's parts: equal parts when part 1 and the part count allow it, else exact.

    Uploaders cut objects into equal parts and a shorter last one, so HEAD of part 1 and
    the part count usually tell every size in one request; `copy_object` checks the
    resulting ETag and falls back to asking for every part when the guess was wrong. A
    store known to tell no part sizes is not asked again: the sizes are guessed at once.
    """
    if client.features.lacks(Aspect.PART_SIZES):
        return guessed_layout(head.size, count)
    first, refused = None, part_heads_refused
    if refused is None:
        first, refused = await _first_part(client, source, head.version_id)
    layout = _equal_parts(first, head.size, count) if first is not None else None
    return layout or await resolve_part_layout(
        client,
        source.bucket,
        source.key,
        head.version_id,
        source.sse_c_key,
        head=head,
        part_heads_refused=refused,
    )


async def _first_part(
    client: ObjectReader, source: SourceObject, version_id: str | None
) -> tuple[HeadResult | None, str | None]:
    """HEAD `?partNumber=1`, or None and the store's refusal where it does not implement
    it; throttling and server errors propagate (the store may well tell, later)."""
    try:
        first = await client.head(
            source.bucket, source.key, version_id=version_id, part_number=1, sse_c=source.sse_c_key
        )
    except S3ResponseError as exc:
        if not parts_unsupported(exc):
            raise
        return None, f"HEAD ?partNumber: {exc.code}"
    return first, None


def _equal_parts(first: HeadResult, size: int, count: int) -> PartLayout | None:
    """`count` parts the size of the first and a shorter last one, if they add up."""
    if first.parts_count != count or first.size <= 0:
        return None
    last = size - first.size * (count - 1)
    if not 0 < last <= first.size:
        return None
    return PartLayout((first.size,) * (count - 1) + (last,), "uniform", multipart=True)


def object_headers(target: TargetObject, options: CopyOptions, plan: Plan) -> dict[str, str]:
    """Headers shared by PutObject and CreateMultipartUpload."""
    headers = {
        **metadata_headers(plan.metadata),
        **content_headers(plan.head.content),
        **options.encryption.object_headers(),
    }
    if options.storage_class:
        headers["x-amz-storage-class"] = options.storage_class
    if plan.tags and options.preserve_tags:
        headers["x-amz-tagging"] = urlencode(plan.tags)
    return headers


def create_only_headers(options: CopyOptions) -> dict[str, str]:
    return {"if-none-match": "*"} if options.create_only else {}


def target_taken(exc: S3ResponseError, options: CopyOptions) -> bool:
    return options.create_only and exc.status == 412


def etag_proves_copy(plan: Plan, options: CopyOptions) -> bool:
    # Both ETags must be content MD5s (no KMS / SSE-C on either side) and the layout
    # exact, otherwise different ETags prove nothing.
    return (
        plan.layout.exact
        and etag_is_content_md5(plan.head.encryption.mode)
        and options.encryption.etag_is_md5
    )


def copy_result(
    *,
    written: WriteResult,
    plan: Plan,
    options: CopyOptions,
    server_side: bool,
    sha256: str | None = None,
    upload_id: str | None = None,
    checksum_algorithm: str | None = None,
) -> CopyResult:
    etag = normalise_etag(written.etag)
    return CopyResult(
        etag=etag,
        version_id=written.version_id,
        bytes=plan.head.size,
        sha256=sha256,
        parts=len(plan.layout.sizes) if plan.layout.multipart else 1,
        server_side=server_side,
        source=plan.head,
        source_version_id=plan.version_id,
        etag_matches_source=(etag == plan.head.etag) if etag_proves_copy(plan, options) else None,
        layout_kept=plan.layout.exact,
        layout_source=plan.layout.source,
        last_modified=written.last_modified,
        target_encryption=written.encryption,
        upload_id=upload_id,
        checksum_algorithm=checksum_algorithm,
        source_tags=plan.tags,
        not_kept=plan.not_kept,
        parts_guessed=plan.layout.source == "guess",
    )


def split_sizes(size: int, part: int) -> list[int]:
    """`size` bytes in parts of `part` bytes, the last one shorter."""
    full, rest = divmod(size, part)
    return [part] * full + ([rest] if rest else [])


def byte_ranges(sizes: Sequence[int]) -> list[tuple[int, int]]:
    """(first byte, last byte) of each part."""
    ranges = []
    start = 0
    for size in sizes:
        ranges.append((start, start + size - 1))
        start += size
    return ranges
