"""What differs: the source as scanned against the source as it is now, and the target key.

Before an object is copied its source is HEADed and compared with the row (a difference
ends it as `source_changed`); before it is marked verified the source is looked at once
more, batched with other objects into one listing (`objmig.engine.lookup`); where a copy
must not rely on `If-None-Match`, the target key is looked at first, batched the same way.
"""

from __future__ import annotations

from collections.abc import Callable

from objmig.engine.context import Side
from objmig.engine.lookup import KeyFacts, ListingLookup
from objmig.engine.pipeline.sides import Sides, deadline_paused
from objmig.ledger.models import ObjectRow
from objmig.storage.compare import Seen, changes
from objmig.storage.errors import classify
from objmig.storage.types import HeadResult, version_or_none


class SourceChanged(Exception):
    """The source is no longer the object the row describes: the row ends `source_changed`."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class Looks:
    """The looks at both buckets of one migration; batched ones park their object."""

    def __init__(self, sides: Sides, busy: Callable[[], int], on_park: Callable[[], None]) -> None:
        self._sides = sides
        self._busy = busy
        self._on_park = on_park
        spec = sides.spec
        # One re-check per source bucket (a migration of several lists each on its own).
        self._rechecks: dict[str, ListingLookup] = {}
        # Keys under a directory's {bucket} segments lie outside the prefix: no listing range.
        prefix = "" if sides.ctx.target_path_template else spec.target.prefix
        self.target_look = ListingLookup(
            sides.dst, spec.target.bucket, prefix, self._target_facts, busy, on_park
        )

    def recheck(self, bucket: str) -> ListingLookup:
        """The batched re-check of one source bucket."""
        look = self._rechecks.get(bucket)
        if look is None:
            look = ListingLookup(
                self._sides.src,
                bucket,
                self._sides.spec.source.prefix,
                lambda key: self._source_facts(bucket, key),
                self._busy,
                self._on_park,
            )
            self._rechecks[bucket] = look
        return look

    def _looks(self) -> list[ListingLookup]:
        return [*self._rechecks.values(), self.target_look]

    @property
    def parked(self) -> int:
        """Objects only waiting for a batched look at a bucket (they hold no transfer)."""
        return sum(look.parked for look in self._looks())

    def is_parked_for_recheck(self, row: ObjectRow) -> bool:
        look = self._rechecks.get(self._sides.source_bucket(row))
        return look is not None and look.is_parked(row.key)

    def drain(self) -> None:
        for look in self._looks():
            look.drain()

    def consider(self) -> None:
        for look in self._looks():
            look.consider()

    async def head_source(self, row: ObjectRow, *, check: bool = True) -> HeadResult:
        """HEAD the source; `check`: raise `SourceChanged` unless it is as scanned."""
        sides = self._sides
        head = await sides.src.http.head(
            sides.source_bucket(row),
            row.key,
            version_id=row.version_id or None,
            sse_c=sides.ctx.source_customer_key,
            checksums=sides.checksums_wanted,
        )
        if check:
            self.check_unchanged_head(row, head)
        return head

    def check_unchanged_head(self, row: ObjectRow, head: HeadResult) -> None:
        self._check_unchanged(
            row, head.etag, head.size, int(head.last_modified.timestamp()), head.version_id
        )

    async def recheck_source(self, row: ObjectRow, target: HeadResult) -> None:
        """Re-check the source before verifying: batched by listing, or HEAD for versions.

        An original replaced in place must now be the copy (`target`): anything else
        there was written by someone else since.
        """
        if version_or_none(row.version_id):
            await self.head_source(row)
            return
        # Parked until the batch goes: waiting for other objects is not this one's attempt.
        with deadline_paused():
            facts = await self.recheck(self._sides.source_bucket(row)).current(row.key)
        if facts is None:
            raise SourceChanged("source changed since the scan: deleted")
        if self._sides.replaces_original(row):
            if (facts.etag, facts.size) != (target.etag, target.size):
                raise SourceChanged(f"the copy in place was replaced: ETag is now {facts.etag}")
            return
        self._check_unchanged(
            row, facts.etag, facts.size, facts.last_modified_seconds, version_id=None
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
        scanned = Seen(
            row.etag,
            row.size,
            row.version_id,
            int(row.last_modified.timestamp()) if row.last_modified is not None else None,
        )
        changed = changes(scanned, Seen(etag, size, version_id, last_modified_seconds))
        if changed:
            raise SourceChanged("source changed since the scan: " + ", ".join(changed))

    async def target(self, row: ObjectRow) -> HeadResult | None:
        """The target object before writing, None when the key is free.

        Whether the key is taken comes from a batched listing (see `lookup`): its answer is
        at most the linger older than a HEAD's would be, and a copy waits for its transfer
        slot after either. Only a taken key is HEADed, for the overwrite policy.
        """
        with deadline_paused():
            facts = await self.target_look.current(self._sides.target_key(row))
        if facts is None:
            return None
        return await self._sides.head_target(row)

    async def _source_facts(self, bucket: str, key: str) -> KeyFacts | None:
        sides = self._sides
        return await _key_facts(sides.src, bucket, key, sides.ctx.source_customer_key)

    async def _target_facts(self, key: str) -> KeyFacts | None:
        sides = self._sides
        return await _key_facts(
            sides.dst, sides.spec.target.bucket, key, sides.ctx.target_customer_key
        )


async def _key_facts(
    store: Side, bucket: str, key: str, customer_key: bytes | None
) -> KeyFacts | None:
    """A HEAD's answer as a look's (None: no such key)."""
    try:
        head = await store.http.head(bucket, key, sse_c=customer_key)
    except Exception as exc:
        if classify(exc).kind == "not_found":
            return None
        raise
    return KeyFacts(head.etag, head.size, int(head.last_modified.timestamp()))
