"""`ObjectPipeline`: runs the steps (looks, restore, copy, verify) for each claimed row.

A worker hands each claimed ledger row to `ObjectPipeline.process`, which decides the
object's way — the short one (GET + PUT for a plain object the listing describes) or the
long one (HEAD, restore, look at the target, copy, verify) — and returns the row's next
state. It never writes to the ledger (see the package's docstring for why).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from objmig.engine.context import MigrationContext, Side
from objmig.engine.hooks import HookClient
from objmig.engine.pipeline import outcomes
from objmig.engine.pipeline.copy import CopyStep, UploadBook
from objmig.engine.pipeline.fidelity import Fidelity
from objmig.engine.pipeline.looks import Looks, SourceChanged
from objmig.engine.pipeline.outcomes import PLAN_COPY, PLAN_IDENTICAL, ConfigurationError
from objmig.engine.pipeline.restore import restore
from objmig.engine.pipeline.sides import DEADLINE, Sides
from objmig.engine.pipeline.steps import ApplicationSteps
from objmig.engine.pipeline.verify import VerificationError, VerifyStep
from objmig.ledger.models import ObjectRow, ObjectState, StepResult
from objmig.storage.compare import (
    etags_comparable,
    first_kept_algorithm,
    looks_identical,
    metadata_difference,
)
from objmig.storage.copy import CopyResult, TargetExistsError
from objmig.storage.errors import ErrorClass, classify
from objmig.storage.filesystem import TargetSpaceLowError
from objmig.storage.ratelimit import RateLimiter
from objmig.storage.restore import needs_restore
from objmig.storage.selection import metadata_matches
from objmig.storage.types import HeadResult, multipart_part_count, version_or_none

log = logging.getLogger(__name__)

# Storage classes whose objects are always readable: no HEAD needed to rule out a restore.
# (Intelligent-Tiering may have moved an object to an archive tier, which only HEAD shows.)
_NEVER_ARCHIVED = frozenset(
    {"STANDARD", "STANDARD_IA", "ONEZONE_IA", "REDUCED_REDUNDANCY", "GLACIER_IR", "EXPRESS_ONEZONE"}
)


@dataclass
class _ContentKey:
    """A content key objects of this process are looking at or writing, one at a time."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0
    #: The content is known stored (written or found by the last holder).
    stored: bool = False


