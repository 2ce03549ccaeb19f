"""The ledger writes and reads both drivers make around :func:`objmig.engine.lifecycle.decide`.

Taking up a spec, recording what a decision implies (pause, failure, rounds, catch-up
results), carrying out a cutover or a rollback with its failure recorded, the verification
digest, and gathering a status: written once here, so ``objmig run`` and the operator cannot
drift apart. What only one driver can do (Jobs, Events, a progress display) stays with it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Literal

from objmig.api.conditions import Reason
from objmig.api.migration import ObjectMigrationSpec, ObjectMigrationStatus
from objmig.engine.cutover import ConfigMapWriter, perform_cutover, perform_rollback
from objmig.engine.lifecycle import Decision, Observed
from objmig.engine.pipeline.outcomes import HOOK_PENDING, NOT_FOUND, PLAN_REASONS
from objmig.engine.policy import CatchUp, Gate
from objmig.engine.secrets import SecretSource
from objmig.engine.status import FINISHED, Rates, StatusInputs, build_status, tally
from objmig.engine.status_stores import BUCKETS_SHOWN
from objmig.ledger import (
    BucketDigest,
    ContentCounts,
    Counts,
    CutoverRecord,
    Ledger,
    MigrationState,
    ObjectState,
    Problem,
    RetryRecord,
    Rounds,
    StoreFinding,
    VerificationRecord,
)
from objmig.storage.errors import describe
from objmig.storage.features import StoreFeatures


async def take_up_spec(
    ledger: Ledger,
    migration_id: int,
    spec: ObjectMigrationSpec,
    *,
    generation: int | None = None,
) -> MigrationState:
    """Store the spec the workers run; a spec taken up anew retries a failed migration.

    The operator calls this when the resource's generation changed (the user edited the
    spec), ``objmig run`` on every run. A failure is cleared and the wave counted on, so
    the stages start again with fresh runs. A final check made before no longer counts
    (see `CatchUp.checked_for_cutover`): the migration waited for the user, and the source
    may have changed meanwhile. Leaving a dry run requeues its plan: a dry run
    ends each row as skipped with what a real run would do (`PLAN_REASONS`), and a real
    run must not mistake them for finished work (the cutover gate counts skipped rows).
    Likewise leaving a verify-only run requeues the objects it found without their hook.
    """
    state = await ledger.get_state(migration_id)
    if spec.per_object_hook and not spec.verify.verify_only:
        # A verify-only run left the objects whose hook is not done skipped (HookPending):
        # a real run calls their hooks.
        await ledger.requeue(migration_id, [ObjectState.SKIPPED], skip_reasons=[HOOK_PENDING])
    if state.catch_up.final_check_round is not None and not state.cut_over:
        state = await ledger.update_state(migration_id, catch_up=CatchUp.of(state).forgotten())
    if state.spec is not None and state.spec != spec.to_wire():
        # A changed spec is audited anew (an ignore glob added), and free space measured
        # anew (the way to resume after making room, where no worker runs to see it).
        await ledger.update_state(migration_id, audit=None, target_space=None)
    if state.failed is None:
        updated = await ledger.update_state(
            migration_id, spec=spec.to_wire(), generation=generation, dry_run=spec.dry_run
        )
    else:
        rounds = state.rounds
        updated = await ledger.update_state(
            migration_id,
            spec=spec.to_wire(),
            generation=generation,
            dry_run=spec.dry_run,
            failed=None,
            rounds=Rounds(round=rounds.round, wave=rounds.wave + 1),
        )
    if state.dry_run and not spec.dry_run:
        # After the state says so: a dry-run worker still running records a plan only
        # while the migration is a dry run (`Ledger.record(..., only_while_dry_run=True)`),
        # so what it recorded before is requeued here, and nothing after. A worklist key
        # the plan found missing is looked for again: it may exist by now.
        await ledger.requeue(
            migration_id, [ObjectState.SKIPPED], skip_reasons=[*PLAN_REASONS, NOT_FOUND]
        )
    return updated


async def retry_failed(
    ledger: Ledger,
    migration_id: int,
    *,
    keys: Sequence[str] | None = None,
    reason: str = "",
    request: str | None = None,
) -> RetryRecord | Problem:
    """Return failed objects (all, or those of ``keys``) to pending with fresh attempts.

    Recorded in the ledger (``retried``: when, how many, why, and the request answered).
    Refused once the migration has cut over: applications read the target by then, and
    an object copied now would not be cut over with the rest (roll back first). Objects
    whose source changed are not retried: a catch-up re-scan takes them up with what the
    source holds now.
    """
    state = await ledger.get_state(migration_id)
    if state.cut_over:
        return Problem(
            reason=Reason.RETRY_REFUSED,
            message="the migration has cut over: its failed objects stay as they are "
            "(set spec.cutover.rollback to retry them before a new cutover)",
        )
    count = await ledger.requeue(migration_id, [ObjectState.FAILED], keys=keys)
    previous = state.retried.count if state.retried is not None else 0
    record = RetryRecord(
        at=datetime.now(UTC), objects=count, reason=reason, request=request, count=previous + 1
    )
    await ledger.update_state(migration_id, retried=record)
    return record


async def record_failure(ledger: Ledger, migration_id: int, reason: str, message: str) -> None:
    """Stop the migration with a reason and message for its Failed condition."""
    await ledger.update_state(migration_id, failed=Problem(reason=reason, message=message))


async def record_decision(
    ledger: Ledger, migration_id: int, observed: Observed, decision: Decision
) -> None:
    """The bookkeeping a decision implies, before its driver acts on the rest."""
    state = observed.state
    if decision.fail is not None:
        await ledger.update_state(migration_id, failed=decision.fail)
    if decision.pause is not None and (
        state.paused is None or state.paused.reason != decision.pause.reason
    ):
        await ledger.update_state(migration_id, paused=decision.pause)
    if decision.clear_pause:
        await ledger.update_state(migration_id, paused=None)
    rounds = state.rounds
    if decision.next_wave:
        await ledger.update_state(
            migration_id, rounds=Rounds(round=rounds.round, wave=rounds.wave + 1)
        )
    if decision.next_round:
        await ledger.update_state(migration_id, rounds=Rounds(round=rounds.round + 1, wave=0))
    catch_up = CatchUp.of(state)
    if decision.final_check:
        await ledger.update_state(migration_id, catch_up=catch_up.final_check(rounds.round + 1))
    if decision.catch_up_result is not None:
        await ledger.update_state(
            migration_id, catch_up=catch_up.recorded(*decision.catch_up_result)
        )


def stopped_half_way(step: Literal["cutover", "rollback"], error: Exception, retry: str) -> Problem:
    """The failure of a cutover or rollback that raised.

    ``retry`` says how this driver tries again ("edit the spec", "run again"). What the
    step did stays done and recorded, for the next attempt to finish (or, for a cutover,
    a rollback to undo; a half-reverted cutover keeps rollbackStarted, which keeps
    cleanups out).
    """
    undo = ", or set spec.cutover.rollback: true to undo it" if step == "cutover" else ""
    message = (
        f"the {step} stopped half-way ({describe(error)}); what was done is kept: fix the "
        f"cause and {retry} to finish it{undo}"
    )
    reason = Reason.CUTOVER_FAILED if step == "cutover" else Reason.ROLLBACK_FAILED
    return Problem(reason=reason, message=message)


async def cut_over(
    ledger: Ledger,
    migration_id: int,
    spec: ObjectMigrationSpec,
    secrets: SecretSource,
    config_maps: ConfigMapWriter | None,
    *,
    retry: str,
) -> CutoverRecord | Problem:
    """Perform the cutover; the record of what it did, or the failure recorded when it raised.

    The digest a cleanup approval quotes is taken right before: it must describe what is cut
    over, and a catch-up may have re-copied objects without changing how many are verified.
    """
    await record_verification(ledger, migration_id)
    try:
        return await perform_cutover(ledger, migration_id, spec, secrets, config_maps)
    except Exception as error:
        problem = stopped_half_way("cutover", error, retry)
        await ledger.update_state(migration_id, failed=problem)
        return problem


async def roll_back(
    ledger: Ledger,
    migration_id: int,
    spec: ObjectMigrationSpec,
    secrets: SecretSource,
    config_maps: ConfigMapWriter | None,
    *,
    retry: str,
) -> Gate | Problem:
    """Revert the cutover; the rollback gate's verdict, or the failure recorded when it raised."""
    try:
        return await perform_rollback(ledger, migration_id, spec, secrets, config_maps)
    except Exception as error:
        problem = stopped_half_way("rollback", error, retry)
        await ledger.update_state(migration_id, failed=problem)
        return problem


