"""Carrying out a MigrationCleanup: source deletion behind the gate, or leftover removal.

``what: source`` — every verified, cut-over row of the migration is planned; workers claim
planned items with leases, HEAD the source and the target, ask the gate
(:mod:`objmig.engine.deletion`) per object, and delete the approved ones with
DeleteObjects (at most 1000 keys a call, the exact version id that was copied). Every
outcome — deleted, skipped with its reason, failed — is recorded per object in the ledger.

``what: leftovers`` — aborts objmig's incomplete multipart uploads (by the ids the ledger
recorded) and removes target objects written by attempts that ended failed or
source-changed (by the ETag the ledger recorded of the write), never an object a verified
row points to.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from objmig.api.migration import ObjectMeta, ObjectMigration, ObjectMigrationSpec
from objmig.api.migration_cleanup import (
    MigrationCleanup,
    MigrationCleanupSpec,
    MigrationCleanupStatus,
)
from objmig.api.types import parse_duration
from objmig.engine.claim_loop import worker_identity
from objmig.engine.cleanup_lifecycle import CleanupObserved, decide_cleanup
from objmig.engine.cleanup_status import CleanupStatusInputs, build_cleanup_status
from objmig.engine.context import MigrationContext, Side
from objmig.engine.deletion import (
    MigrationFacts,
    Verdict,
    migration_verdict,
    object_verdict,
    unmet_gates,
)
from objmig.engine.group_gate import GroupGate
from objmig.engine.secrets import ConfigMapSource, SecretSource
from objmig.ledger import (
    CleanupOutcome,
    Ledger,
    Leftovers,
    MigrationState,
    ObjectRow,
    ObjectState,
)
from objmig.storage.bucket import (
    abort_multipart_upload,
    delete_objects,
    list_multipart_uploads,
    upload_bytes,
)
from objmig.storage.errors import classify
from objmig.storage.filesystem import FileStore, UnsafeKeyError
from objmig.storage.types import MIGRATION_METADATA_KEY, DeleteResult, HeadResult

log = logging.getLogger(__name__)

#: Objects HEADed and decided per claim; one DeleteObjects call per claim at most.
BATCH = 200


def migration_facts(
    state: MigrationState,
    spec: MigrationCleanupSpec,
    *,
    same_bucket: bool = False,
    name: str = "",
    directory: bool = False,
) -> MigrationFacts:
    """The gate's view of a migration, from its ledger bookkeeping (and, for the per-object
    gate, whether its source and target are one bucket and the name its copies carry).

    A cleanup of one bucket (``spec.bucket``) quotes that bucket's digest."""
    cutover = state.cutover
    verification = state.verification
    digest = verification.digest if verification is not None else None
    if spec.bucket is not None:
        bucket = verification.buckets.get(spec.bucket) if verification is not None else None
        digest = bucket.digest if bucket is not None else None
    return MigrationFacts(
        cut_over_at=cutover.at if cutover is not None else None,
        # A rollback under way counts: it may be pointing applications back at the source.
        rolled_back=state.rolled_back or state.rollback_started,
        digest=digest,
        same_bucket=same_bucket,
        name=name,
        bucket=spec.bucket or "",
        aliases_possible=not directory,
    )


async def take_up_spec(ledger: Ledger, cleanup_id: int, spec: MigrationCleanupSpec) -> int:
    """Store the cleanup's spec for its passes; returns the number of the current pass.

    A spec that differs from the one the last pass ran with (a dry run made real, a higher
    limit, an approval added) starts a new pass: what was not deleted is decided again,
    and the cleanup is no longer complete. Both drivers call this before a pass.
    """
    state = await ledger.get_cleanup_state(cleanup_id)
    wire = spec.to_wire()
    if state.spec == wire:
        return state.pass_
    if state.spec is None:
        await ledger.update_cleanup_state(cleanup_id, spec=wire)
        return state.pass_
    await ledger.reopen_cleanup(cleanup_id)
    current = state.pass_ + 1
    await ledger.update_cleanup_state(
        cleanup_id, spec=wire, pass_=current, completed_at=None, failed=None, summary=None
    )
    return current


