"""The parts of a migration's status that the new stores bring: health (Degraded, Stalled,
TargetSpaceLow), several buckets, deduplication, the audit of a target directory and the
group manifests. Pure, like `objmig.engine.status`, which calls them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from objmig.api.conditions import ConditionStatus, ConditionType, Reason
from objmig.api.migration import (
    BucketStatus,
    ContentStatus,
    GroupsStatus,
    HealthStatus,
    ObjectMigrationSpec,
    ObjectMigrationStatus,
)
from objmig.api.types import format_duration, parse_duration, parse_quantity
from objmig.engine.policy import Tally
from objmig.ledger.models import ContentCounts, ObjectState, StateCount
from objmig.ledger.state import MigrationState

if TYPE_CHECKING:
    from objmig.engine.status import StatusInputs

#: Buckets the status lists at most (status.buckets); the report has them all.
BUCKETS_SHOWN = 100


def degraded_condition(state: MigrationState) -> tuple[str, ConditionStatus, str, str]:
    """Whether a store lacks an aspect of S3 objmig then does without, naming each."""
    findings = sorted(state.store_features.values(), key=lambda f: (f.store, f.aspect))
    if not findings:
        return (
            ConditionType.DEGRADED,
            "False",
            Reason.ALL_FEATURES_PRESENT,
            "both stores support every aspect of S3 this migration uses",
        )
    message = "; ".join(finding.message for finding in findings)
    return (ConditionType.DEGRADED, "True", Reason.STORE_FEATURE_MISSING, message)


def health_of(inputs: StatusInputs, view: Tally, previous: HealthStatus) -> HealthStatus:
    """The health in a word, and the throughput floor's clock (kept from the last status)."""
    spec, state = inputs.spec, inputs.state
    since = None
    if _waiting_to_copy(inputs, view) and inputs.rates_measured:
        floor = parse_quantity(spec.health.min_throughput)
        rates = inputs.rates
        below = (
            rates.bytes_per_second <= floor
            if floor
            else rates.bytes_per_second == 0 and rates.objects_per_second == 0
        )
        if below:
            since = previous.below_floor_since or inputs.now
    space = state.target_space
    health = HealthStatus(
        below_floor_since=since,
        target_free_bytes=space.free if space is not None else None,
        target_total_bytes=space.total if space is not None else None,
    )
    unhealthy = [
        name
        for name, holds in (
            (
                ConditionType.DEGRADED,
                _degraded(spec, view) is not None or bool(state.store_features),
            ),
            (ConditionType.STALLED, _stalled_for(inputs, since) is not None),
            (ConditionType.TARGET_SPACE_LOW, space is not None and space.low),
        )
        if holds
    ]
    health.summary = ",".join(unhealthy) or "Healthy"
    return health


def _waiting_to_copy(inputs: StatusInputs, view: Tally) -> bool:
    """Objects wait for a worker, and nothing says the migration should rest (a pause,
    a failure, a suspension, or only archive restores to wait for)."""
    state, counts = inputs.state, inputs.counts
    restoring = counts.state(ObjectState.RESTORING).objects
    return (
        view.outstanding > restoring
        and state.paused is None
        and state.failed is None
        and not inputs.spec.suspend
    )


def _degraded(spec: ObjectMigrationSpec, view: Tally) -> str | None:
    """Why the error rate is too high, if it is (after failurePolicy.minObjects)."""
    limit = spec.health.degraded_error_rate
    if view.finished < spec.failure_policy.min_objects or not view.failures:
        return None
    if view.failures <= limit * view.finished:
        return None
    return (
        f"{view.failures} of {view.finished} finished objects failed "
        f"({view.failures / view.finished:.1%}, more than health.degradedErrorRate "
        f"{limit:.1%})"
    )


def _stalled_for(inputs: StatusInputs, since: datetime | None) -> timedelta | None:
    """How long throughput has been under the floor, once that is stalledAfter or more."""
    if since is None:
        return None
    lasted = inputs.now - since
    return lasted if lasted >= parse_duration(inputs.spec.health.stalled_after) else None


