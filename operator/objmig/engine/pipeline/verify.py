"""Prove it: the target holds the source's bytes (and metadata), and the source is still
what was listed.

`etag` compares ETags where they are content MD5s and the part layout was kept; otherwise,
and for `checksum`, one checksum of each side by the same algorithm, reading only what no
store keeps already; `full` reads both sides. Which checksum proves what is decided in
`objmig.storage.compare`. The last word is the source re-check (`looks`): a copy of an
object that changed meanwhile proves nothing.

An object copied onto itself (in place) loses its original when the copy is written, so
its proof is pinned before (`pin_original`) and carried in the copy's metadata, where a
later attempt finds it (`verify_earlier_copy`).
"""

from __future__ import annotations

from dataclasses import replace

from objmig.engine.lookup import key_listed
from objmig.engine.pipeline.looks import Looks
from objmig.engine.pipeline.outcomes import Proof, now
from objmig.engine.pipeline.sides import Sides
from objmig.ledger.models import ObjectRow
from objmig.storage.compare import (
    checksum_pair,
    checksums_known,
    etags_comparable,
    first_kept_algorithm,
    key_may_be_rewritten,
    label_algorithm,
    metadata_difference,
    tags_difference,
    target_checksums_trusted,
    without_objmig_keys,
)
from objmig.storage.copy import CopyResult
from objmig.storage.digest import object_sha256
from objmig.storage.errors import IntegrityError
from objmig.storage.features import Aspect
from objmig.storage.filesystem import FileStore
from objmig.storage.types import MIGRATION_METADATA_KEY, EncryptionInfo, HeadResult

#: Metadata an object copied onto itself carries: the ETag of the original it replaced and,
#: unless that ETag proves the copy, a checksum of the original's bytes taken before. The
#: original is gone once replaced, so this is what proves a copy whose verification was
#: interrupted (and what tells it from a change by someone else).
ORIGINAL_ETAG_KEY = "objmig-original-etag"
ORIGINAL_CHECKSUM_KEY = "objmig-original-checksum"


