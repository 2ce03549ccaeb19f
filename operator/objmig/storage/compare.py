"""What counts as the same object: pure comparisons of what S3 said about two objects.

Which ETags can be compared (content MD5s, unless SSE-KMS or SSE-C makes them opaque),
when an existing target already holds the source, what changed since an object was seen,
which checksums of the two sides prove the same bytes, and which metadata is objmig's own.
The copy (`objmig.storage.copy`), the per-object steps (`objmig.engine.pipeline`) and the
deletion gate (`objmig.engine.deletion`) all ask here, so a rule is written once. Nothing
here does I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from objmig.storage.types import CHECKSUM_ALGORITHMS, HeadResult, normalise_etag

#: Encryption modes (the spec's vocabulary, `EncryptionInfo.mode`) under which S3's ETag of
#: a single-part object is the MD5 of its bytes (of a multipart one, the MD5 of its
#: parts' MD5s). Under SSE-KMS and SSE-C it is opaque and proves nothing.
_CONTENT_MD5_MODES = frozenset({"none", "SSE-S3"})

#: Metadata keys objmig adds to what it writes (the migration marker, in-place proofs).
OBJMIG_METADATA_PREFIX = "objmig-"


def etag_is_content_md5(encryption_mode: str) -> bool:
    """Whether ETags of objects stored under `encryption_mode` are derived from their bytes."""
    return encryption_mode in _CONTENT_MD5_MODES


def etags_comparable(source: HeadResult, target: HeadResult) -> bool:
    """Whether equal ETags of these two objects mean equal bytes (both content MD5s)."""
    return all(etag_is_content_md5(h.encryption.mode) for h in (source, target))


def looks_like_md5(etag: str) -> bool:
    """Whether an (unquoted) ETag has the shape of an MD5: 32 hex digits, no part count.

    Stores that do not use MD5 ETags for single-part writes answer with something else.
    """
    return len(etag) == 32


def multipart_etag(part_etags: Sequence[str]) -> str | None:
    """The ETag S3 gives an object completed from parts with these ETags: the MD5 of
    their binary MD5s and the part count. None when a part's ETag is no MD5."""
    try:
        digests = b"".join(bytes.fromhex(normalise_etag(etag)) for etag in part_etags)
    except ValueError:
        return None
    if len(digests) != 16 * len(part_etags):
        return None
    return f"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-{len(part_etags)}"


def looks_identical(source: HeadResult, target: HeadResult) -> bool:
    """Cheap check that the target already holds this object (ETag and size agree).

    Encrypted ETags say nothing; only verification can tell, and it is cheaper to copy
    again than to hash both sides just to decide whether to copy.
    """
    if source.size != target.size:
        return False
    if etags_comparable(source, target):
        return source.etag == target.etag
    return False


def same_answers(a: HeadResult, b: HeadResult) -> bool:
    """Whether two HEADs answered alike: ETag, size, version and last-modified (to the
    second, as HTTP dates have it). Two names of one object answer so, and so may two
    identical objects written in the same second."""
    return (
        a.etag == b.etag
        and a.size == b.size
        and (a.version_id or "") == (b.version_id or "")
        and int(a.last_modified.timestamp()) == int(b.last_modified.timestamp())
    )


def told_apart(source_last_modified: datetime, copy_last_modified: datetime | None) -> bool:
    """Whether a copy without objmig's mark answers unlike its source: written in another
    second (HEADs show whole seconds). Otherwise `same_answers` holds for the two, and the
    deletion gate must take them for one object reached twice (and never delete it).
    `copy_last_modified` None: the store did not say, so they may not be told apart."""
    return copy_last_modified is not None and int(copy_last_modified.timestamp()) != int(
        source_last_modified.timestamp()
    )


def key_may_be_rewritten(key: str) -> bool:
    """Whether a store may keep an object written as `key` under another name.

    Stores that map keys onto file paths or normalise URLs rewrite a leading `/`, empty
    segments (`a//b`) and `.` or `..` segments (MinIO turns `/a` into `a`; moto does so in
    virtual-hosted addressing), and a HEAD of the key asked for then answers for the
    rewritten one.
    """
    return key.startswith("/") or "//" in key or any(s in (".", "..") for s in key.split("/"))


