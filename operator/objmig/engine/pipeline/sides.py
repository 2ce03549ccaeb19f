"""What every step of an object's way shares: the migration's two stores, its settings,
and the clock that bounds one attempt.

`Sides` answers the questions several steps ask of a row (its target key, whether its
copy replaces it in place, whether checksums or ETags will prove it) so that each is
answered one way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

from objmig.engine.context import MigrationContext, Side
from objmig.ledger.models import ObjectRow
from objmig.storage.compare import etag_is_content_md5, proves_by_checksum
from objmig.storage.digest import object_sha256
from objmig.storage.errors import classify
from objmig.storage.types import HeadResult, version_or_none

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# The running attempt's deadline (each object's task has its own context).
DEADLINE: ContextVar[asyncio.Timeout] = ContextVar("objmig_object_deadline")


class Sides:
    """One migration's source and target stores, as the per-object steps use them."""

    def __init__(
        self, context: MigrationContext, source: Side, target: Side, *, plan_only: bool
    ) -> None:
        self.ctx = context
        self.spec = context.spec
        self.src = source
        self.dst = target
        self.plan_only = plan_only or context.spec.dry_run
        # Checksum labels of originals replaced in place, taken before the copy (by row id).
        self.originals: dict[int, str] = {}
        # The SHA-256 (hex) of contents read before their copy (content-addressed layouts).
        self.contents: dict[int, str] = {}
        # What this attempt wrote to the target (ETag, version id), and what of the source
        # its copy could not keep, by row id: the row's record, whichever way it ends.
        self.written: dict[int, tuple[str, str | None]] = {}
        self.not_kept: dict[int, list[str]] = {}

    def forget(self, row: ObjectRow) -> None:
        """The attempt at `row` is over: drop what it noted here."""
        self.originals.pop(row.id, None)
        self.written.pop(row.id, None)
        self.not_kept.pop(row.id, None)
        self.contents.pop(row.id, None)

    def source_bucket(self, row: ObjectRow) -> str:
        """The bucket `row` was listed in (its own, in a migration of several)."""
        return self.ctx.source_bucket(row.bucket)

    async def source_sha256(self, row: ObjectRow, *, if_match: str | None) -> str:
        """The hex SHA-256 of `row`'s source bytes, read once (`if_match`: exactly that
        ETag, or a 412)."""
        digest, _ = await object_sha256(
            self.src.http,
            self.source_bucket(row),
            row.key,
            row.version_id or None,
            sse_c=self.ctx.source_customer_key,
            if_match=if_match,
        )
        return digest

    def target_key(self, row: ObjectRow) -> str:
        if row.target_key:
            return row.target_key
        sha256 = self.contents.get(row.id)
        if sha256 is None and self.spec.content_addressed and row.source_checksum:
            sha256 = row.source_checksum.removeprefix("sha256:")
        return self.ctx.target_key_for(
            row.key, row.last_modified or _EPOCH, row.etag, bucket=row.bucket, sha256=sha256
        )

    def listed(self, row: ObjectRow) -> HeadResult:
        """The source as the scan listed it, standing in for a HEAD nobody made."""
        return HeadResult.listed(
            row.etag, row.size, row.last_modified or _EPOCH, row.version_id, row.storage_class
        )

    def replaces_original(self, row: ObjectRow) -> bool:
        """Whether the copy of `row` overwrites the very object it copies (one bucket, one
        key, no versioning to keep the original): the original's bytes are gone once the
        copy is written, so whatever proves the copy is taken before it."""
        if self.spec.content_addressed:
            return False  # a content key names the content, never the object it came from
        # A bucket whose versioning is suspended writes over the "null" version.
        unversioned = version_or_none(row.version_id) is None
        return unversioned and self.ctx.in_place(row.key, self.target_key(row))

    @property
    def checks_metadata(self) -> bool:
        """Whether verification compares user metadata (and Content-Type) with what was
        meant: the source's, as kept and changed by the spec."""
        return self.spec.verify.metadata and (
            self.spec.copy_.preserve_metadata or bool(self.ctx.metadata_change)
        )

    @property
    def reads_back_metadata(self) -> bool:
        """Whether the metadata of a copy just written is read back and compared:
        `verify.contentType: Exact` asks what the store shows (a store may normalise the
        Content-Type it was sent), which only a read tells. Otherwise the copy carries what
        it was written with (see `VerifyStep.verify`)."""
        return self.checks_metadata and self.spec.verify.content_type == "Exact"

    @property
    def needs_target_head(self) -> bool:
        """Whether a copy just written is read back (HEAD) rather than taken from the
        write's answer: its last-modified is backfilled, and no write answer tells it, or
        its metadata is compared as the store shows it (`reads_back_metadata`).
        """
        backfill = self.spec.backfill
        return self.reads_back_metadata or (
            backfill is not None and backfill.columns.last_modified is not None
        )

    @property
    def create_only(self) -> bool:
        return self.spec.copy_.overwrite != "always"

    @property
    def checksums_wanted(self) -> bool:
        """Whether HEADs ask for the stored checksums (`full` reads both sides anyway)."""
        return self.spec.verify.mode != "full"

    def by_checksum(self, source: HeadResult | None) -> bool:
        """Whether this copy will be proven by comparing checksums rather than ETags.

        `source`: the source's HEAD, whose encryption may make its ETag opaque; None
        when the copy reads the source itself (then the spec alone decides).
        """
        return proves_by_checksum(
            self.spec.verify.mode,
            layout_kept=self.spec.copy_.preserve_part_boundaries,
            etags_opaque=self.etags_opaque_by_spec,
            source_encryption_mode=source.encryption.mode if source is not None else None,
        )

    @property
    def etags_opaque_by_spec(self) -> bool:
        """Whether the spec alone makes ETags opaque: SSE-KMS or SSE-C written to the
        target, or an SSE-C source."""
        return (
            not etag_is_content_md5(self.spec.target.encryption.mode)
            or self.ctx.source_customer_key is not None
        )

    async def head_target(self, row: ObjectRow) -> HeadResult | None:
        """HEAD the target key of `row`; None when it is free."""
        try:
            return await self.dst.http.head(
                self.spec.target.bucket,
                self.target_key(row),
                sse_c=self.ctx.target_customer_key,
                checksums=self.checksums_wanted,
            )
        except Exception as exc:
            if classify(exc).kind == "not_found":
                return None
            raise


@contextmanager
def deadline_paused() -> Iterator[None]:
    """Stop the object's `retry.objectTimeout` clock for a wait on other objects."""
    deadline = DEADLINE.get(None)
    when = deadline.when() if deadline is not None else None
    if deadline is None or when is None:
        yield
        return
    loop = asyncio.get_running_loop()
    remaining = when - loop.time()
    deadline.reschedule(None)
    try:
        yield
    finally:
        deadline.reschedule(loop.time() + remaining)
