"""How one attempt at an object ends: the row's next state, as a `StepResult`. Pure.

Also the dry-run skip reasons (what a real run would do with the object), which the status
and the bookkeeping read back, and `ConfigurationError`, the one outcome that stops the
whole run instead of ending one object.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from objmig.api.types import parse_duration
from objmig.engine.policy import backoff_delay
from objmig.ledger.models import ObjectRow, ObjectState, StepResult

if TYPE_CHECKING:
    from objmig.api.migration import RetrySpec
    from objmig.storage.errors import ErrorClass

#: skip_reason values of dry-run rows: what a real run would do with the object.
PLAN_COPY = "PlanCopy"
PLAN_IDENTICAL = "PlanIdentical"
PLAN_RESTORE = "PlanRestore"
PLAN_REASONS = (PLAN_COPY, PLAN_IDENTICAL, PLAN_RESTORE)
#: skip_reason (or, with copy.missingObjects Fail, error_code) of a worklist's key that
#: does not exist.
NOT_FOUND = "NotFound"
#: skip_reason of an object a verify-only run found without its per-object hook done.
HOOK_PENDING = "HookPending"


class ConfigurationError(Exception):
    """An error no retry can fix (bad credentials, missing bucket): stop the whole run."""

    def __init__(self, error: ErrorClass, step: str, key: str) -> None:
        self.error = error
        super().__init__(f"{step} s3 object {key!r}: {error.code}: {error.message}")


class ApplicationError(Exception):
    """The application's side of the spec cannot work (a worklist query that fails, a
    backfill column that does not exist, a hook nobody answers): stop the whole run,
    before anything is written, with a reason for the Failed condition and a message
    that names the field."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True)
class Proof:
    """What verification established about a copy (and, for a group's manifest, what the
    source's metadata was).

    `verified_by`: "etag", or the algorithm of the checksums compared ("sha256", ...);
    `degraded`: the aspects of S3 the copy did without (`objmig.storage.features.Aspect`).
    """

    target_etag: str
    target_version_id: str | None
    source_checksum: str | None
    target_checksum: str | None
    target_last_modified: datetime | None = None
    verified_by: str = "etag"
    degraded: tuple[str, ...] = ()
    source_metadata: dict[str, Any] | None = None


def verified(
    row: ObjectRow, target_key: str, proof: Proof, not_kept: Sequence[str] = ()
) -> StepResult:
    """The copy at `target_key` is proven: the row is done (or, with application steps
    still to run, those come next). `not_kept`: what of the source the copy could not
    keep, for the report."""
    return StepResult(
        id=row.id,
        state=ObjectState.VERIFIED,
        target_key=target_key,
        target_etag=proof.target_etag,
        target_version_id=proof.target_version_id,
        source_checksum=proof.source_checksum,
        target_checksum=proof.target_checksum,
        target_last_modified=proof.target_last_modified,
        increment_attempts=True,
        not_preserved="; ".join(not_kept) or None,
        verified_by=proof.verified_by,
        degraded=",".join(proof.degraded) or None,
        source_metadata=proof.source_metadata,
    )


def still_verified(row: ObjectRow) -> StepResult:
    """A `finishing` row, claimed for its application steps: verified as recorded."""
    # What proved the copy, and what it could not keep, are written with every result
    # (None clears them): keep them.
    return StepResult(
        id=row.id,
        state=ObjectState.VERIFIED,
        verified_by=row.verified_by,
        degraded=row.degraded,
        not_preserved=row.not_preserved,
    )


def with_write(result: StepResult, target_key: str, written: tuple[str, str | None]) -> StepResult:
    """A failed attempt's result, with what it wrote to the target recorded: a leftovers
    cleanup removes exactly that object (and version) later, and nothing else."""
    etag, version_id = written
    return result._replace(target_key=target_key, target_etag=etag, target_version_id=version_id)