async def record_store_findings(
    ledger: Ledger, migration_id: int, features: Iterable[StoreFeatures]
) -> None:
    """Record what the stores were found to lack since the last call (for `Degraded`).

    A finding stays unreported until the ledger has it, so a failed write is tried again
    by the next call."""
    stores = {id(f): f for f in features}  # one store may be both sides
    found = {id(store): store.unreported() for store in stores.values()}
    if not any(found.values()):
        return
    await ledger.record_store_findings(
        migration_id,
        [
            StoreFinding(store=f.store, aspect=str(f.aspect), message=f.message)
            for batch in found.values()
            for f in batch
        ],
    )
    for key, store in stores.items():
        store.reported(found[key])


async def record_verification(ledger: Ledger, migration_id: int) -> str:
    """Compute the verification digest over the verified rows (and each bucket's) and
    record it; return the migration's."""
    digest = await ledger.verification_digest(migration_id)
    value = f"sha256:{digest.sha256}"
    await ledger.update_state(
        migration_id,
        verification=VerificationRecord(
            digest=value,
            objects=digest.objects,
            bytes=digest.bytes,
            buckets={
                name: BucketDigest(digest=f"sha256:{d.sha256}", objects=d.objects, bytes=d.bytes)
                for name, d in digest.buckets.items()
            },
        ),
    )
    return value


