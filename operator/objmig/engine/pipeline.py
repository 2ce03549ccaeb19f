"""One object's way through the migration: restore, copy, verify — each step re-checks first.

A worker hands each claimed ledger row to :meth:`ObjectPipeline.process`, which returns the
row's next state as a :class:`StepResult`. Nothing here writes to the ledger, so a crash at
any point leaves the row as it was claimed, and whoever claims it next starts again from
the facts in S3: a copy that was made is found identical and only verified, a restore that
was requested is found in progress and waited for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from objmig.engine.context import MigrationContext
from objmig.engine.policy import backoff_delay
from objmig.ledger import ObjectRow, ObjectState, StepResult
from objmig.storage.copy import (
    CopyOptions,
    Encryption,
    SourceObject,
    TargetObject,
    copy_object,
)
from objmig.storage.errors import ErrorClass, IntegrityError, classify
from objmig.storage.objects import HeadResult, head_object, object_sha256
from objmig.storage.ratelimit import RateLimiter
from objmig.storage.restore import needs_restore, request_restore
from objmig.storage.selection import metadata_matches

# The aiobotocore stubs are a development dependency: import them for type checking only.
if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

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
        source: S3Client,
        target: S3Client,
        *,
        plan_only: bool = False,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._ctx = context
        self._spec = context.spec
        self._src = source
        self._dst = target
        self._plan_only = plan_only or context.spec.dry_run
        self._limiter = limiter

    async def process(self, row: ObjectRow) -> StepResult:
        """Advance ``row`` by as many steps as it can go now; never raises for S3 errors.

        Raises :class:`ConfigurationError` when the failure means the migration as a whole
        cannot proceed (credentials, bucket), so the worker stops instead of failing every
        object one by one.
        """
        try:
            async with asyncio.timeout(self._ctx.object_timeout_seconds):
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

    # -- the steps ----------------------------------------------------------------------

    async def _advance(self, row: ObjectRow) -> StepResult:
        source = await self._head_source(row)
        if row.state is ObjectState.COPIED:
            target = await self._head_target(row)
            if target is None:
                # The copy we made is gone (someone deleted it): copy again.
                return await self._copy_and_verify(row, source)
            return self._verified(row, await self._verify(row, source, target, None))

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
            return self._verified(row, await self._verify(row, source, target, None))

        if self._spec.transfer.overwrite != "always":
            target = await self._head_target(row)
            if target is not None:
                if self._looks_identical(source, target):
                    if self._plan_only:
                        return self._skip(row, PLAN_IDENTICAL)
                    return self._verified(row, await self._verify(row, source, target, None))
                if self._spec.transfer.overwrite == "never":
                    return self._skip(row, "TargetExistsDifferent")
        if self._plan_only:
            return self._skip(row, PLAN_COPY)
        return await self._copy_and_verify(row, source)

    async def _head_source(self, row: ObjectRow) -> HeadResult:
        head = await head_object(
            self._src,
            self._spec.source.bucket,
            row.key,
            row.version_id or None,
            sse_c=self._ctx.source_customer_key,
        )
        self._check_unchanged(row, head)
        return head

    def _check_unchanged(self, row: ObjectRow, head: HeadResult) -> None:
        """The source must still be the object the inventory listed (ETag, size, version)."""
        changes = []
        if head.etag != row.etag:
            changes.append(f"ETag {row.etag} -> {head.etag}")
        if head.size != row.size:
            changes.append(f"size {row.size} -> {head.size}")
        if row.version_id and head.version_id and head.version_id != row.version_id:
            changes.append(f"version {row.version_id} -> {head.version_id}")
        # HEAD's Last-Modified is an HTTP date (whole seconds); listings may carry
        # milliseconds (MinIO does). Compare at the precision both sides have.
        if row.last_modified is not None and int(head.last_modified.timestamp()) != int(
            row.last_modified.timestamp()
        ):
            changes.append("last-modified moved")
        if changes:
            raise _SourceChanged("source changed since the scan: " + ", ".join(changes))

    async def _head_target(self, row: ObjectRow) -> HeadResult | None:
        try:
            return await head_object(
                self._dst,
                self._spec.target.bucket,
                self._target_key(row),
                None,
                sse_c=self._ctx.target_customer_key,
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
                self._src,
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

    async def _copy_and_verify(self, row: ObjectRow, source: HeadResult) -> StepResult:
        transfer = self._spec.transfer
        compute_sha256 = self._spec.verify.mode != "etag" or not _etag_comparable_spec(self._ctx)
        result = await copy_object(
            self._src,
            self._dst,
            SourceObject(
                bucket=self._spec.source.bucket,
                key=row.key,
                version_id=row.version_id or None,
                size=source.size,
                etag=source.etag,
                sse_c_key=self._ctx.source_customer_key,
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
                compute_sha256=compute_sha256 and not self._ctx.server_side,
                rate_limiter=self._limiter,
                migration_tag=self._ctx.name,
            ),
        )
        target = await self._head_target(row)
        if target is None:
            raise VerificationError("TargetMissing", "the copy is not visible on the target")
        proof = await self._verify(row, source, target, result.sha256)
        return self._verified(row, proof)

    async def _verify(
        self,
        row: ObjectRow,
        source: HeadResult,
        target: HeadResult,
        streamed_sha256: str | None,
    ) -> _Proof:
        """Prove the target holds the source's bytes (and metadata); raise if it does not."""
        mode = self._spec.verify.mode
        if mode == "etag" and not _etag_comparable(source, target):
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
            source_sha = streamed_sha256 if mode == "checksum" else None
            if source_sha is None:
                source_sha, _ = await object_sha256(
                    self._src,
                    self._spec.source.bucket,
                    row.key,
                    row.version_id or None,
                    sse_c=self._ctx.source_customer_key,
                )
            target_sha, _ = await object_sha256(
                self._dst,
                self._spec.target.bucket,
                self._target_key(row),
                target.version_id,
                sse_c=self._ctx.target_customer_key,
            )
            if source_sha != target_sha:
                raise VerificationError("ChecksumMismatch", "SHA-256 of target differs from source")
            source_checksum = target_checksum = f"sha256:{source_sha}"
        if self._spec.verify.metadata and self._spec.transfer.preserve_metadata:
            if dict(source.metadata) != _without_objmig_keys(target.metadata):
                raise VerificationError("MetadataMismatch", "user metadata differs")
            if (source.content.content_type or "") != (target.content.content_type or ""):
                raise VerificationError("MetadataMismatch", "Content-Type differs")
        # The last word: the source must still be what was listed, or the copy proves nothing.
        await self._head_source(row)
        return _Proof(target.etag, target.version_id, source_checksum, target_checksum)

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