def skipped(row: ObjectRow, reason: str) -> StepResult:
    """Not copied, for `reason` (a plan's reasons say what a real run would do)."""
    return StepResult(id=row.id, state=ObjectState.SKIPPED, skip_reason=reason)


def source_changed(row: ObjectRow, message: str, code: str = "SourceChanged") -> StepResult:
    """The source is no longer the object scanned; a catch-up re-scan may take it up."""
    return _ended(row, ObjectState.SOURCE_CHANGED, code, message)


def failed_now(row: ObjectRow, code: str, message: str) -> StepResult:
    """Failed for good: no retry can help."""
    return _ended(row, ObjectState.FAILED, code, message)


def _ended(row: ObjectRow, state: ObjectState, code: str, message: str) -> StepResult:
    return StepResult(
        id=row.id, state=state, last_error=message, error_code=code, increment_attempts=True
    )


#: How long an object waits for free space on a target directory before it looks again.
SPACE_POLL_SECONDS = 30.0


def waiting_for_space(row: ObjectRow, message: str) -> StepResult:
    """The target directory has no room for the object: it waits (no attempt used up)."""
    return StepResult(
        id=row.id,
        state=row.state,
        last_error=message,
        error_code="TargetSpaceLow",
        not_before=now() + timedelta(seconds=SPACE_POLL_SECONDS),
    )


def restoring(row: ObjectRow, poll_seconds: float, requested_at: datetime | None) -> StepResult:
    """Waiting for a restore (requested at `requested_at`); claimed again after
    `poll_seconds`."""
    return StepResult(
        id=row.id,
        state=ObjectState.RESTORING,
        not_before=now() + timedelta(seconds=poll_seconds),
        restore_requested_at=requested_at,
    )


def failure(row: ObjectRow, error: ErrorClass, step: str, retry: RetrySpec) -> StepResult:
    """A failed attempt: retry later with backoff while attempts remain, else fail."""
    attempts = row.attempts + 1
    message = f"{step}: {error.code}: {error.message}"
    if error.retryable and attempts < retry.attempts:
        delay = backoff_delay(attempts, retry.backoff)
        return StepResult(
            id=row.id,
            # A row keeps its state: a copied row's retry only verifies again.
            state=row.state,
            last_error=message,
            error_code=error.code,
            not_before=now() + timedelta(seconds=delay),
            increment_attempts=True,
        )
    return failed_now(row, error.code, message)


def missing(row: ObjectRow, fail: bool) -> StepResult:
    """A worklist's key that does not exist: skipped, or failed if the spec asks."""
    if fail:
        return failed_now(row, NOT_FOUND, "the object does not exist")
    return skipped(row, NOT_FOUND)


def unfinished(
    row: ObjectRow,
    done: StepResult,
    error: ErrorClass,
    step: str,
    retry: RetrySpec,
    *,
    at_least: float | None = None,
) -> StepResult:
    """A verified object whose application step (hook, backfill) failed: `finishing` again
    after a backoff while attempts remain, else failed. What was proven, and what steps
    did (`done`), is recorded either way.

    ``at_least`` is the wait the step was asked for (a hook's ``Retry-After``), honoured up
    to ``retry.backoff.max``: never shorter than the backoff, never unbounded.
    """
    attempts = row.attempts + 1
    message = f"{step}: {error.code}: {error.message}"
    if error.retryable and attempts < retry.attempts:
        delay = backoff_delay(attempts, retry.backoff)
        if at_least is not None:
            cap = parse_duration(retry.backoff.max).total_seconds()
            delay = max(delay, min(at_least, cap))
        return done._replace(
            state=ObjectState.FINISHING,
            last_error=message,
            error_code=error.code,
            not_before=now() + timedelta(seconds=delay),
            increment_attempts=True,
        )
    return done._replace(
        state=ObjectState.FAILED, last_error=message, error_code=error.code, increment_attempts=True
    )


def now() -> datetime:
    return datetime.now(UTC)