@dataclass(frozen=True)
class CleanupRun:
    """What one pass of a cleanup did."""

    deleted: int = 0
    skipped: int = 0
    failed: int = 0
    gate: Verdict | None = None
    would_delete: int = 0  # a dry run's "deleted"
    limit_reached: bool = False
    dry_run: bool = False

    @property
    def summary(self) -> str:
        """One line for the Complete condition."""
        done = (
            f"dry run: {self.would_delete} would be deleted"
            if self.dry_run
            else f"{self.deleted} deleted"
        )
        text = f"{done}, {self.skipped} skipped, {self.failed} failed"
        return text + ("; stopped at spec.limit" if self.limit_reached else "")


async def _head(
    store: Side, bucket: str, key: str, version_id: str | None, sse_c: bytes | None
) -> HeadResult | None:
    try:
        return await store.http.head(bucket, key, version_id=version_id, sse_c=sse_c)
    except Exception as exc:
        if classify(exc).kind == "not_found":
            return None
        raise


async def delete_sources(
    ledger: Ledger,
    cleanup_id: int,
    migration_id: int,
    spec: MigrationCleanupSpec,
    context: MigrationContext,
    *,
    stop: asyncio.Event | None = None,
    now: datetime | None = None,
) -> CleanupRun:
    """Plan, gate and delete the migrated source objects; returns what this pass did."""
    stop = stop or asyncio.Event()
    state = await ledger.get_state(migration_id)
    facts = migration_facts(
        state,
        spec,
        same_bucket=context.same_bucket,
        name=context.name,
        directory=context.source_root is not None or context.target_root is not None,
    )
    gate = migration_verdict(spec, facts, now or datetime.now(UTC))
    if not gate.delete:
        return CleanupRun(gate=gate)
    if not spec.dry_run and not await ledger.start_cleanup(migration_id):
        # A rollback began (or finished) since the gates were read.
        return CleanupRun(
            gate=Verdict(False, "RolledBack", "the migration's cutover is being rolled back")
        )
    await ledger.plan_cleanup(cleanup_id, migration_id, bucket=spec.bucket)
    owner = worker_identity()
    target_spec = context.spec.target
    deleted = skipped = failed = would_delete = 0
    limit_reached = False
    async with context.clients() as (source, target):
        groups = GroupGate(context, target) if context.spec.groups is not None else None
        while not stop.is_set():
            room = BATCH
            if spec.limit is not None:
                done = await ledger.cleanup_deleted(cleanup_id)
                room = min(room, spec.limit - done)
                if room <= 0:
                    limit_reached = True
                    break
            rows = await ledger.claim_cleanup(cleanup_id, owner, room)
            if not rows:
                break
            moment = now or datetime.now(UTC)
            heads = await asyncio.gather(
                *(
                    asyncio.gather(
                        _head(
                            source,
                            context.source_bucket(r.bucket),
                            r.key,
                            r.version_id or None,
                            context.source_customer_key,
                        ),
                        _head(
                            target,
                            target_spec.bucket,
                            r.target_key or r.key,
                            None,
                            context.target_customer_key,
                        ),
                    )
                    for r in rows
                )
            )
            outcomes: list[CleanupOutcome] = []
            approved: list[ObjectRow] = []
            for row, (source_head, target_head) in zip(rows, heads, strict=True):
                verdict = object_verdict(spec, facts, row, source_head, target_head, moment)
                if verdict.delete and groups is not None:
                    verdict = await groups.verdict(row) or verdict
                if not verdict.delete:
                    outcomes.append(
                        CleanupOutcome(row.id, "skipped", verdict.reason, verdict.message)
                    )
                elif spec.dry_run:
                    outcomes.append(
                        CleanupOutcome(row.id, "would_delete", "DryRun", "every gate holds")
                    )
                else:
                    approved.append(row)
            if approved:
                results = await _delete(source, context, approved)
                for row, result in zip(approved, results, strict=True):
                    if result.deleted:
                        outcomes.append(CleanupOutcome(row.id, "deleted", "SourceDeleted", ""))
                    else:
                        outcomes.append(
                            CleanupOutcome(
                                row.id,
                                "failed",
                                result.error_code or "DeleteFailed",
                                result.error_message or "",
                            )
                        )
            await ledger.record_cleanup(cleanup_id, owner, outcomes)
            deleted += sum(1 for o in outcomes if o.outcome == "deleted")
            would_delete += sum(1 for o in outcomes if o.outcome == "would_delete")
            skipped += sum(1 for o in outcomes if o.outcome == "skipped")
            failed += sum(1 for o in outcomes if o.outcome == "failed")
    return CleanupRun(
        deleted, skipped, failed, gate, would_delete, limit_reached, dry_run=spec.dry_run
    )


