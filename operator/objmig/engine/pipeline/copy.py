"""Move the bytes: one object copied to its target key, holding one transfer slot.

The copy itself (`objmig.storage.copy.copy_object`) re-checks the source before any byte
moves and pins what it read; this step maps the spec onto its options and bounds how many
copies run at once. Waiting for a slot does not count against `retry.objectTimeout`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

from objmig.api.types import parse_quantity
from objmig.engine.pipeline.sides import Sides, deadline_paused
from objmig.ledger.models import ObjectRow, OpenUpload
from objmig.storage.compare import first_kept_algorithm
from objmig.storage.copy import (
    CopyOptions,
    CopyResult,
    Encryption,
    SourceObject,
    TargetObject,
    copy_object,
)
from objmig.storage.errors import S3ResponseError
from objmig.storage.features import Aspect
from objmig.storage.filesystem import FileStore
from objmig.storage.ratelimit import RateLimiter
from objmig.storage.streaming import ReadAhead
from objmig.storage.types import HeadResult

log = logging.getLogger(__name__)
UploadCallback = Callable[[str], Awaitable[None]]

#: Memory a worker's streamed multipart copies may fill with parts read ahead of their
#: upload (the worker pod's default limit is 1 GiB; the rest of a worker needs ~100 MiB).
READ_AHEAD_BYTES = 128 * 1024 * 1024


class UploadBook(Protocol):
    """Where the multipart uploads of copies are recorded while they are open (the ledger:
    see `objmig.ledger.uploads`), so that what a killed attempt left is found again."""

    async def started(self, object_id: int, target_key: str, upload_id: str) -> None:
        """Record an upload."""
        ...

    async def open_of(self, object_id: int) -> list[OpenUpload]:
        """The object's recorded uploads not known to have ended."""
        ...

    async def ended(self, object_id: int, upload_ids: Sequence[str]) -> None:
        """Forget uploads completed or aborted."""
        ...


