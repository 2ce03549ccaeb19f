"""One object's way through the migration: restore, copy, verify — each step re-checks first.

A worker hands each claimed ledger row to :meth:`ObjectPipeline.process`, which returns the
row's next state as a :class:`StepResult`. Nothing here writes to the ledger, so a crash at
any point leaves the row as it was claimed, and whoever claims it next starts again from
the facts in S3: a copy that was made is found identical and only verified, a restore that
was requested is found in progress and waited for.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from objmig.api.types import parse_quantity
from objmig.engine.context import MigrationContext
from objmig.engine.lookup import KeyFacts, ListingLookup
from objmig.engine.policy import backoff_delay
from objmig.ledger import ObjectRow, ObjectState, StepResult
from objmig.storage.copy import (
    CopyOptions,
    CopyResult,
    Encryption,
    SourceObject,
    TargetExistsError,
    TargetObject,
    copy_object,
)
from objmig.storage.digest import object_sha256
from objmig.storage.errors import ErrorClass, IntegrityError, classify
from objmig.storage.ratelimit import RateLimiter
from objmig.storage.restore import needs_restore, request_restore
from objmig.storage.selection import metadata_matches
from objmig.storage.store import Store
from objmig.storage.streaming import ReadAhead
from objmig.storage.types import (
    CHECKSUM_ALGORITHMS,
    MIGRATION_METADATA_KEY,
    EncryptionInfo,
    HeadResult,
    multipart_part_count,
    version_or_none,
)

#: Memory a worker's streamed multipart copies may fill with parts read ahead of their
#: upload (the worker pod's default limit is 1 GiB; the rest of a worker needs ~100 MiB).
READ_AHEAD_BYTES = 128 * 1024 * 1024

#: Metadata an object copied onto itself carries: the ETag of the original it replaced and,
#: unless that ETag proves the copy, a checksum of the original's bytes taken before. The
#: original is gone once replaced, so this is what proves a copy whose verification was
#: interrupted (and what tells it from a change by someone else).
ORIGINAL_ETAG_KEY = "objmig-original-etag"
ORIGINAL_CHECKSUM_KEY = "objmig-original-checksum"

#: skip_reason values of dry-run rows: what a real run would do with the object.
PLAN_COPY = "PlanCopy"
PLAN_IDENTICAL = "PlanIdentical"
PLAN_RESTORE = "PlanRestore"
PLAN_REASONS = (PLAN_COPY, PLAN_IDENTICAL, PLAN_RESTORE)


class ConfigurationError(Exception):
    """An error no retry can fix (bad credentials, missing bucket): stop the whole run."""

    def __init__(self, error: ErrorClass, step: str, key: str) -> None:
        self.error = error
        super().__init__(f"{step} s3 object {key!r}: {error.code}: {error.message}")


@dataclass(frozen=True)
class _Proof:
    """What verification established about a copy."""

    target_etag: str
    target_version_id: str | None
    source_checksum: str | None
    target_checksum: str | None


class _SourceChanged(Exception):
    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class ObjectPipeline:
    """The per-object steps, bound to one migration and one pair of S3 clients."""

    def __init__(
        self,
        context: MigrationContext,
        source: Store,
        target: Store,
        *,
        plan_only: bool = False,
        limiter: RateLimiter | None = None,
        on_park: Callable[[], None] = lambda: None,
    ) -> None:
        self._ctx = context
        self._spec = context.spec
        self._src = source
        self._dst = target
        self._plan_only = plan_only or context.spec.dry_run
        self._limiter = limiter
        self._read_ahead = ReadAhead(READ_AHEAD_BYTES)
        self._transfers = asyncio.Semaphore(context.spec.transfer.concurrency)
        self._in_flight = 0
        # Checksum labels of originals replaced in place, taken before the copy (by row id).
        self._originals: dict[int, str] = {}
        spec = context.spec
        self._recheck = ListingLookup(
            source, spec.source.bucket, spec.source.prefix, self._source_facts, self._busy, on_park
        )
        self._target_look = ListingLookup(
            target, spec.target.bucket, spec.target.prefix, self._target_facts, self._busy, on_park
        )

    def _busy(self) -> int:
        """Objects in flight that are not parked in a look."""
        return self._in_flight - self.parked

    @property
    def parked(self) -> int:
        """Objects only waiting for a batched look at a bucket (they hold no transfer)."""
        return self._recheck.parked + self._target_look.parked

    def awaits_recheck(self, row: ObjectRow) -> bool:
        """Whether `row` is copied and parked for its source re-check only."""
        return version_or_none(row.version_id) is None and self._recheck.is_parked(row.key)

    def drain(self) -> None:
        """The worker is stopping: send parked looks now instead of lingering."""
        self._recheck.drain()
        self._target_look.drain()

    def start(self, row: ObjectRow) -> asyncio.Task[StepResult]:
        """`process(row)` as a task, counted in flight from now (not from its first step,
        or the looks would see fewer objects than are on their way)."""
        task = asyncio.create_task(self.process(row), name=f"object:{row.key}")
        self._in_flight += 1
        task.add_done_callback(self._finished)
        return task

    def _finished(self, _: asyncio.Task[StepResult]) -> None:
        self._in_flight -= 1
        # The objects left may all be waiting for a look now.
        self._recheck.consider()
        self._target_look.consider()

    async def process(self, row: ObjectRow) -> StepResult:
        """Advance ``row`` by as many steps as it can go now; never raises for S3 errors.

        Raises :class:`ConfigurationError` when the failure means the migration as a whole
        cannot proceed (credentials, bucket), so the worker stops instead of failing every
        object one by one.
        """
        try:
            async with asyncio.timeout(self._ctx.object_timeout_seconds) as deadline:
                _DEADLINE.set(deadline)
                return await self._advance(row)
        except _SourceChanged as changed:
            return StepResult(
                id=row.id,
                state=ObjectState.SOURCE_CHANGED,
                last_error=changed.why,
                error_code="SourceChanged",
                increment_attempts=True,
            )
        except TimeoutError:
            error = ErrorClass(
                "retryable",
                "ObjectTimeout",
                f"no result within objectTimeout ({self._spec.retry.object_timeout})",
            )
            return self._failure(row, error, "process")
        except Exception as exc:
            error = classify(exc)
            if error.is_config_error:
                raise ConfigurationError(error, "process", row.key) from exc
            if error.kind == "precondition":
                return StepResult(
                    id=row.id,
                    state=ObjectState.SOURCE_CHANGED,
                    last_error=error.message,
                    error_code=error.code,
                    increment_attempts=True,
                )
            return self._failure(
                row, error, "verify" if isinstance(exc, VerificationError) else "copy"
            )
        finally:
            self._originals.pop(row.id, None)

    # -- the steps ----------------------------------------------------------------------

    async def _advance(self, row: ObjectRow) -> StepResult:
        if row.state is ObjectState.COPIED:
            source = await self._head_source(row)
            target = await self._head_target(row)
            if target is None:
                # The copy we made is gone (someone deleted it): copy again.
                return await self._copy_and_verify(row, source, create_only=True)
            return self._verified(row, await self._verify(row, source, target))

        if not self._needs_source_head(row):
            return await self._copy_and_verify(row, None, create_only=self._create_only)
        if self._replaces_original(row):
            current = await self._head_source(row, check=False)
            if self._copied_here_before(row, current):
                return self._verified(row, await self._verify_earlier_copy(row, current))
            self._check_unchanged_head(row, current)
            source = current
        else:
            source = await self._head_source(row)
        archived = needs_restore(source.storage_class, source.restore, source.archive_status)
        if archived:
            return await self._restore(row, source)
        if self._ctx.metadata_rules and not metadata_matches(
            source.metadata, self._ctx.metadata_rules
        ):
            return self._skip(row, "MetadataNotMatched")

        if self._spec.verify.verify_only:
            target = await self._head_target(row)
            if target is None:
                return self._fail_now(row, "TargetMissing", "verifyOnly: no copy on the target")
            return self._verified(row, await self._verify(row, source, target))

        overwrite = self._spec.transfer.overwrite
        look_first = source.is_multipart or self._ctx.server_side
        if overwrite == "never" or self._plan_only or (overwrite != "always" and look_first):
            # Look before writing: `never` must not rely on stores honouring
            # If-None-Match, a plan writes nothing, a multipart copy would move every part
            # before a conditional completion could say the key was taken, and MinIO and
            # moto ignore If-None-Match on CopyObject (AWS honours it).
            target = await self._look_at_target(row)
            if target is not None:
                return await self._existing_target(row, source, target)
        if self._plan_only:
            return self._skip(row, PLAN_COPY)
        return await self._copy_and_verify(row, source, create_only=self._create_only)

    @property
    def _create_only(self) -> bool:
        return self._spec.transfer.overwrite != "always"

    def _needs_source_head(self, row: ObjectRow) -> bool:
        """Whether a HEAD must come before the copy, or the copy's own reads suffice.

        A plain single-part object that the listing describes (ETag, size, a class that is
        never archived) is copied by GET + PUT alone: the GET pins the scanned ETag and
        brings every header a HEAD would. Everything else looks first.
        """
        return (
            self._plan_only
            or self._spec.verify.verify_only
            or bool(self._ctx.metadata_rules)
            or self._ctx.server_side
            or self._replaces_original(row)
            or self._spec.transfer.overwrite == "never"
            or not row.etag
            or multipart_part_count(row.etag) is not None
            or row.storage_class not in _NEVER_ARCHIVED
        )

    async def _existing_target(
        self, row: ObjectRow, source: HeadResult, target: HeadResult
    ) -> StepResult:
        """The target key is taken: keep an identical object, else follow `overwrite`."""
        if self._looks_identical(source, target):
            if self._plan_only:
                return self._skip(row, PLAN_IDENTICAL)
            return self._verified(row, await self._verify(row, source, target))
        if self._spec.transfer.overwrite == "never":
            return self._skip(row, "TargetExistsDifferent")
        if self._plan_only:
            return self._skip(row, PLAN_COPY)
        return await self._copy_and_verify(row, source, create_only=False)

    async def _head_source(self, row: ObjectRow, *, check: bool = True) -> HeadResult:
        """HEAD the source; `check`: raise `_SourceChanged` unless it is as scanned."""
        head = await self._src.objects.head(
            self._spec.source.bucket,
            row.key,
            version_id=row.version_id or None,
            sse_c=self._ctx.source_customer_key,
            checksums=self._checksums_wanted,
        )
        if check:
            self._check_unchanged_head(row, head)
        return head

    def _check_unchanged_head(self, row: ObjectRow, head: HeadResult) -> None:
        self._check_unchanged(
            row, head.etag, head.size, int(head.last_modified.timestamp()), head.version_id
        )

    def _replaces_original(self, row: ObjectRow) -> bool:
        """Whether the copy of `row` overwrites the very object it copies (one bucket, one
        key, no versioning to keep the original): the original's bytes are gone once the
        copy is written, so whatever proves the copy is taken before it."""
        # A bucket whose versioning is suspended writes over the "null" version.
        unversioned = version_or_none(row.version_id) is None
        return unversioned and self._ctx.in_place(row.key, self._target_key(row))

    def _copied_here_before(self, row: ObjectRow, current: HeadResult) -> bool:
        """Whether the object in place of `row` is this migration's copy of it, written
        by an attempt that ended before its verification did.

        Its original is the one the row was scanned as, or, when a re-scan listed the
        copy meanwhile and took it for a change of the row, the one the copy names.
        """
        return (
            current.metadata.get(MIGRATION_METADATA_KEY) == self._ctx.name
            and ORIGINAL_ETAG_KEY in current.metadata
            and row.etag in (current.metadata[ORIGINAL_ETAG_KEY], current.etag)
        )

    async def _verify_earlier_copy(self, row: ObjectRow, copy: HeadResult) -> _Proof:
        """Prove an earlier attempt's in-place copy by what it says of its original.

        The original's ETag (when it was a content MD5 and the copy's is too) or the
        checksum taken of it before the copy: the metadata the copy was written with.
        The original's metadata is gone; the copy's stands for it.
        """
        original = copy.metadata.get(ORIGINAL_CHECKSUM_KEY)
        if original:
            self._originals[row.id] = original
        source = replace(
            copy,
            etag=copy.metadata[ORIGINAL_ETAG_KEY],
            size=row.size,
            metadata=_without_objmig_keys(copy.metadata),
            checksums={},
            checksum_type=None,
            encryption=EncryptionInfo(),
        )
        return await self._verify(row, source, copy)

    async def _recheck_source(self, row: ObjectRow, target: HeadResult) -> None:
        """Re-check the source before verifying: batched by listing, or HEAD for versions.

        An original replaced in place must now be the copy (`target`): anything else
        there was written by someone else since.
        """
        if version_or_none(row.version_id):
            await self._head_source(row)
            return
        # Parked until the batch goes: waiting for other objects is not this one's attempt.
        with _deadline_paused():
            facts = await self._recheck.current(row.key)
        if facts is None:
            raise _SourceChanged("source changed since the scan: deleted")
        if self._replaces_original(row):
            if (facts.etag, facts.size) != (target.etag, target.size):
                raise _SourceChanged(f"the copy in place was replaced: ETag is now {facts.etag}")
            return
        self._check_unchanged(
            row, facts.etag, facts.size, facts.last_modified_seconds, version_id=None
        )

    async def _source_facts(self, key: str) -> KeyFacts | None:
        return await _key_facts(
            self._src, self._spec.source.bucket, key, self._ctx.source_customer_key
        )

    async def _target_facts(self, key: str) -> KeyFacts | None:
        return await _key_facts(
            self._dst, self._spec.target.bucket, key, self._ctx.target_customer_key
        )

    def _check_unchanged(
        self,
        row: ObjectRow,
        etag: str,
        size: int,
        last_modified_seconds: int | None,
        version_id: str | None,
    ) -> None:
        """The source must still be the object the inventory listed (ETag, size, version)."""
        changes = []
        if etag != row.etag:
            changes.append(f"ETag {row.etag} -> {etag}")
        if size != row.size:
            changes.append(f"size {row.size} -> {size}")
        if row.version_id and version_id and version_id != row.version_id:
            changes.append(f"version {row.version_id} -> {version_id}")
        # HEAD's Last-Modified is an HTTP date (whole seconds); listings may carry
        # milliseconds (MinIO does). Compare at the precision both sides have.
        if (
            row.last_modified is not None
            and last_modified_seconds is not None
            and last_modified_seconds != int(row.last_modified.timestamp())
        ):
            changes.append("last-modified moved")
        if changes:
            raise _SourceChanged("source changed since the scan: " + ", ".join(changes))

    async def _look_at_target(self, row: ObjectRow) -> HeadResult | None:
        """The target object before writing, None when the key is free.

        Whether the key is taken comes from a batched listing (see `lookup`): its answer is
        at most the linger older than a HEAD's would be, and a copy waits for its transfer
        slot after either. Only a taken key is HEADed, for the overwrite policy.
        """
        with _deadline_paused():
            facts = await self._target_look.current(self._target_key(row))
        if facts is None:
            return None
        return await self._head_target(row)

    async def _head_target(self, row: ObjectRow) -> HeadResult | None:
        try:
            return await self._dst.objects.head(
                self._spec.target.bucket,
                self._target_key(row),
                sse_c=self._ctx.target_customer_key,
                checksums=self._checksums_wanted,
            )
        except Exception as exc:
            if classify(exc).kind == "not_found":
                return None
            raise

    def _target_key(self, row: ObjectRow) -> str:
        if row.target_key:
            return row.target_key
        return self._ctx.target_key_for(row.key, row.last_modified or _EPOCH, row.etag)

    async def _restore(self, row: ObjectRow, source: HeadResult) -> StepResult:
        restore = self._spec.restore
        if restore is None or source.storage_class not in restore.storage_classes:
            return self._skip(row, "ArchivedNotRestored")
        if self._plan_only:
            return self._skip(row, PLAN_RESTORE)
        requested_at = None
        if source.restore is None:
            await request_restore(
                await self._src.sdk(),
                self._spec.source.bucket,
                row.key,
                row.version_id or None,
                restore.tier,
                restore.days,
                storage_class=source.storage_class,
                archive_status=source.archive_status,
            )
            requested_at = _now()
        return StepResult(
            id=row.id,
            state=ObjectState.RESTORING,
            not_before=_now() + timedelta(seconds=self._ctx.restore_poll_seconds),
            restore_requested_at=requested_at,
        )

    def _looks_identical(self, source: HeadResult, target: HeadResult) -> bool:
        """Cheap check that the target already holds this object (ETag and size agree)."""
        if source.size != target.size:
            return False
        if _etag_comparable(source, target):
            return source.etag == target.etag
        # Encrypted ETags say nothing; only verification can tell, and it is cheaper to
        # copy again than to hash both sides just to decide whether to copy.
        return False

    async def _copy_and_verify(
        self, row: ObjectRow, source: HeadResult | None, *, create_only: bool
    ) -> StepResult:
        """Copy, then prove the copy. `source` None: the copy reads the source itself.

        Only the copy holds a transfer slot: HEADs before it and the verification after it
        wait on round trips, not bandwidth, and overlap with the next objects' transfers.
        """
        provenance: dict[str, str] = {}
        if source is not None and self._replaces_original(row):
            provenance = await self._before_overwrite(row, source)
        try:
            async with self._transfer_slot():
                result = await self._copy(row, source, create_only, provenance)
        except TargetExistsError as taken:
            existing = await self._head_target(row)
            if existing is None:
                raise  # gone again already; the retry copies
            return await self._existing_target(row, taken.source, existing)
        target: HeadResult | None
        if (
            self._spec.verify.metadata and self._spec.transfer.preserve_metadata
        ) or self._by_checksum(result.source):
            # Metadata is proven by reading it back, not by what we asked the store to
            # keep; so is a checksum the store computed.
            target = await self._head_target(row)
            if target is None:
                raise VerificationError("TargetMissing", "the copy is not visible on the target")
        else:
            # The write's own answer is the store's word on what it stored.
            target = HeadResult(
                etag=result.etag,
                size=result.bytes,
                last_modified=_now(),
                version_id=result.version_id,
                encryption=result.target_encryption,
            )
        proof = await self._verify(row, result.source, target, written=result)
        return self._verified(row, proof)

    @asynccontextmanager
    async def _transfer_slot(self) -> AsyncIterator[None]:
        """Hold one of the worker's transfer slots.

        Waiting for a slot is not part of the attempt: `retry.objectTimeout` pauses
        meanwhile, or objects queued behind long transfers would time out unstarted.
        """
        if not self._transfers.locked():
            async with self._transfers:
                yield
            return
        with _deadline_paused():
            await self._transfers.acquire()
        try:
            yield
        finally:
            self._transfers.release()

    @property
    def _checksums_wanted(self) -> bool:
        """Whether HEADs ask for the stored checksums (`full` reads both sides anyway)."""
        return self._spec.verify.mode != "full"

    def _by_checksum(self, source: HeadResult | None) -> bool:
        """Whether this copy will be proven by comparing checksums rather than ETags.

        `source`: the source's HEAD, whose encryption may make its ETag opaque; None
        when the copy reads the source itself (then the spec alone decides).
        """
        mode = self._spec.verify.mode
        if mode != "etag":
            return mode == "checksum"
        return (
            not self._spec.transfer.preserve_part_boundaries
            or not _etag_comparable_spec(self._ctx)
            or (source is not None and source.encryption.mode not in ("none", "SSE-S3"))
        )

    async def _before_overwrite(self, row: ObjectRow, source: HeadResult) -> dict[str, str]:
        """Take what will prove an in-place copy while the original is still there.

        The copy's ETag when it will be compared with the original's; else a checksum
        the store keeps of the original and will compute of a server-side single-part
        copy too; else the SHA-256 of the original, read now. Returns it as the metadata
        the copy carries (see `ORIGINAL_ETAG_KEY`).
        """
        provenance = {ORIGINAL_ETAG_KEY: row.etag}
        mode = self._spec.verify.mode
        if mode == "etag" and not self._by_checksum(source):
            return provenance
        kept = source.whole_checksums()
        algorithm = next((a for a in CHECKSUM_ALGORITHMS if a in kept), None)
        store_computes = (
            self._ctx.server_side
            and not source.is_multipart
            and self._spec.transfer.preserve_part_boundaries
        )
        if mode != "full" and algorithm is not None and store_computes:
            original = kept[algorithm]
        else:
            original = await self._read_source(row, before_overwrite=True)
        self._originals[row.id] = original
        provenance[ORIGINAL_CHECKSUM_KEY] = original
        return provenance

    async def _copy(
        self,
        row: ObjectRow,
        source: HeadResult | None,
        create_only: bool,
        provenance: Mapping[str, str],
    ) -> CopyResult:
        transfer = self._spec.transfer
        by_checksum = self._by_checksum(source)
        checksum_algorithm = None
        if by_checksum and self._ctx.server_side and source is not None:
            # The algorithm the source keeps, so the two stored values can be compared;
            # else SHA-256, which one read of the source can match.
            kept = source.whole_checksums()
            checksum_algorithm = next((a for a in CHECKSUM_ALGORITHMS if a in kept), "SHA256")
        return await copy_object(
            self._src.objects,
            self._dst.objects,
            SourceObject(
                bucket=self._spec.source.bucket,
                key=row.key,
                version_id=row.version_id or None,
                size=row.size,
                etag=row.etag,
                sse_c_key=self._ctx.source_customer_key,
                head=source,
            ),
            TargetObject(bucket=self._spec.target.bucket, key=self._target_key(row)),
            CopyOptions(
                storage_class=self._spec.target.storage_class,
                encryption=Encryption(
                    mode=self._spec.target.encryption.mode,
                    kms_key_id=self._spec.target.encryption.kms_key_id,
                    sse_c_key=self._ctx.target_customer_key,
                ),
                preserve_metadata=transfer.preserve_metadata,
                preserve_tags=transfer.preserve_tags,
                part_concurrency=transfer.part_concurrency,
                server_side=self._ctx.server_side,
                compute_sha256=by_checksum and not self._ctx.server_side,
                checksum_algorithm=checksum_algorithm,
                create_only=create_only,
                rate_limiter=self._limiter,
                read_ahead=self._read_ahead,
                migration_tag=self._ctx.name,
                extra_metadata=provenance,
                exact_layout=self._replaces_original(row),
                part_size=None
                if transfer.preserve_part_boundaries
                else parse_quantity(transfer.part_size),
            ),
        )

    async def _verify(
        self,
        row: ObjectRow,
        source: HeadResult,
        target: HeadResult,
        *,
        written: CopyResult | None = None,
    ) -> _Proof:
        """Prove the target holds the source's bytes (and metadata); raise if it does not.

        `written`: the copy just made (None: an object found on the target, made before).
        """
        mode = self._spec.verify.mode
        # A copy found on the target was cut into parts of its own unless boundaries are
        # kept.
        etag_proves = (
            written.layout_kept if written else self._spec.transfer.preserve_part_boundaries
        )
        if mode == "etag" and not (etag_proves and _etag_comparable(source, target)):
            # Opaque ETags (KMS, SSE-C) or parts cut anew: only the bytes can tell.
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
                algorithm = source_checksum.split(":", 1)[0].upper()
                raise VerificationError(
                    "ChecksumMismatch", f"{algorithm} of target differs from source"
                )
        if self._spec.verify.metadata and self._spec.transfer.preserve_metadata:
            if dict(source.metadata) != _without_objmig_keys(target.metadata):
                raise VerificationError("MetadataMismatch", "user metadata differs")
            if (source.content.content_type or "") != (target.content.content_type or ""):
                raise VerificationError("MetadataMismatch", "Content-Type differs")
        # The last word: the source must still be what was listed, or the copy proves nothing.
        await self._recheck_source(row, target)
        return _Proof(target.etag, target.version_id, source_checksum, target_checksum)

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
        as the copy streamed the source. Of a copy just `written`, only the checksum it had
        its store compute or check counts: another one on the target may have been copied
        along from the source, and would compare the source with itself. Only what is
        still missing is read.
        """
        if mode != "full":
            mine = source.whole_checksums()
            original = self._originals.get(row.id)
            if original is not None:
                mine[original.split(":", 1)[0].upper()] = original
            if written is not None and written.sha256 is not None:
                mine["SHA256"] = f"sha256:{written.sha256}"
            theirs = target.whole_checksums()
            if written is not None:
                trusted = written.checksum_algorithm
                theirs = {a: v for a, v in theirs.items() if a == trusted}
            shared = [a for a in CHECKSUM_ALGORITHMS if a in mine and a in theirs]
            if shared:
                return mine[shared[0]], theirs[shared[0]]
            if "SHA256" in mine or "SHA256" in theirs:
                return (
                    mine.get("SHA256") or await self._read_source(row),
                    theirs.get("SHA256") or await self._read_target(row, target),
                )
        return await self._read_source(row), await self._read_target(row, target)

    async def _read_source(self, row: ObjectRow, *, before_overwrite: bool = False) -> str:
        """The SHA-256 label of the source's bytes, read whole.

        An original replaced in place cannot be read any more: its SHA-256 is the one
        read before the copy (`before_overwrite`), or there is none.
        """
        if self._replaces_original(row) and not before_overwrite:
            original = self._originals.get(row.id, "")
            if original.startswith("sha256:"):
                return original
            raise VerificationError(
                "OriginalOverwritten",
                "the copy replaced the original in place, and no SHA-256 of the original "
                "was taken before to compare it with",
            )
        digest, _ = await object_sha256(
            self._src.objects,
            self._spec.source.bucket,
            row.key,
            row.version_id or None,
            sse_c=self._ctx.source_customer_key,
            # Before an overwrite: exactly the scanned object, or nothing.
            if_match=row.etag if before_overwrite else None,
        )
        return f"sha256:{digest}"

    async def _read_target(self, row: ObjectRow, target: HeadResult) -> str:
        """The SHA-256 label of the copy's bytes, read whole."""
        digest, _ = await object_sha256(
            self._dst.objects,
            self._spec.target.bucket,
            self._target_key(row),
            target.version_id,
            sse_c=self._ctx.target_customer_key,
        )
        return f"sha256:{digest}"

    # -- results ------------------------------------------------------------------------

    def _verified(self, row: ObjectRow, proof: _Proof) -> StepResult:
        return StepResult(
            id=row.id,
            state=ObjectState.VERIFIED,
            target_key=self._target_key(row),
            target_etag=proof.target_etag,
            target_version_id=proof.target_version_id,
            source_checksum=proof.source_checksum,
            target_checksum=proof.target_checksum,
            increment_attempts=True,
        )

    def _skip(self, row: ObjectRow, reason: str) -> StepResult:
        return StepResult(id=row.id, state=ObjectState.SKIPPED, skip_reason=reason)

    def _fail_now(self, row: ObjectRow, code: str, message: str) -> StepResult:
        return StepResult(
            id=row.id,
            state=ObjectState.FAILED,
            last_error=message,
            error_code=code,
            increment_attempts=True,
        )

    def _failure(self, row: ObjectRow, error: ErrorClass, step: str) -> StepResult:
        """A failed attempt: retry later with backoff while attempts remain, else fail."""
        attempts = row.attempts + 1
        message = f"{step}: {error.code}: {error.message}"
        if error.retryable and attempts < self._spec.retry.attempts:
            delay = backoff_delay(attempts, self._spec.retry.backoff)
            return StepResult(
                id=row.id,
                # A row keeps its state: a copied row's retry only verifies again.
                state=row.state,
                last_error=message,
                error_code=error.code,
                not_before=_now() + timedelta(seconds=delay),
                increment_attempts=True,
            )
        return StepResult(
            id=row.id,
            state=ObjectState.FAILED,
            last_error=message,
            error_code=error.code,
            increment_attempts=True,
        )


