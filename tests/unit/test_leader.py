"""Leader election's decisions, without a cluster (tests/k8s/test_leader.py has the Lease)."""

from __future__ import annotations

from datetime import UTC, datetime

from objmig.controller.leader import Observed, lease_spec, may_take

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def observed(holder: str, transitions: int = 2) -> Observed:
    return Observed(
        holder=holder,
        duration=15.0,
        acquire_time="2026-01-01T00:00:00.000000Z",
        transitions=transitions,
        resource_version="7",
    )


def test_a_free_or_own_lease_may_be_taken_at_once() -> None:
    assert may_take(None, "me", observed_at=100.0, now=100.0)
    assert may_take(observed(""), "me", observed_at=100.0, now=100.0)
    assert may_take(observed("me"), "me", observed_at=100.0, now=100.0)


def test_anothers_lease_only_after_it_went_unchanged_for_its_duration() -> None:
    held = observed("other")
    assert not may_take(held, "me", observed_at=100.0, now=114.9)
    assert may_take(held, "me", observed_at=100.0, now=115.0)


def test_renewal_keeps_the_acquisition_and_a_take_over_counts_a_transition() -> None:
    renewed = lease_spec(observed("me"), "me", now=NOW, duration=15)
    assert renewed["acquireTime"] == "2026-01-01T00:00:00.000000Z"
    assert renewed["renewTime"] == "2026-01-02T03:04:05.000000Z"  # six digits, always
    assert renewed["leaseTransitions"] == 2
    taken = lease_spec(observed("other"), "me", now=NOW, duration=15)
    assert taken["holderIdentity"] == "me"
    assert taken["acquireTime"] == taken["renewTime"] == "2026-01-02T03:04:05.000000Z"
    assert taken["leaseTransitions"] == 3
    first = lease_spec(None, "me", now=NOW, duration=15)
    assert first["leaseTransitions"] == 0
    assert first["leaseDurationSeconds"] == 15
