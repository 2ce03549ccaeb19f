"""Move the bytes: one object copied to its target key, holding one transfer slot.

The copy itself (`objmig.storage.copy.copy_object`) re-checks the source before any byte
moves and pins what it read; this step maps the spec onto its options and bounds how many
copies run at once. Waiting for a slot does not count against `retry.objectTimeout`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

from objmig.api.types import parse_quantity
from objmig.engine.pipeline.sides import Sides, deadline_paused
from objmig.ledger.models import ObjectRow
from objmig.storage.compare import first_kept_algorithm
from objmig.storage.copy import (
    CopyOptions,
    CopyResult,
    Encryption,
    SourceObject,
    TargetObject,
    copy_object,
)
from objmig.storage.features import Aspect
from objmig.storage.filesystem import FileStore
from objmig.storage.ratelimit import RateLimiter
from objmig.storage.streaming import ReadAhead
from objmig.storage.types import HeadResult

#: Memory a worker's streamed multipart copies may fill with parts read ahead of their
#: upload (the worker pod's default limit is 1 GiB; the rest of a worker needs ~100 MiB).
READ_AHEAD_BYTES = 128 * 1024 * 1024


class CopyStep:
    """Copies objects of one migration, at most `copy.concurrency` at once."""

    def __init__(
        self,
        sides: Sides,
        limiter: RateLimiter | None,
        on_bytes: Callable[[int, int], None] | None = None,
    ) -> None:
        self._sides = sides
        self._limiter = limiter
        self._on_bytes = on_bytes
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
            migration_tag=ctx.name,
            metadata_change=ctx.metadata_change,
            extra_metadata=provenance,
            on_progress=functools.partial(self._on_bytes, row.id) if self._on_bytes else None,
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
                return await sides.dst.write(sides.src.http, what, where.key, options)
            return await copy_object(sides.src.http, sides.dst.http, what, where, options)

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