def health_conditions(
    inputs: StatusInputs, view: Tally, health: HealthStatus
) -> list[tuple[str, ConditionStatus, str, str]]:
    spec, state = inputs.spec, inputs.state
    result: list[tuple[str, ConditionStatus, str, str]] = []
    # One Degraded for two causes: the error rate first (it may end in a pause), then a
    # store lacking an aspect of S3.
    degraded = _degraded(spec, view)
    if degraded is not None:
        result.append((ConditionType.DEGRADED, "True", Reason.ERROR_RATE_HIGH, degraded))
    else:
        result.append(degraded_condition(state))
    lasted = _stalled_for(inputs, health.below_floor_since)
    rates = inputs.rates
    if lasted is not None:
        result.append(
            (
                ConditionType.STALLED,
                "True",
                Reason.THROUGHPUT_BELOW_FLOOR,
                f"throughput {int(rates.bytes_per_second)} B/s has been at or under "
                f"health.minThroughput "
                f"({spec.health.min_throughput}) for {format_duration(lasted)} while objects "
                "wait: look at the workers and at the stores",
            )
        )
    elif _waiting_to_copy(inputs, view):
        result.append(
            (
                ConditionType.STALLED,
                "False",
                Reason.PROGRESSING,
                f"{int(rates.bytes_per_second)} B/s, {int(rates.objects_per_second)} objects/s",
            )
        )
    else:
        result.append(
            (
                ConditionType.STALLED,
                "False",
                Reason.NOTHING_OUTSTANDING,
                "no object waits for a worker",
            )
        )
    space = state.target_space
    if spec.target.filesystem is None:
        result.append(
            (
                ConditionType.TARGET_SPACE_LOW,
                "False",
                Reason.NOT_A_DIRECTORY,
                "the target is a bucket",
            )
        )
    elif space is not None and space.low:
        result.append(
            (
                ConditionType.TARGET_SPACE_LOW,
                "True",
                Reason.FREE_SPACE_BELOW_MINIMUM,
                f"{space.free} of {space.total} bytes free, minFreeSpace {space.minimum}",
            )
        )
    else:
        measured = f"{space.free} of {space.total} bytes free" if space else "not measured yet"
        result.append(
            (ConditionType.TARGET_SPACE_LOW, "False", Reason.FREE_SPACE_AVAILABLE, measured)
        )
    return result


def content_status(counts: ContentCounts) -> ContentStatus:
    return ContentStatus(
        processed=counts.objects,
        contents=counts.contents,
        deduplicated=counts.deduplicated,
        bytes_saved=counts.bytes_saved,
    )


def add_audit(status: ObjectMigrationStatus, state: MigrationState) -> None:
    audit = state.audit
    if audit is None:
        return
    verification = status.verification
    verification.audited_at = audit.completed_at
    verification.missing_files = audit.missing
    verification.extra_files = audit.extra
    verification.extra_file_examples = list(audit.extra_examples)
    if audit.groups:
        status.groups = GroupsStatus(
            groups=audit.groups,
            manifests_written=audit.manifests_written,
            written_at=audit.completed_at,
        )


def bucket_statuses(
    counts: dict[str, dict[ObjectState, StateCount]], state: MigrationState
) -> tuple[list[BucketStatus], bool]:
    digests = state.verification.buckets if state.verification is not None else {}
    shown = []
    for name in sorted(counts)[:BUCKETS_SHOWN]:
        by_state = counts[name]

        def n(*states: ObjectState, by_state: dict[ObjectState, StateCount] = by_state) -> int:
            return sum(by_state.get(s, StateCount()).objects for s in states)

        record = digests.get(name)
        shown.append(
            BucketStatus(
                name=name,
                objects=sum(c.objects for c in by_state.values()),
                bytes=sum(c.bytes for c in by_state.values()),
                verified=n(ObjectState.VERIFIED, ObjectState.DELETED),
                failed=n(ObjectState.FAILED, ObjectState.SOURCE_CHANGED),
                digest=record.digest if record is not None else None,
            )
        )
    return shown, len(counts) > BUCKETS_SHOWN