async def refresh_verification(ledger: Ledger, migration_id: int, counts: Counts) -> None:
    """Record the digest again when the verified objects are all in and it is out of date."""
    state = await ledger.get_state(migration_id)
    view = tally(counts)
    recorded = state.verification.objects if state.verification is not None else None
    if not view.outstanding and state.scan.completed_at is not None and recorded != view.verified:
        await record_verification(ledger, migration_id)


def has_application_steps(spec: ObjectMigrationSpec) -> bool:
    """Whether the status counts the application's steps and missing objects (one scan of
    the rows each time: only specs with a backfill, a hook, no copy or a worklist, whose
    keys may name nothing, pay for it)."""
    return (
        spec.backfill is not None
        or spec.per_object_hook
        or not spec.copy_.writes
        or spec.selection.manifest is not None
    )


class RateMeter:
    """Bytes and objects per second over a sliding window of samples.

    It is given totals that only grow in a healthy run (bytes written, objects finished);
    a total that shrinks (objects re-queued by a catch-up, a retry) reads as no progress,
    never as a negative rate.
    """

    def __init__(self, window: float = 20.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window
        self._clock = clock
        self._samples: deque[tuple[float, int, int]] = deque()

    def sample(self, moved_bytes: int, done_objects: int) -> Rates:
        """Record the totals now; return the rates over the window."""
        now = self._clock()
        self._samples.append((now, moved_bytes, done_objects))
        while len(self._samples) > 2 and now - self._samples[0][0] > self._window:
            self._samples.popleft()
        first = self._samples[0]
        elapsed = now - first[0]
        if elapsed <= 0:
            return Rates()
        return Rates(
            bytes_per_second=max(0.0, (moved_bytes - first[1]) / elapsed),
            objects_per_second=max(0.0, (done_objects - first[2]) / elapsed),
        )


async def compute_status(
    ledger: Ledger,
    migration_id: int,
    spec: ObjectMigrationSpec,
    previous: ObjectMigrationStatus | None = None,
    rates: RateMeter | None = None,
    *,
    window: int = 50,
    generation: int | None = None,
    counts: Counts | None = None,
    scan_starting: bool = False,
) -> ObjectMigrationStatus:
    """Gather the ledger's view of a migration and build its status (used by both drivers).

    ``counts`` spares a second read when the caller has just taken them; ``scan_starting``
    says the driver is starting a scan that has not reported itself yet.
    """
    if counts is None:
        counts = await ledger.counts(migration_id)
    state = await ledger.get_state(migration_id)
    rows, truncated = await ledger.window(migration_id, window)
    activity = await ledger.activity(migration_id)
    done_objects = sum(counts.state(s).objects for s in FINISHED)
    measured = rates.sample(activity.bytes_moved, done_objects) if rates else Rates()
    plan_reasons = plan_classes = steps = None
    if spec.dry_run:
        plan_reasons = await ledger.breakdown(migration_id, "skip_reason")
        plan_classes = await ledger.breakdown(migration_id, "storage_class")
    if has_application_steps(spec):
        steps = await ledger.step_counts(
            migration_id, missing_reason=NOT_FOUND, hook_pending_reason=HOOK_PENDING
        )
    # Only etag mode has objects that fell back; in the others every row is in the index.
    etag_unproven = await ledger.etag_unproven(migration_id) if spec.verify.mode == "etag" else None
    buckets = None
    if spec.several_buckets:
        buckets = await ledger.bucket_counts(migration_id, limit=BUCKETS_SHOWN + 1)
    content = None
    if spec.content_addressed:
        content = await _content_counts(ledger, migration_id, counts)
    return build_status(
        StatusInputs(
            spec=spec,
            generation=generation,
            counts=counts,
            state=state,
            window=rows,
            window_truncated=truncated,
            activity=activity,
            rates=measured,
            scan_starting=scan_starting,
            now=datetime.now(UTC),
            plan_reasons=plan_reasons,
            plan_classes=plan_classes,
            steps=steps,
            etag_unproven=etag_unproven,
            buckets=buckets,
            content=content,
            rates_measured=rates is not None,
        ),
        previous or ObjectMigrationStatus(),
    )


#: Dedup counts read the migration's verified rows: taken again at most this often while
#: objects are being verified (and at once when the count of verified objects settles).
_CONTENT_COUNTS_SECONDS = 15.0
_content_counts_taken: dict[int, tuple[float, int, ContentCounts]] = {}


async def _content_counts(ledger: Ledger, migration_id: int, counts: Counts) -> ContentCounts:
    """Deduplication so far, read from the ledger at a bounded rate (it costs a pass over
    the verified rows; the other counts cost nothing)."""
    verified = (
        counts.state(ObjectState.VERIFIED).objects + counts.state(ObjectState.DELETED).objects
    )
    outstanding = sum(counts.state(s).objects for s in (ObjectState.PENDING, ObjectState.RESTORING))
    now = time.monotonic()
    taken = _content_counts_taken.get(migration_id)
    if taken is not None:
        at, seen, found = taken
        if seen == verified or (outstanding and now - at < _CONTENT_COUNTS_SECONDS):
            return found
    found = await ledger.content_counts(migration_id)
    _content_counts_taken[migration_id] = (now, verified, found)
    return found