def without_objmig_keys(metadata: Mapping[str, str]) -> dict[str, str]:
    """User metadata minus objmig's own keys (a migration's marker, an in-place proof).

    They describe one copy: objmig never carries them along to the next (a chain A -> B ->
    C, a return A -> B -> A, a re-layout of what a migration wrote), where the copy gets
    its own migration's instead, and compares both sides without them.
    """
    return {k: v for k, v in metadata.items() if not k.startswith(OBJMIG_METADATA_PREFIX)}


@dataclass(frozen=True)
class MetadataChange:
    """User metadata a copy sets and removes on its way (a new storage version, say).

    Keys as S3 keeps them, lower-case. What a copy writes and what its verification
    expects are both `apply` of the source's metadata, so the two cannot disagree.
    """

    set: Mapping[str, str] = field(default_factory=dict)
    remove: frozenset[str] = frozenset()

    def apply(self, metadata: Mapping[str, str]) -> dict[str, str]:
        """`metadata` as the copy carries it: without `remove`, with `set`."""
        meant = {k: v for k, v in metadata.items() if k not in self.remove}
        meant.update(self.set)
        return meant

    def __bool__(self) -> bool:
        return bool(self.set or self.remove)


#: How `metadata_difference` compares Content-Type: `Equivalent` accepts what stores are
#: known to normalise (see `same_media_type`), `Exact` compares the strings.
ContentTypeMatch = Literal["Equivalent", "Exact"]


def metadata_difference(
    source: HeadResult,
    target: HeadResult,
    change: MetadataChange | None = None,
    content_type: ContentTypeMatch = "Equivalent",
) -> str | None:
    """What of the user metadata and content headers differs, naming the field, the value
    expected and the value found (None: nothing). objmig's own keys are left out. With a
    `change`, the target is compared with the source's metadata so changed: what was
    meant, not what was there."""
    meant = change.apply(source.metadata) if change else source.metadata
    expected, found = without_objmig_keys(meant), without_objmig_keys(target.metadata)
    for key in sorted(expected.keys() | found.keys()):
        want, have = expected.get(key), found.get(key)
        if want != have:
            return _differs(f"user metadata {key!r}", want, have)
    want_type, have_type = source.content.content_type, target.content.content_type
    same_type = (
        want_type == have_type
        if content_type == "Exact"
        else same_media_type(want_type or "", have_type or "")
    )
    if not same_type:
        return _differs("Content-Type", want_type, have_type)
    for attribute, name in _CONTENT_FIELDS:
        want, have = getattr(source.content, attribute), getattr(target.content, attribute)
        if want != have:
            return _differs(name, want, have)
    return None


_CONTENT_FIELDS = (
    ("cache_control", "Cache-Control"),
    ("content_disposition", "Content-Disposition"),
    ("content_encoding", "Content-Encoding"),
    ("content_language", "Content-Language"),
    ("expires", "Expires"),
    ("website_redirect_location", "x-amz-website-redirect-location"),
)


def _differs(field: str, expected: object, found: object) -> str:
    def shown(value: object) -> str:
        return "nothing" if value is None else repr(str(value))

    return f"{field}: expected {shown(expected)}, found {shown(found)}"


def same_media_type(a: str, b: str) -> bool:
    """Whether two Content-Type values name the same media type with the same parameters.

    What RFC 9110 makes equal and stores normalise: type, subtype and parameter names in
    any case, the `charset` value in any case, spaces around `;` and `=`, quoted or plain
    parameter values, parameters in any order (`text/plain; charset=utf-8` equals
    `text/plain;charset=UTF-8`). Other parameter values are compared as they are.
    """
    return _media_type(a) == _media_type(b)


def _media_type(value: str) -> tuple[str, frozenset[tuple[str, str]]]:
    essence, *parameters = value.split(";")
    pairs = set()
    for parameter in parameters:
        name, _, raw = parameter.partition("=")
        name = name.strip().lower()
        if not name:
            continue
        text = raw.strip()
        if len(text) >= 2 and text[0] == text[-1] == '"':
            text = text[1:-1].replace('\\"', '"')
        pairs.add((name, text.lower() if name == "charset" else text))
    return essence.strip().lower(), frozenset(pairs)


def tags_difference(expected: Mapping[str, str], found: Mapping[str, str]) -> str | None:
    """Which tag differs, with the value expected and the value found (None: none)."""
    for key in sorted(expected.keys() | found.keys()):
        want, have = expected.get(key), found.get(key)
        if want != have:
            return _differs(f"tag {key!r}", want, have)
    return None