async def _delete(
    source: Side, context: MigrationContext, rows: list[ObjectRow]
) -> list[DeleteResult]:
    """Delete the sources of `rows`, in row order: files one by one, objects with one
    DeleteObjects per bucket (the exact version that was copied)."""
    if isinstance(source, FileStore):
        return [
            DeleteResult(row.key, None, await source.delete(row.key), "NotFound") for row in rows
        ]
    results: dict[int, DeleteResult] = {}
    by_bucket: dict[str, list[ObjectRow]] = {}
    for row in rows:
        by_bucket.setdefault(context.source_bucket(row.bucket), []).append(row)
    for bucket, batch in by_bucket.items():
        answers = await delete_objects(
            await source.sdk(),
            bucket,
            # "" means an unversioned bucket.
            [(row.key, row.version_id or None) for row in batch],
        )
        results.update({row.id: answer for row, answer in zip(batch, answers, strict=True)})
    return [results[row.id] for row in rows]


@dataclass(frozen=True)
class LeftoverRun:
    """What a leftovers pass found and removed (or, in a dry run, would remove)."""

    uploads_aborted: int = 0
    objects_deleted: int = 0
    objects_kept: int = 0
    bytes_freed: int = 0


async def remove_leftovers(
    ledger: Ledger,
    migration_id: int,
    spec: MigrationCleanupSpec,
    context: MigrationContext,
    *,
    now: datetime | None = None,
) -> LeftoverRun:
    """Abort objmig's stale uploads and delete what failed attempts wrote to the target.

    Only what is known to be objmig's: uploads whose ids the ledger recorded (and, for
    uploads started before their id could be recorded, one on a key of the migration
    begun since it existed), and target objects a failed attempt wrote, by the ETag (and
    version id) the ledger recorded of that write, or, for rows recorded before objmig
    recorded writes, by the migration's marker. Never a key a verified row points to, never
    anything younger than `minAge`, never anything when `dryRun`.
    """
    moment = now or datetime.now(UTC)
    min_age = parse_duration(spec.min_age)
    target_spec = context.spec.target
    verified_targets: set[str] = set()
    attempts: list[ObjectRow] = []
    async for row in ledger.iter_rows(migration_id):
        if not row.target_key:
            continue
        if context.in_place(row.key, row.target_key):
            # An object copied onto itself is never a leftover, it may be the only copy;
            # nor is an upload to its key, which may be an application's.
            continue
        if row.state in (ObjectState.VERIFIED, ObjectState.DELETED):
            verified_targets.add(row.target_key)
        elif row.state in (ObjectState.FAILED, ObjectState.SOURCE_CHANGED):
            attempts.append(row)
    known_targets = verified_targets | {row.target_key for row in attempts if row.target_key}
    started = (await ledger.migration_created_at(migration_id)) or moment
    aborted = deleted = kept = freed = 0
    async with context.clients() as (_, target):
        if isinstance(target, FileStore):
            stale_files = sorted(
                {row.target_key for row in attempts if row.target_key} - verified_targets
            )
            return await _tree_leftovers(target, context, spec, stale_files, started, moment)
        client = await target.sdk()
        recorded = {u.upload_id: u for u in await ledger.open_uploads(migration_id)}
        async for upload in list_multipart_uploads(client, target_spec.bucket, target_spec.prefix):
            mine = recorded.pop(upload.upload_id, None)
            initiated = upload.initiated or (mine.started_at if mine is not None else None)
            # Recorded, or begun on a key the migration writes since it existed (its id lost
            # with a kill between the upload's start and its record, or with the answer).
            ours = mine is not None or (
                upload.key in known_targets and initiated is not None and initiated >= started
            )
            if not ours or initiated is None or moment - initiated < min_age:
                continue
            freed += await upload_bytes(client, target_spec.bucket, upload.key, upload.upload_id)
            if not spec.dry_run:
                await abort_multipart_upload(
                    client, target_spec.bucket, upload.key, upload.upload_id
                )
                if mine is not None:
                    await ledger.uploads_ended(mine.object_id, [upload.upload_id])
            aborted += 1
        if not spec.dry_run:
            # Recorded, but the store lists them no more (completed or aborted meanwhile).
            for gone in recorded.values():
                await ledger.uploads_ended(gone.object_id, [gone.upload_id])
        doomed: list[tuple[str, str | None]] = []
        looked: set[tuple[str, str | None]] = set()
        for row in attempts:
            assert row.target_key is not None
            # A content key (content-addressed layouts) is the target of every object of
            # that content, and of other buckets' objects: looked at, and deleted, once.
            where = (row.target_key, row.target_version_id)
            if row.target_key in verified_targets or where in looked:
                continue
            looked.add(where)
            head = await _head(
                target,
                target_spec.bucket,
                row.target_key,
                row.target_version_id,
                context.target_customer_key,
            )
            if head is None:
                continue
            if not _attempt_wrote(row, head, context.name, started) or (
                moment - head.last_modified < min_age
            ):
                kept += 1
                continue
            doomed.append((row.target_key, row.target_version_id))
            freed += head.size
        if doomed and not spec.dry_run:
            results = await delete_objects(client, target_spec.bucket, doomed)
            deleted = sum(1 for r in results if r.deleted)
        else:
            deleted = len(doomed)
    return LeftoverRun(aborted, deleted, kept, freed)