class ObjectPipeline:
    """The per-object steps, bound to one migration and one pair of S3 clients."""

    def __init__(
        self,
        context: MigrationContext,
        source: Side,
        target: Side,
        *,
        plan_only: bool = False,
        limiter: RateLimiter | None = None,
        on_park: Callable[[], None] = lambda: None,
        on_bytes: Callable[[int, int], None] | None = None,
        uploads: UploadBook | None = None,
        on_space_low: Callable[[TargetSpaceLowError], None] = lambda _: None,
    ) -> None:
        """``on_bytes(object_id, nbytes)`` hears of every byte written to the target."""
        self._sides = Sides(context, source, target, plan_only=plan_only)
        self._on_space_low = on_space_low
        # Content keys being looked at or written in this process (content-addressed
        # layouts): a second object of the same content waits, then finds it stored.
        self._contents_busy: dict[str, _ContentKey] = {}
        self._content_waiting = 0
        self._on_park = on_park
        self._in_flight = 0
        self._looks = Looks(self._sides, self._busy, on_park)
        self._copy = CopyStep(self._sides, limiter, on_bytes, uploads)
        self._verify = VerifyStep(self._sides, self._looks)
        self._fidelity = Fidelity(self._sides)
        hook = context.spec.hooks.per_object if context.spec.hooks is not None else None
        self._steps = ApplicationSteps(
            self._sides,
            HookClient(hook, context.hook_token, limit=context.connections)
            if hook is not None
            else None,
        )

    async def aclose(self) -> None:
        """Close what the steps hold open (the hook's connections)."""
        await self._steps.close()

    def _busy(self) -> int:
        """Objects in flight that are not parked in a look."""
        return self._in_flight - self.parked

    @property
    def parked(self) -> int:
        """Objects only waiting: for a batched look at a bucket, or for another object of
        their content to be stored (they hold no transfer)."""
        return self._looks.parked + self._content_waiting

    def awaits_recheck(self, row: ObjectRow) -> bool:
        """Whether `row` is copied and parked for its source re-check only."""
        return version_or_none(row.version_id) is None and self._looks.is_parked_for_recheck(row)

    def drain(self) -> None:
        """The worker is stopping: send parked looks now instead of lingering."""
        self._looks.drain()

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
        self._looks.consider()

    async def process(self, row: ObjectRow) -> StepResult:
        """Advance ``row`` by as many steps as it can go now; never raises for S3 errors.

        Raises :class:`ConfigurationError` when the failure means the migration as a whole
        cannot proceed (credentials, bucket), so the worker stops instead of failing every
        object one by one.
        """
        sides = self._sides
        try:
            result = await self._attempt(row)
            written = sides.written.get(row.id)
            if (
                written is not None
                and result.state is not ObjectState.VERIFIED
                and not sides.replaces_original(row)
            ):
                # A copy this attempt made, and that no verified row will point to.
                result = outcomes.with_write(result, sides.target_key(row), written)
            return result
        finally:
            sides.forget(row)

    async def _attempt(self, row: ObjectRow) -> StepResult:
        sides = self._sides
        try:
            async with asyncio.timeout(sides.ctx.object_timeout_seconds) as deadline:
                DEADLINE.set(deadline)
                if row.state is ObjectState.FINISHING:
                    return await self._steps.run(row, outcomes.still_verified(row))
                await self._copy.abort_stale_uploads(row)
                result = await self._advance(row)
                if result.state is ObjectState.VERIFIED:
                    return await self._steps.run(row, result)
                return result
        except SourceChanged as changed:
            return outcomes.source_changed(row, changed.why)
        except TargetSpaceLowError as low:
            # Not the object's failure: it waits for room, and the migration pauses.
            self._on_space_low(low)
            return outcomes.waiting_for_space(row, str(low))
        except TimeoutError:
            error = ErrorClass(
                "retryable",
                "ObjectTimeout",
                f"no result within objectTimeout ({sides.spec.retry.object_timeout})",
            )
            return outcomes.failure(row, error, "process", sides.spec.retry)
        except Exception as exc:
            error = classify(exc)
            if error.is_config_error:
                raise ConfigurationError(error, "process", row.key) from exc
            if error.kind == "precondition":
                return outcomes.source_changed(row, error.message, error.code)
            if error.kind == "not_found" and await self._worklist_key_gone(row):
                return self._missing(row)
            step = "verify" if isinstance(exc, VerificationError) else "copy"
            return outcomes.failure(row, error, step, sides.spec.retry)

    # -- the object's way -----------------------------------------------------------------

    async def _advance(self, row: ObjectRow) -> StepResult:
        sides = self._sides
        spec = sides.spec
        if not spec.copy_.writes:
            return await self._look(row)
        if not row.etag and row.state is not ObjectState.COPIED:
            # A worklist key the scan found missing: it may have come since, but then it is
            # not the object the scan recorded, and a catch-up round takes it up as new.
            if await self._head_or_missing(row, check=False) is None:
                return self._missing(row)
            raise SourceChanged("the worklist's key did not exist at the scan; it does now")
        if row.state is ObjectState.COPIED:
            return await self._verify_copied(row)
        looked = await self._look_at_source(row) if self._needs_source_head(row) else None
        if isinstance(looked, StepResult):
            return looked
        source = looked
        if spec.content_addressed:
            assert source is not None  # a content-addressed layout always HEADs first
            if sides.plan_only:
                return outcomes.skipped(row, PLAN_COPY)  # naming it would read it
            sides.contents[row.id] = await self._content_sha256(row, source)
            return await self._store_content(row, source)
        return await self._look_and_copy(row, source)

    async def _verify_copied(self, row: ObjectRow) -> StepResult:
        """A row copied by an attempt that ended before its verification: verify it."""
        source = await self._looks.head_source(row)
        target = await self._sides.head_target(row)
        if target is None:
            # The copy we made is gone (someone deleted it): copy again.
            return await self._copy_and_verify(row, source, create_only=True)
        return await self._verified(row, source, await self._verify.verify(row, source, target))

    async def _look_at_source(self, row: ObjectRow) -> HeadResult | StepResult:
        """HEAD the source before copying it; a StepResult when that ends the object
        (an earlier in-place copy verified, a restore, metadata rules not met)."""
        sides, looks = self._sides, self._looks
        if sides.replaces_original(row):
            current = await looks.head_source(row, check=False)
            if self._verify.is_earlier_copy(row, current):
                proof = await self._verify.verify_earlier_copy(row, current)
                return await self._verified(row, current, proof)
            looks.check_unchanged_head(row, current)
            source = current
        else:
            source = await looks.head_source(row)
        if needs_restore(source.storage_class, source.restore, source.archive_status):
            return await restore(sides, row, source)
        if sides.ctx.metadata_rules and not metadata_matches(
            source.metadata, sides.ctx.metadata_rules
        ):
            return outcomes.skipped(row, "MetadataNotMatched")
        return source

    async def _store_content(self, row: ObjectRow, source: HeadResult) -> StepResult:
        """A content-addressed object: written only where its content is not stored yet.

        Looking and writing hold the content key (one object of a content at a time in
        this process), so the objects after the first find it stored and write nothing;
        proving either happens after, side by side.
        """
        sides = self._sides
        async with self._content_busy(sides.target_key(row)) as held:
            # Stored by the object before this one: a HEAD says so at once, where a batched
            # look would wait its linger for each object of a much-shared content in turn.
            target = await (sides.head_target(row) if held.stored else self._looks.target(row))
            written = None
            if target is None and not sides.spec.verify.verify_only:
                try:
                    written = await self._copy.copy(row, source, create_only=True, provenance={})
                except TargetExistsError:
                    target = await sides.head_target(row)  # stored meanwhile by another pod
            held.stored = written is not None or target is not None
        if written is not None:
            return await self._prove_copy(row, written)
        if target is None:
            return outcomes.failed_now(row, "TargetMissing", "verifyOnly: no copy on the target")
        if target.size != source.size:
            raise VerificationError(
                "ContentSizeMismatch",
                f"{target.size} bytes stored under this content's name, {source.size} read",
            )
        return await self._verified(row, source, await self._verify.verify(row, source, target))

    async def _look_and_copy(self, row: ObjectRow, source: HeadResult | None) -> StepResult:
        """Prove an existing copy, or look at the target as the overwrite policy needs,
        then copy (`source`: its HEAD, None where the listing and the copy's own requests
        suffice)."""
        sides, looks = self._sides, self._looks
        spec = sides.spec
        if spec.verify.verify_only:
            assert source is not None
            target = await sides.head_target(row)
            if target is None:
                return outcomes.failed_now(
                    row, "TargetMissing", "verifyOnly: no copy on the target"
                )
            proof = await self._verify.verify(row, source, target)
            return await self._verified(row, source, proof)

        overwrite = spec.copy_.overwrite
        # A content-addressed layout looks first: a content stored already is not written.
        look_first = (
            multipart_part_count(row.etag) is not None
            or sides.ctx.server_side
            or spec.content_addressed
        )
        if overwrite == "never" or sides.plan_only or (overwrite != "always" and look_first):
            # Look before writing: `never` must not rely on stores honouring
            # If-None-Match, a plan writes nothing, a multipart copy would move every part
            # before a conditional completion could say the key was taken, and MinIO and
            # moto ignore If-None-Match on CopyObject (AWS honours it).
            target = await looks.target(row)
            if target is not None:
                return await self._existing_target(row, source or sides.listed(row), target)
        if sides.plan_only:
            return outcomes.skipped(row, PLAN_COPY)
        return await self._copy_and_verify(row, source, create_only=sides.create_only)

    async def _look(self, row: ObjectRow) -> StepResult:
        """copy.mode none: the object is verified where it is, once it is known to exist.

        The listing's facts suffice unless a metadata rule or a checksum is wanted, or the
        worklist said nothing of the object; then it is HEADed. What was seen is recorded
        as the row's target (the object itself), which the backfill and the hook read.
        """
        sides = self._sides
        checksum_wanted = sides.spec.backfill is not None and bool(
            sides.spec.backfill.columns.checksum
        )
        if row.etag and not sides.ctx.metadata_rules and not checksum_wanted:
            if sides.plan_only:
                return outcomes.skipped(row, PLAN_COPY)
            proof = outcomes.Proof(
                row.etag, version_or_none(row.version_id), None, None, row.last_modified
            )
            return outcomes.verified(row, sides.target_key(row), proof)
        head = await self._head_or_missing(row, check=bool(row.etag))
        if head is None:
            return self._missing(row)
        if sides.ctx.metadata_rules and not metadata_matches(
            head.metadata, sides.ctx.metadata_rules
        ):
            return outcomes.skipped(row, "MetadataNotMatched")
        if sides.plan_only:
            return outcomes.skipped(row, PLAN_COPY)  # a real run would take it up
        algorithm = first_kept_algorithm(head)
        checksum = head.whole_checksums()[algorithm] if algorithm is not None else None
        proof = outcomes.Proof(head.etag, head.version_id, checksum, checksum, head.last_modified)
        # Nothing was copied: nothing to give the copy (see `_verified`).
        return outcomes.verified(row, sides.target_key(row), proof)

    async def _head_or_missing(self, row: ObjectRow, *, check: bool) -> HeadResult | None:
        """The source's HEAD, None when there is no such object."""
        try:
            return await self._looks.head_source(row, check=check)
        except SourceChanged:
            raise
        except Exception as exc:
            if classify(exc).kind != "not_found":
                raise
            return None

    async def _worklist_key_gone(self, row: ObjectRow) -> bool:
        """Whether a worklist's key that was there at the scan is gone now (an inventory
        older than a deletion): the same as one missing at the scan, once a HEAD says so.
        A row already copied is not: its copy is in the ledger, its source may be gone."""
        if self._sides.spec.selection.manifest is None or row.state is ObjectState.COPIED:
            return False
        try:
            return await self._head_or_missing(row, check=False) is None
        except Exception:
            return False  # the failure as it was is the better report

    def _missing(self, row: ObjectRow) -> StepResult:
        """A selected object that does not exist: skipped with reason NotFound (or failed,
        with copy.missingObjects Fail), and said in the log."""
        sides = self._sides
        log.warning("s3://%s/%s does not exist", sides.source_bucket(row), row.key)
        return outcomes.missing(row, fail=sides.spec.copy_.missing_objects == "Fail")

    def _needs_source_head(self, row: ObjectRow) -> bool:
        """Whether the pipeline must HEAD the source before the copy, or the listing and
        the copy's own requests suffice.

        The listing tells ETag, size and class; the copy pins the listed ETag on every
        read (`If-Match`, `x-amz-copy-source-if-match`) and asks the store itself for what
        else it needs (see `objmig.storage.copy.route`). A HEAD first is needed for what
        the pipeline decides before copying: restores (a class that may be archived),
        metadata rules, an in-place copy's proof, plans and verify-only runs, `never`,
        and the checksum a server-side copy has its store compute (it is the source's).
        A server-side copy that keeps tags or Object Lock HEADs first too: a streamed
        copy's GET tells the source's tag count and lock, a CopyObject's answer neither,
        and verification proves the tags (of objects that have some) and the verified
        copy gets the source's lock.
        """
        sides = self._sides
        copy = sides.spec.copy_
        return (
            sides.plan_only
            or sides.spec.verify.verify_only
            or bool(sides.ctx.metadata_rules)
            or sides.replaces_original(row)
            or sides.spec.copy_.overwrite == "never"
            or not row.etag
            or row.last_modified is None
            or row.storage_class not in _NEVER_ARCHIVED
            or (sides.ctx.server_side and sides.by_checksum(None))
            or (sides.ctx.server_side and (copy.preserve_tags or copy.preserve_object_lock))
            or sides.spec.content_addressed
        )

    async def _content_sha256(self, row: ObjectRow, source: HeadResult) -> str:
        """The SHA-256 of the source's bytes, which names its copy: the checksum its store
        keeps, or one read of it (pinned to the scanned ETag)."""
        sides = self._sides
        kept = source.whole_checksums().get("SHA256")
        if kept is not None:
            return kept.removeprefix("sha256:")
        return await sides.source_sha256(row, if_match=row.etag)

    @asynccontextmanager
    async def _content_busy(self, key: str) -> AsyncIterator[_ContentKey]:
        """One object of a content key at a time in this process; waiting for it counts as
        parked, so batched looks do not wait for the objects waiting here."""
        held = self._contents_busy.setdefault(key, _ContentKey())
        held.users += 1
        try:
            if held.lock.locked():
                self._content_waiting += 1
                self._on_park()
                self._looks.consider()
                try:
                    await held.lock.acquire()
                finally:
                    self._content_waiting -= 1
            else:
                await held.lock.acquire()
            try:
                yield held
            finally:
                held.lock.release()
        finally:
            held.users -= 1
            if not held.users:
                del self._contents_busy[key]

    async def _existing_target(
        self, row: ObjectRow, source: HeadResult, target: HeadResult
    ) -> StepResult:
        """The target key is taken: keep an identical object, else follow `overwrite`."""
        sides = self._sides
        change = sides.ctx.metadata_change
        if looks_identical(source, target) and not (
            # An identical copy without the spec's metadata is rewritten, not kept.
            change and metadata_difference(source, target, change)
        ):
            if sides.plan_only:
                return outcomes.skipped(row, PLAN_IDENTICAL)
            if source.listed_only:
                # Verifying a copy objmig did not just write compares what both say.
                source = await self._looks.head_source(row)
            proof = await self._verify.verify(row, source, target)
            return await self._verified(row, source, proof)
        if sides.spec.copy_.overwrite == "never":
            return outcomes.skipped(row, "TargetExistsDifferent")
        if sides.plan_only:
            return outcomes.skipped(row, PLAN_COPY)
        return await self._copy_and_verify(row, source, create_only=False)

    async def _copy_and_verify(
        self, row: ObjectRow, source: HeadResult | None, *, create_only: bool
    ) -> StepResult:
        """Copy, then prove the copy. `source` None: the copy reads the source itself.

        Only the copy holds a transfer slot: HEADs before it and the verification after it
        wait on round trips, not bandwidth, and overlap with the next objects' transfers.
        """
        sides = self._sides
        provenance: dict[str, str] = {}
        if source is not None and sides.replaces_original(row):
            provenance = await self._verify.pin_original(row, source)
        try:
            result = await self._copy.copy(row, source, create_only, provenance)
        except TargetExistsError as taken:
            existing = await sides.head_target(row)
            if existing is None:
                raise  # gone again already; the retry copies
            return await self._existing_target(row, taken.source, existing)
        return await self._prove_copy(row, result)

    async def _prove_copy(self, row: ObjectRow, result: CopyResult) -> StepResult:
        """Prove the copy just made: by its write's answer where that suffices
        (`VerifyStep.copy_as_written`)."""
        target = await self._verify.copy_as_written(row, result)
        try:
            proof = await self._verify.verify(row, result.source, target, written=result)
        except VerificationError as failed:
            if failed.code != "ETagMismatch" or not result.source.listed_only:
                raise
            # Copied on the listing's word, which does not tell the source's encryption:
            # under SSE-KMS or SSE-C its ETag is no MD5. A HEAD tells; checksums decide.
            source = await self._looks.head_source(row)
            if etags_comparable(source, target):
                raise
            target = await self._verify.read_copy(row)
            proof = await self._verify.verify(row, source, target, written=result)
            return await self._verified(row, source, proof)
        return await self._verified(row, result.source, proof)

    async def _verified(
        self, row: ObjectRow, source: HeadResult, proof: outcomes.Proof
    ) -> StepResult:
        """The row is done: its copy is proven. Before it says so, the copy gets what it
        keeps of the source besides bytes and metadata (a copy objmig did not write, for
        verifyOnly, or one that replaced its source in place, is left as it is)."""
        sides = self._sides
        if not sides.spec.verify.verify_only and not sides.replaces_original(row):
            if source.listed_only and sides.spec.copy_.preserve_object_lock:
                # The listing tells no Object Lock; a HEAD does.
                source = await self._looks.head_source(row)
            await self._fidelity.keep(row, source, proof.target_version_id)
        return outcomes.verified(row, sides.target_key(row), proof, sides.not_kept.get(row.id, ()))