@dataclass(frozen=True)
class Seen:
    """An object as it was recorded (the scan's row) or as it is now (a HEAD, a listing).

    `last_modified_seconds` None: not known (then not compared); whole seconds, since
    HEAD's Last-Modified is an HTTP date while listings may carry milliseconds.
    """

    etag: str
    size: int
    version_id: str | None = None
    last_modified_seconds: int | None = None


def changes(recorded: Seen, now: Seen, *, version_must_match: bool = False) -> list[str]:
    """What differs between an object as recorded and as it is now, one phrase each.

    Versions are compared only when the record has one; `version_must_match`: a current
    answer without a version id counts as another version too (otherwise it is unknown).
    """
    found = []
    if now.etag != recorded.etag:
        found.append(f"ETag {recorded.etag} -> {now.etag}")
    if now.size != recorded.size:
        found.append(f"size {recorded.size} -> {now.size}")
    known = bool(now.version_id) or version_must_match
    if recorded.version_id and known and (now.version_id or "") != recorded.version_id:
        found.append(f"version {recorded.version_id} -> {now.version_id}")
    if (
        recorded.last_modified_seconds is not None
        and now.last_modified_seconds is not None
        and now.last_modified_seconds != recorded.last_modified_seconds
    ):
        found.append("last-modified moved")
    return found


# -- checksums ----------------------------------------------------------------------------


def label_algorithm(label: str) -> str:
    """The algorithm of a ledger checksum label (``sha256:<hex>`` -> ``SHA256``)."""
    return label.split(":", 1)[0].upper()


def first_kept_algorithm(head: HeadResult) -> str | None:
    """The strongest whole-object checksum the store keeps of `head`, if any."""
    kept = head.whole_checksums()
    return next((a for a in CHECKSUM_ALGORITHMS if a in kept), None)


def proves_by_checksum(
    mode: str,
    *,
    layout_kept: bool,
    etags_opaque: bool,
    source_encryption_mode: str | None = None,
) -> bool:
    """Whether a copy is proven by checksums rather than by ETags.

    `mode`: `verify.mode`; `layout_kept`: the copy keeps the source's part boundaries;
    `etags_opaque`: the spec makes ETags opaque (SSE-KMS or SSE-C on either side);
    `source_encryption_mode`: the source's, when a HEAD told it.
    """
    if mode != "etag":
        return mode == "checksum"
    return (
        not layout_kept
        or etags_opaque
        or (source_encryption_mode is not None and not etag_is_content_md5(source_encryption_mode))
    )


def checksums_known(
    source: HeadResult,
    *,
    original: str | None = None,
    streamed_sha256: str | None = None,
) -> dict[str, str]:
    """The source's checksums known without reading it, as labels by algorithm.

    What its store keeps, the checksum of an original replaced in place taken before
    (`original`, a label), the SHA-256 taken as a copy streamed it (hex).
    """
    known = source.whole_checksums()
    if original is not None:
        known[label_algorithm(original)] = original
    if streamed_sha256 is not None:
        known["SHA256"] = f"sha256:{streamed_sha256}"
    return known


def target_checksums_trusted(
    target: HeadResult, written_algorithm: str | None, *, written: bool
) -> dict[str, str]:
    """The target's kept checksums that prove its bytes, as labels by algorithm.

    Of a copy just `written`, only the checksum it had its store compute or check
    (`written_algorithm`) counts: another one may have been copied along from the
    source, and would compare the source with itself.
    """
    theirs = target.whole_checksums()
    if written:
        theirs = {a: v for a, v in theirs.items() if a == written_algorithm}
    return theirs


def checksum_pair(
    mine: Mapping[str, str], theirs: Mapping[str, str]
) -> tuple[str | None, str | None] | None:
    """The labels to compare, by what is known of each side.

    Both sides' values of the strongest algorithm they share; else SHA-256 where either
    side knows it, None for a side whose SHA-256 must be read; None when nothing is
    known that reading one side could match (then both are read).
    """
    shared = [a for a in CHECKSUM_ALGORITHMS if a in mine and a in theirs]
    if shared:
        return mine[shared[0]], theirs[shared[0]]
    if "SHA256" in mine or "SHA256" in theirs:
        return mine.get("SHA256"), theirs.get("SHA256")
    return None