def _attempt_wrote(row: ObjectRow, head: HeadResult, migration: str, started: datetime) -> bool:
    """Whether the object on the target is the one a failed attempt of `row` wrote.

    The ETag the attempt's write answered, as the ledger recorded it (the version id too,
    asked for by the HEAD); rows of a ledger from before writes were recorded fall back to
    the migration's mark, on an object written since the migration existed (a reused name
    must not claim an older run's copies; at the whole seconds a HEAD shows).
    """
    if row.target_etag is not None:
        return head.etag == row.target_etag
    return head.metadata.get(MIGRATION_METADATA_KEY) == migration and (
        head.last_modified >= started.replace(microsecond=0)
    )


async def _tree_leftovers(
    target: FileStore,
    context: MigrationContext,
    spec: MigrationCleanupSpec,
    stale: list[str],
    started: datetime,
    moment: datetime,
) -> LeftoverRun:
    """A directory's leftovers: temporaries of writers that died, and files of failed
    attempts that this migration's index entry says it wrote (since it began, and at
    least minAge ago, by the time the file was put in place)."""
    min_age = parse_duration(spec.min_age)
    removed = 0 if spec.dry_run else await target.sweep()
    deleted = kept = 0
    for key in stale:
        try:
            found = await asyncio.to_thread(target.tree.stat, key)
        except UnsafeKeyError:
            continue  # never written
        if found is None:
            continue
        entry = await asyncio.to_thread(target.http.entry, key, found)
        placed = datetime.fromtimestamp(found.st_ctime, UTC)
        if (
            entry is None
            or entry.migration != context.name
            or placed < started
            or moment - placed < min_age
        ):
            kept += 1
            continue
        deleted += 1 if spec.dry_run else int(await target.delete(key))
    return LeftoverRun(removed, deleted, kept)


