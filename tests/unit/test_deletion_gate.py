"""The deletion gate, property-tested: it deletes exactly when every condition holds."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from objmig.api.migration_cleanup import MigrationCleanupSpec
from objmig.engine.deletion import MigrationFacts, Verdict, migration_verdict, object_verdict
from objmig.ledger import ObjectRow, ObjectState
from objmig.storage.types import HeadResult

DIGEST = "sha256:" + "ab" * 32
OTHER_DIGEST = "sha256:" + "cd" * 32
CONDITIONS = (
    "cut_over",
    "not_rolled_back",
    "approval_given",
    "digest_matches",
    "grace_elapsed",
    "row_verified",
    "row_cut_over",
    "min_age_elapsed",
    "source_present",
    "source_etag_same",
    "source_size_same",
    "source_version_same",
    "source_modified_same",
    "target_present",
    "target_etag_same",
    "target_size_same",
    "not_in_place",
)


def _row(**overrides: object) -> ObjectRow:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    values: dict[str, object] = {
        "id": 1,
        "migration_id": 1,
        "key": "k",
        "version_id": "v1",
        "size": 100,
        "etag": "e-src",
        "last_modified": now - timedelta(days=30),
        "storage_class": "STANDARD",
        "target_key": "t/k",
        "target_etag": "e-src",
        "target_version_id": None,
        "source_checksum": None,
        "target_checksum": None,
        "state": ObjectState.VERIFIED,
        "attempts": 1,
        "last_error": None,
        "error_code": None,
        "lease_owner": None,
        "lease_expires_at": None,
        "not_before": None,
        "restore_requested_at": None,
        "verified_at": now - timedelta(days=10),
        "cut_over_at": now - timedelta(days=9),
        "deleted_at": None,
        "updated_at": now,
        "last_seen_scan": 1,
        "skip_reason": None,
        "not_preserved": None,
    }
    values.update(overrides)
    return ObjectRow(**values)  # type: ignore[arg-type]


def _head(
    row: ObjectRow, *, etag: str, size: int, version: str | None, modified: datetime
) -> HeadResult:
    return HeadResult(etag=etag, size=size, last_modified=modified, version_id=version)


@settings(max_examples=10_000, deadline=None)
@given(
    flags=st.fixed_dictionaries({name: st.booleans() for name in CONDITIONS}),
    grace_hours=st.integers(min_value=0, max_value=200),
    min_age_hours=st.integers(min_value=0, max_value=200),
    age_hours=st.integers(min_value=0, max_value=400),
    size=st.integers(min_value=0, max_value=10**12),
    jitter_ms=st.integers(min_value=0, max_value=999),
)
def test_gate_deletes_exactly_when_every_condition_holds(
    flags: dict[str, bool],
    grace_hours: int,
    min_age_hours: int,
    age_hours: int,
    size: int,
    jitter_ms: int,
) -> None:
    now = datetime(2026, 6, 1, 12, tzinfo=UTC)
    spec = MigrationCleanupSpec.model_validate(
        {
            "migrationRef": {"name": "m"},
            "gracePeriod": f"{grace_hours}h",
            "minAge": f"{min_age_hours}h",
            **({"approval": {"digest": DIGEST}} if flags["approval_given"] else {}),
        }
    )
    cut_over_at = now - timedelta(hours=grace_hours + 1 if flags["grace_elapsed"] else 0)
    if not flags["grace_elapsed"]:
        cut_over_at = now - timedelta(hours=grace_hours) + timedelta(seconds=1)
    facts = MigrationFacts(
        cut_over_at=cut_over_at if flags["cut_over"] else None,
        rolled_back=not flags["not_rolled_back"],
        digest=DIGEST if flags["digest_matches"] else OTHER_DIGEST,
        # Every row is copied onto its own key and version here: only the bucket decides
        # whether its source is its target.
        same_bucket=not flags["not_in_place"],
    )
    verified_at = (
        now - timedelta(hours=min_age_hours + age_hours, seconds=1)
        if flags["min_age_elapsed"]
        else now - timedelta(hours=min_age_hours) + timedelta(seconds=1)
    )
    modified = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(milliseconds=jitter_ms)
    row = _row(
        size=size,
        state=ObjectState.VERIFIED if flags["row_verified"] else ObjectState.FAILED,
        verified_at=verified_at,
        cut_over_at=now if flags["row_cut_over"] else None,
        last_modified=modified,
        target_key="k",
        target_version_id="v1",
    )
    source = (
        _head(
            row,
            etag=row.etag if flags["source_etag_same"] else "e-changed",
            size=size if flags["source_size_same"] else size + 1,
            version=row.version_id if flags["source_version_same"] else "v2",
            # Whole seconds, as an HTTP date says: a sub-second difference is no change.
            modified=modified.replace(microsecond=0)
            if flags["source_modified_same"]
            else modified + timedelta(seconds=5),
        )
        if flags["source_present"]
        else None
    )
    target = (
        _head(
            row,
            etag=row.target_etag or "" if flags["target_etag_same"] else "e-other",
            size=size if flags["target_size_same"] else size + 7,
            version=None,
            modified=now,
        )
        if flags["target_present"]
        else None
    )

    verdict = object_verdict(spec, facts, row, source, target, now)

    assert verdict.delete == all(flags.values()), (flags, verdict)
    if not verdict.delete:
        assert verdict.reason != "Delete"
        assert verdict.message


def _facts(**kw: object) -> MigrationFacts:
    base = MigrationFacts(
        cut_over_at=datetime(2026, 1, 1, tzinfo=UTC), rolled_back=False, digest=DIGEST
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def _spec(**kw: object) -> MigrationCleanupSpec:
    body: dict[str, object] = {"migrationRef": {"name": "m"}, "approval": {"digest": DIGEST}}
    body.update(kw)
    return MigrationCleanupSpec.model_validate(body)


def test_grace_period_message_says_how_long_is_left() -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    verdict = migration_verdict(_spec(gracePeriod="72h"), _facts(), now)
    assert (verdict.delete, verdict.reason, verdict.gate) == (
        False,
        "GracePeriodNotElapsed",
        "GracePeriod",
    )
    assert "48h of gracePeriod 72h left" in verdict.message
    assert "2026-01-04T00:00:00+00:00" in verdict.message


def test_wrong_digest_is_named_in_the_message() -> None:
    verdict = migration_verdict(
        _spec(approval={"digest": OTHER_DIGEST}, gracePeriod="0s"),
        _facts(),
        datetime(2026, 1, 2, tzinfo=UTC),
    )
    assert verdict.reason == "ApprovalDigestMismatch"
    assert OTHER_DIGEST in verdict.message
    assert DIGEST in verdict.message


def test_source_changed_since_verify_is_reported_with_what_changed() -> None:
    now = datetime(2026, 1, 20, tzinfo=UTC)
    row = _row()
    assert row.last_modified is not None
    source = HeadResult(etag="e-new", size=100, last_modified=row.last_modified, version_id="v1")
    target = HeadResult(etag="e-src", size=100, last_modified=now, version_id=None)
    verdict: Verdict = object_verdict(
        _spec(gracePeriod="1h", minAge="1h"), _facts(), row, source, target, now
    )
    assert verdict.reason == "SourceChangedSinceVerify"
    assert "ETag e-src -> e-new" in verdict.message


def test_an_object_rewritten_in_place_is_never_deleted_but_its_older_version_may_be() -> None:
    now = datetime(2026, 1, 20, tzinfo=UTC)
    spec, facts = _spec(gracePeriod="1h", minAge="1h"), _facts(same_bucket=True)
    unversioned = _row(version_id="", target_key="k")
    versioned = _row(version_id="v1", target_key="k", target_version_id="v2")

    def heads(row: ObjectRow) -> tuple[HeadResult, HeadResult]:
        assert row.last_modified is not None
        source = HeadResult("e-src", 100, row.last_modified, row.version_id or None)
        return source, HeadResult("e-src", 100, now, row.target_version_id)

    kept = object_verdict(spec, facts, unversioned, *heads(unversioned), now)
    old_version = object_verdict(spec, facts, versioned, *heads(versioned), now)

    assert (kept.delete, kept.reason) == (False, "InPlace")
    assert (old_version.delete, old_version.reason) == (True, "Delete")


def test_a_source_that_answers_as_its_own_target_is_never_deleted() -> None:
    now = datetime(2026, 1, 20, tzinfo=UTC)
    spec, facts = _spec(gracePeriod="1h", minAge="1h"), _facts(name="ns/m")
    row = _row(version_id="")
    assert row.last_modified is not None
    original = HeadResult("e-src", 100, row.last_modified, None)
    # Written in the same second: only the mark tells the copy from the original.
    copy = replace(original, metadata={"objmig-migration": "ns/m"})

    def verdict(source: HeadResult, target: HeadResult) -> str:
        return object_verdict(spec, facts, row, source, target, now).reason

    # The usual case: an original, and the copy this migration wrote.
    assert verdict(original, copy) == "Delete"
    # One object behind two endpoint names: the "source" is the copy itself...
    assert verdict(copy, copy) == "SourceIsTarget"
    # ... or, where nothing was written (an identical target was kept), the original twice.
    assert verdict(original, original) == "SourceIsTarget"