class VerificationError(IntegrityError):
    """The copy differs from the source. Retryable: the next attempt copies again."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _etag_comparable(source: HeadResult, target: HeadResult) -> bool:
    """ETags are MD5-based (and so comparable) unless SSE-KMS or SSE-C is in play."""
    return all(h.encryption.mode in ("none", "SSE-S3") for h in (source, target))


def _etag_comparable_spec(context: MigrationContext) -> bool:
    return context.spec.target.encryption.mode in ("none", "SSE-S3") and (
        context.source_customer_key is None
    )


def _without_objmig_keys(metadata: Mapping[str, str]) -> dict[str, str]:
    """Target metadata minus what objmig itself adds (the migration marker)."""
    return {k: v for k, v in metadata.items() if not k.startswith("objmig-")}


def _now() -> datetime:
    return datetime.now(UTC)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# The running attempt's deadline (each object's task has its own context).
_DEADLINE: ContextVar[asyncio.Timeout] = ContextVar("objmig_object_deadline")


async def _key_facts(
    store: Store, bucket: str, key: str, customer_key: bytes | None
) -> KeyFacts | None:
    """A HEAD's answer as a look's (None: no such key)."""
    try:
        head = await store.objects.head(bucket, key, sse_c=customer_key)
    except Exception as exc:
        if classify(exc).kind == "not_found":
            return None
        raise
    return KeyFacts(head.etag, head.size, int(head.last_modified.timestamp()))


@contextmanager
def _deadline_paused() -> Iterator[None]:
    """Stop the object's `retry.objectTimeout` clock for a wait on other objects."""
    deadline = _DEADLINE.get(None)
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


# Storage classes whose objects are always readable: no HEAD needed to rule out a restore.
# (Intelligent-Tiering may have moved an object to an archive tier, which only HEAD shows.)
_NEVER_ARCHIVED = frozenset(
    {"STANDARD", "STANDARD_IA", "ONEZONE_IA", "REDUCED_REDUNDANCY", "GLACIER_IR", "EXPRESS_ONEZONE"}
)