async def cleanup_status(
    ledger: Ledger,
    cleanup_id: int,
    migration_id: int,
    spec: MigrationCleanupSpec,
    previous: MigrationCleanupStatus | None = None,
    *,
    generation: int | None = None,
    now: datetime | None = None,
    window: int = 50,
) -> MigrationCleanupStatus:
    """Gather a cleanup's ledger view and build its status (used by both drivers)."""
    moment = now or datetime.now(UTC)
    facts = migration_facts(await ledger.get_state(migration_id), spec)
    items, truncated = await ledger.cleanup_window(cleanup_id, window)
    return build_cleanup_status(
        CleanupStatusInputs(
            spec=spec,
            generation=generation,
            unmet=unmet_gates(spec, facts, moment) if spec.what == "source" else [],
            counts=await ledger.cleanup_counts(cleanup_id),
            window=items,
            window_truncated=truncated,
            state=await ledger.get_cleanup_state(cleanup_id),
            now=moment,
        ),
        previous or MigrationCleanupStatus(),
    )


async def run_cleanup(
    ledger: Ledger,
    cleanup: MigrationCleanup,
    secrets: SecretSource,
    *,
    config_maps: ConfigMapSource | None = None,
    stop: asyncio.Event | None = None,
    now: datetime | None = None,
) -> MigrationCleanupStatus:
    """Decide, and run a pass of the cleanup in this process when one is due.

    ``objmig cleanup`` drives a cleanup with this, and a cleanup Job's pod runs it too (the
    operator decided the same before it created the Job; deciding again here re-checks).
    """
    namespace = cleanup.metadata.namespace
    migration_name = f"{namespace}/{cleanup.spec.migration_ref.name}"
    migration_id = await ledger.find_migration(migration_name)
    if migration_id is None:
        raise LookupError(f"no migration {migration_name!r} in the ledger")
    state = await ledger.get_state(migration_id)
    migration = ObjectMigration(
        metadata=ObjectMeta(name=cleanup.spec.migration_ref.name, namespace=namespace),
        spec=ObjectMigrationSpec.model_validate(state.spec),
    )
    context = MigrationContext.resolve(migration, secrets, config_maps)
    cleanup_id = await ledger.ensure_cleanup(
        f"{namespace}/{cleanup.metadata.name}", cleanup.metadata.uid or "", migration_id
    )
    spec = cleanup.spec
    await take_up_spec(ledger, cleanup_id, spec)
    decision = decide_cleanup(
        CleanupObserved(
            spec=spec,
            facts=migration_facts(state, spec),
            state=await ledger.get_cleanup_state(cleanup_id),
            now=now or datetime.now(UTC),
        )
    )
    if decision.run_pass:
        await _run_pass(ledger, cleanup_id, migration_id, spec, context, stop=stop, now=now)
    return await cleanup_status(ledger, cleanup_id, migration_id, spec, now=now)


async def _run_pass(
    ledger: Ledger,
    cleanup_id: int,
    migration_id: int,
    spec: MigrationCleanupSpec,
    context: MigrationContext,
    *,
    stop: asyncio.Event | None,
    now: datetime | None,
) -> None:
    """One pass: delete what the gates allow (or sweep leftovers) and record how it ended."""
    if spec.what == "source":
        run = await delete_sources(
            ledger, cleanup_id, migration_id, spec, context, stop=stop, now=now
        )
        if run.gate is not None and run.gate.delete and not (stop and stop.is_set()):
            await ledger.update_cleanup_state(
                cleanup_id,
                completed_at=now or datetime.now(UTC),
                summary=run.summary,
            )
    else:
        leftovers = await remove_leftovers(ledger, migration_id, spec, context, now=now)
        await ledger.update_cleanup_state(
            cleanup_id,
            leftovers=Leftovers(
                uploads_aborted=leftovers.uploads_aborted,
                objects_deleted=leftovers.objects_deleted,
                objects_kept=leftovers.objects_kept,
                bytes_freed=leftovers.bytes_freed,
            ),
            completed_at=now or datetime.now(UTC),
            summary=f"{leftovers.uploads_aborted} uploads aborted, "
            f"{leftovers.objects_deleted} target objects removed, "
            f"{leftovers.bytes_freed} bytes freed"
            + (" (dry run: nothing changed)" if spec.dry_run else ""),
        )