class CopyStep:
    """Copies objects of one migration, at most `copy.concurrency` at once.

    With an `UploadBook`, every multipart upload is recorded the moment it starts, and the
    uploads of an object that earlier attempts did not live to end (a killed worker's) are
    aborted when its next attempt starts (`abort_stale_uploads`).
    """

    def __init__(
        self,
        sides: Sides,
        limiter: RateLimiter | None,
        on_bytes: Callable[[int, int], None] | None = None,
        uploads: UploadBook | None = None,
    ) -> None:
        self._sides = sides
        self._limiter = limiter
        self._on_bytes = on_bytes
        self._uploads = uploads
        self._read_ahead = ReadAhead(READ_AHEAD_BYTES)
        self._transfers = asyncio.Semaphore(sides.spec.copy_.concurrency)

    async def copy(
        self,
        row: ObjectRow,
        source: HeadResult | None,
        create_only: bool,
        provenance: Mapping[str, str],
    ) -> CopyResult:
        """Copy `row`'s object (`source`: its HEAD, None to have the copy read it)."""
        sides = self._sides
        ctx, spec = sides.ctx, sides.spec
        copy_spec = spec.copy_
        by_checksum = sides.by_checksum(source)
        checksum_algorithm = None
        if (
            by_checksum
            and ctx.server_side
            and source is not None
            and not sides.dst.features.lacks(Aspect.CHECKSUMS)
        ):
            # The algorithm the source keeps, so the two stored values can be compared;
            # else SHA-256, which one read of the source can match.
            checksum_algorithm = first_kept_algorithm(source) or "SHA256"
        what = SourceObject(
            bucket=sides.source_bucket(row),
            key=row.key,
            version_id=row.version_id or None,
            size=row.size,
            etag=row.etag,
            sse_c_key=ctx.source_customer_key,
            head=source,
            last_modified=row.last_modified,
            storage_class=row.storage_class,
        )
        where = TargetObject(bucket=spec.target.bucket, key=sides.target_key(row))
        options = CopyOptions(
            storage_class=spec.target.storage_class,
            encryption=Encryption(
                mode=spec.target.encryption.mode,
                kms_key_id=spec.target.encryption.kms_key_id,
                sse_c_key=ctx.target_customer_key,
            ),
            preserve_metadata=copy_spec.preserve_metadata,
            preserve_tags=copy_spec.preserve_tags,
            part_concurrency=copy_spec.part_concurrency,
            server_side=ctx.server_side,
            compute_sha256=by_checksum and not ctx.server_side,
            checksum_algorithm=checksum_algorithm,
            create_only=create_only,
            rate_limiter=self._limiter,
            read_ahead=self._read_ahead,
            migration_tag=ctx.name if copy_spec.migration_marker else None,
            metadata_change=ctx.metadata_change,
            extra_metadata=provenance,
            on_progress=functools.partial(self._on_bytes, row.id) if self._on_bytes else None,
            on_upload_started=self._on_started(row, where.key),
            on_upload_ended=self._on_ended(row),
            # Every part's size is asked for before the first byte moves: a guess of equal
            # parts that turns out wrong costs a second copy of the whole object.
            exact_layout=copy_spec.preserve_part_boundaries or sides.replaces_original(row),
            part_size=None
            if copy_spec.preserve_part_boundaries
            else parse_quantity(copy_spec.part_size),
            content_sha256=sides.contents.get(row.id),
        )
        async with self._transfer_slot():
            if isinstance(sides.dst, FileStore):
                result = await sides.dst.write(sides.src.http, what, where.key, options)
            else:
                result = await copy_object(sides.src.http, sides.dst.http, what, where, options)
        sides.written[row.id] = (result.etag, result.version_id)
        sides.not_kept.setdefault(row.id, []).extend(result.not_kept)
        return result

    async def abort_stale_uploads(self, row: ObjectRow) -> None:
        """Abort the uploads of `row` that earlier attempts left open.

        Only an object attempted before can have any (`attempts` counts interrupted
        attempts too), so a first attempt asks the ledger nothing. Whatever this attempt
        then does (another upload, a single request, nothing at all), none stays behind.
        """
        if self._uploads is None or not row.attempts or self._sides.plan_only:
            return
        if isinstance(self._sides.dst, FileStore):
            return  # a directory has no multipart uploads
        try:
            stale = await self._uploads.open_of(row.id)
        except Exception as exc:  # the attempt goes on; a leftovers cleanup finds them
            log.warning("reading the open uploads of %s failed: %s", row.key, exc)
            return
        for upload in stale:
            if await self._abort(upload.target_key, upload.upload_id):
                await self._forget(row, upload.upload_id)

    def _on_started(self, row: ObjectRow, target_key: str) -> UploadCallback | None:
        book = self._uploads
        if book is None:
            return None

        async def started(upload_id: str) -> None:
            try:
                await book.started(row.id, target_key, upload_id)
            except Exception as exc:  # the upload goes on; a leftovers sweep may miss it
                log.warning("recording upload %s of %s failed: %s", upload_id, row.key, exc)

        return started

    def _on_ended(self, row: ObjectRow) -> UploadCallback | None:
        if self._uploads is None:
            return None

        async def ended(upload_id: str) -> None:
            await self._forget(row, upload_id)

        return ended

    async def _forget(self, row: ObjectRow, upload_id: str) -> None:
        assert self._uploads is not None
        try:
            await self._uploads.ended(row.id, [upload_id])
        except Exception as exc:  # the record stays: aborting it again later is harmless
            log.warning("forgetting upload %s of %s failed: %s", upload_id, row.key, exc)

    async def _abort(self, key: str, upload_id: str) -> bool:
        """Abort an upload; whether it is gone (NoSuchUpload: gone already)."""
        sides = self._sides
        assert not isinstance(sides.dst, FileStore)
        try:
            await sides.dst.http.abort_multipart_upload(sides.spec.target.bucket, key, upload_id)
        except S3ResponseError as exc:
            if exc.code == "NoSuchUpload":
                return True
            log.warning("aborting a stale upload %s of %s failed: %s", upload_id, key, exc)
            return False
        except Exception as exc:  # this attempt's copy goes on; a later one tries again
            log.warning("aborting a stale upload %s of %s failed: %r", upload_id, key, exc)
            return False
        return True

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
        with deadline_paused():
            await self._transfers.acquire()
        try:
            yield
        finally:
            self._transfers.release()