class VerificationError(IntegrityError):
    """The copy differs from the source. Retryable: the next attempt copies again, unless
    `permanent` (copying again cannot help)."""

    def __init__(self, code: str, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.code = code
        if permanent:
            self.kind = "permanent"


class VerifyStep:
    """Proves copies of one migration; `looks` makes the final source re-check."""

    def __init__(self, sides: Sides, looks: Looks) -> None:
        self._sides = sides
        self._looks = looks

    async def verify(
        self,
        row: ObjectRow,
        source: HeadResult,
        target: HeadResult,
        *,
        written: CopyResult | None = None,
    ) -> Proof:
        """Prove the target holds the source's bytes (and metadata); raise if it does not.

        `written`: the copy just made (None: an object found on the target, made before).
        """
        spec = self._sides.spec
        mode = spec.verify.mode
        # A copy found on the target was cut into parts of its own unless boundaries are
        # kept.
        etag_proves = written.layout_kept if written else spec.copy_.preserve_part_boundaries
        if mode == "etag" and not (etag_proves and etags_comparable(source, target)):
            # Opaque ETags (KMS, SSE-C) or parts cut anew: only the bytes can tell.
            mode = "checksum"
        if mode == "etag" and spec.content_addressed:
            # A content key is the SHA-256 of its content: that, not an ETag, proves it.
            mode = "checksum"
        if target.size != source.size:
            raise VerificationError(
                "SizeMismatch", f"target has {target.size} bytes, source {source.size}"
            )
        source_checksum = target_checksum = None
        if mode == "etag":
            if target.etag != source.etag:
                raise VerificationError(
                    "ETagMismatch", f"target ETag {target.etag} != source {source.etag}"
                )
        else:
            source_checksum, target_checksum = await self._checksums(
                row, source, target, written, mode
            )
            if source_checksum != target_checksum:
                algorithm = label_algorithm(source_checksum)
                raise VerificationError(
                    "ChecksumMismatch", f"{algorithm} of target differs from source"
                )
        # A copy just written carries what it was written with: the source's metadata as
        # the store copied it (directive COPY) or as objmig sent it (the source's own
        # headers with the spec's changes). Reading it back would prove the store's
        # honesty, not the copy; only a copy found on the target is compared, and one
        # just written where `verify.contentType: Exact` asks what the store shows.
        if self._sides.checks_metadata and (written is None or self._sides.reads_back_metadata):
            # What was meant: the source's metadata (none without preserveMetadata) with
            # the spec's changes.
            basis = source if spec.copy_.preserve_metadata else replace(source, metadata={})
            difference = metadata_difference(
                basis, target, self._sides.ctx.metadata_change, spec.verify.content_type
            )
            if difference is not None:
                raise VerificationError("MetadataMismatch", difference)
        if spec.copy_.preserve_tags:
            await self._check_tags(row, source, target, written)
        await self._check_key_kept(row)
        # The last word: the source must still be what was listed, or the copy proves nothing.
        await self._looks.recheck_source(row, target)
        by = "etag" if source_checksum is None else label_algorithm(source_checksum).lower()
        described = None
        if spec.groups is not None:
            # What the group's manifest lists of this member.
            described = {
                "metadata": dict(source.metadata),
                "contentType": source.content.content_type,
            }
        return Proof(
            target.etag,
            target.version_id,
            source_checksum,
            target_checksum,
            target.last_modified,
            verified_by=by,
            degraded=self._degraded(written),
            source_metadata=described,
        )

    async def copy_as_written(self, row: ObjectRow, written: CopyResult) -> HeadResult:
        """The copy just made, as verification sees it: the write's own answer, or a HEAD
        where it must tell what the answer does not.

        The answer is the store's word on what it stored: the ETag and version, the
        encryption. Only checksums the store computed of the copy are read with a HEAD
        (`checksum` verification, or `etag` where encryption makes ETags opaque), and the
        copy's last-modified where the backfill records it. A content-addressed copy is
        proven by its SHA-256 (its name), which the store checked and keeps: a HEAD reads
        it (the answer alone would tell no checksum, and seem to say the store keeps none).
        """
        sides = self._sides
        if (
            sides.needs_target_head
            or sides.by_checksum(written.source)
            or sides.spec.content_addressed
        ):
            return await self.read_copy(row)
        return HeadResult(
            etag=written.etag,
            size=written.bytes,
            last_modified=now(),
            version_id=written.version_id,
            encryption=written.target_encryption,
        )

    async def read_copy(self, row: ObjectRow) -> HeadResult:
        """HEAD the copy on the target; it must be there."""
        target = await self._sides.head_target(row)
        if target is None:
            raise VerificationError("TargetMissing", "the copy is not visible on the target")
        return target

    async def _check_tags(
        self, row: ObjectRow, source: HeadResult, target: HeadResult, written: CopyResult | None
    ) -> None:
        """The copy's tags are the source's.

        Cheap: tags are read only for objects that have some (HEAD and GET say how many,
        `x-amz-tagging-count`), and the source's not again when the copy read them. A
        source known only from its listing (its tag count unknown) has both read.
        """
        sides = self._sides
        if not source.tag_count and not source.listed_only:
            if target.tag_count:
                raise VerificationError(
                    "TagsMismatch", f"tags: expected none, found {target.tag_count}"
                )
            return
        expected = written.source_tags if written is not None else None
        if expected is None:
            expected = await sides.src.http.get_tags(
                sides.source_bucket(row), row.key, row.version_id or None
            )
        found = await sides.dst.http.get_tags(
            sides.spec.target.bucket, sides.target_key(row), target.version_id
        )
        difference = tags_difference(expected, found)
        if difference is not None:
            raise VerificationError("TagsMismatch", difference)

    async def _check_key_kept(self, row: ObjectRow) -> None:
        """A key a store may rewrite (see `key_may_be_rewritten`) must be listed as it is:
        a HEAD of it answers for whatever the store made of it."""
        sides = self._sides
        key = sides.target_key(row)
        if not key_may_be_rewritten(key) or isinstance(sides.dst, FileStore):
            # A directory refuses such keys before writing (UnsafeKey): none is rewritten.
            return
        prefix = sides.spec.target.prefix if key.startswith(sides.spec.target.prefix) else ""
        instead = await key_listed(sides.dst, sides.spec.target.bucket, prefix, key)
        if instead is not None:
            raise VerificationError(
                "TargetKeyRewritten",
                f"the target store does not keep the copy under its key {key!r}"
                + (f" (it lists {instead!r} in its place)" if instead else "")
                + ": it rewrites keys with a leading '/', empty or '.' segments",
                permanent=True,
            )

    def _degraded(self, written: CopyResult | None) -> tuple[str, ...]:
        """The aspects of S3 this copy did without, because a store lacks them."""
        if written is None:
            return ()
        found = []
        if written.parts_guessed:
            found.append(Aspect.PART_SIZES)
        if written.server_side and self._sides.dst.features.lacks(Aspect.COPY_CONDITIONALS):
            found.append(Aspect.COPY_CONDITIONALS)
        if self._sides.ctx.server_side and not written.server_side:
            found.append(Aspect.MARKER_COPIES)  # the one kind a server-side run streams
        return tuple(found)

    def is_earlier_copy(self, row: ObjectRow, current: HeadResult) -> bool:
        """Whether the object in place of `row` is this migration's copy of it, written
        by an attempt that ended before its verification did.

        Its original is the one the row was scanned as, or, when a re-scan listed the
        copy meanwhile and took it for a change of the row, the one the copy names.
        """
        return (
            current.metadata.get(MIGRATION_METADATA_KEY) == self._sides.ctx.name
            and ORIGINAL_ETAG_KEY in current.metadata
            and row.etag in (current.metadata[ORIGINAL_ETAG_KEY], current.etag)
        )

    async def verify_earlier_copy(self, row: ObjectRow, copy: HeadResult) -> Proof:
        """Prove an earlier attempt's in-place copy by what it says of its original.

        The original's ETag (when it was a content MD5 and the copy's is too) or the
        checksum taken of it before the copy: the metadata the copy was written with.
        The original's metadata is gone; the copy's stands for it.
        """
        original = copy.metadata.get(ORIGINAL_CHECKSUM_KEY)
        if original:
            self._sides.originals[row.id] = original
        source = replace(
            copy,
            etag=copy.metadata[ORIGINAL_ETAG_KEY],
            size=row.size,
            metadata=without_objmig_keys(copy.metadata),
            checksums={},
            checksum_type=None,
            encryption=EncryptionInfo(),
        )
        return await self.verify(row, source, copy)

    async def pin_original(self, row: ObjectRow, source: HeadResult) -> dict[str, str]:
        """Take what will prove an in-place copy while the original is still there.

        The copy's ETag when it will be compared with the original's; else a checksum
        the store keeps of the original and will compute of a server-side single-part
        copy too; else the SHA-256 of the original, read now. Returns it as the metadata
        the copy carries (see `ORIGINAL_ETAG_KEY`).
        """
        sides = self._sides
        provenance = {ORIGINAL_ETAG_KEY: row.etag}
        mode = sides.spec.verify.mode
        if mode == "etag" and not sides.by_checksum(source):
            return provenance
        algorithm = first_kept_algorithm(source)
        store_computes = (
            sides.ctx.server_side
            and not source.is_multipart
            and sides.spec.copy_.preserve_part_boundaries
        )
        if mode != "full" and algorithm is not None and store_computes:
            original = source.whole_checksums()[algorithm]
        else:
            original = await self._read_source(row, before_overwrite=True)
        sides.originals[row.id] = original
        provenance[ORIGINAL_CHECKSUM_KEY] = original
        return provenance

    async def _checksums(
        self,
        row: ObjectRow,
        source: HeadResult,
        target: HeadResult,
        written: CopyResult | None,
        mode: str,
    ) -> tuple[str, str]:
        """One checksum of each side by the same algorithm, as ledger labels.

        `full` reads both objects. Otherwise what is known already comes first: checksums
        the stores keep of both whole objects (S3 additional checksums), the SHA-256 taken
        as the copy streamed the source. Only what is still missing is read.
        """
        if mode != "full":
            streamed = written.sha256 if written is not None else None
            mine = checksums_known(
                source,
                original=self._sides.originals.get(row.id),
                # Or read before the copy, to name it (content-addressed layouts).
                streamed_sha256=streamed or self._sides.contents.get(row.id),
            )
            asked = written.checksum_algorithm if written is not None else None
            theirs = target_checksums_trusted(target, asked, written=written is not None)
            if asked and asked not in target.whole_checksums():
                self._sides.dst.features.learn_missing(
                    Aspect.CHECKSUMS,
                    f"a copy written with x-amz-checksum-{asked.lower()} shows none on HEAD",
                )
            pair = checksum_pair(mine, theirs)
            if pair is not None:
                return (
                    pair[0] or await self._read_source(row),
                    pair[1] or await self._read_target(row, target),
                )
        return await self._read_source(row), await self._read_target(row, target)

    async def _read_source(self, row: ObjectRow, *, before_overwrite: bool = False) -> str:
        """The SHA-256 label of the source's bytes, read whole.

        An original replaced in place cannot be read any more: its SHA-256 is the one
        read before the copy (`before_overwrite`), or there is none.
        """
        sides = self._sides
        if sides.replaces_original(row) and not before_overwrite:
            original = sides.originals.get(row.id, "")
            if original.startswith("sha256:"):
                return original
            raise VerificationError(
                "OriginalOverwritten",
                "the copy replaced the original in place, and no SHA-256 of the original "
                "was taken before to compare it with",
            )
        # Before an overwrite: exactly the scanned object, or nothing.
        digest = await sides.source_sha256(row, if_match=row.etag if before_overwrite else None)
        return f"sha256:{digest}"

    async def _read_target(self, row: ObjectRow, target: HeadResult) -> str:
        """The SHA-256 label of the copy's bytes, read whole."""
        sides = self._sides
        digest, _ = await object_sha256(
            sides.dst.http,
            sides.spec.target.bucket,
            sides.target_key(row),
            target.version_id,
            sse_c=sides.ctx.target_customer_key,
        )
        return f"sha256:{digest}"
