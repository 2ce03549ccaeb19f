"""The pure parts of the application's migrations: metadata changes, the backfill's plan
of one row, what an attribute becomes as text, the outcomes of a failed step, the cutover
gate waiting for hooks, progress by objects, and the specs refused naming their field."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from objmig.api.loading import SpecError, parse_resource
from objmig.api.migration import ObjectMigrationSpec, RetrySpec
from objmig.api.migration.endpoints import BucketSpec
from objmig.engine.backfill import BackfillItem, Seen, attribute_text, plan_columns
from objmig.engine.hooks import retry_after_seconds
from objmig.engine.pipeline import outcomes
from objmig.engine.policy import CatchUp, CutoverInputs, Tally, cutover_gate
from objmig.engine.status import Rates, progress_of
from objmig.ledger.models import Activity, Counts, ObjectRow, ObjectState, StateCount, StepResult
from objmig.storage.compare import MetadataChange, metadata_difference
from objmig.storage.errors import ErrorClass
from objmig.storage.types import HeadResult

NOW = datetime(2026, 1, 1, tzinfo=UTC)
COLUMNS = ["hash", "last_modified", "size"]


def _head(metadata: dict[str, str]) -> HeadResult:
    return HeadResult(etag="0" * 32, size=1, last_modified=NOW, version_id=None, metadata=metadata)


# -- metadata changes -------------------------------------------------------------------------


def test_a_metadata_change_removes_then_sets_keeping_the_rest() -> None:
    change = MetadataChange(set={"storage-version": "3"}, remove=frozenset({"legacy"}))
    meant = change.apply({"storage-version": "2", "legacy": "x", "owner": "a"})
    assert meant == {"storage-version": "3", "owner": "a"}
    assert not MetadataChange()
    assert change


def test_verification_compares_the_copy_with_what_was_meant_not_with_the_source() -> None:
    change = MetadataChange(set={"storage-version": "3"}, remove=frozenset({"legacy"}))
    source = _head({"storage-version": "2", "legacy": "x", "owner": "a"})
    stamped = _head({"storage-version": "3", "owner": "a", "objmig-migration": "ns/m"})
    assert metadata_difference(source, stamped, change) is None
    assert metadata_difference(source, stamped) == (
        "user metadata 'legacy': expected 'x', found nothing"
    )
    unstamped = replace(stamped, metadata={"storage-version": "2", "legacy": "x", "owner": "a"})
    assert metadata_difference(source, unstamped, change) == (
        "user metadata 'legacy': expected nothing, found 'x'"
    )


# -- the backfill's plan of one row -----------------------------------------------------------


def _item(values: dict[str, str], plan: dict[str, list[str | None]] | None = None) -> BackfillItem:
    return BackfillItem(1, "k", values, {"plan": plan} if plan is not None else None)


def _seen(values: list[str | None], after: list[bool], before: list[bool] | None = None) -> Seen:
    return Seen(values, after, before or [value is None for value in values])


def test_only_empty_columns_are_planned_unless_overwrite() -> None:
    item = _item({"hash": "e1", "last_modified": "1700", "size": "5"})
    seen = _seen(["app-hash", None, "5"], [False, False, True])
    assert plan_columns(COLUMNS, False, item, seen) == (
        {"last_modified": [None, "1700"]},
        {},
        "written",
    )
    assert plan_columns(COLUMNS, True, item, seen)[0] == {
        "hash": ["app-hash", "e1"],
        "last_modified": [None, "1700"],
    }


def test_a_row_holding_every_value_already_is_already_set() -> None:
    item = _item({"hash": "e1"})
    assert plan_columns(COLUMNS, False, item, _seen(["x", "1", "2"], [False, False, False])) == (
        {},
        {},
        "alreadySet",
    )


def test_a_stopped_attempt_is_recovered_from_its_plan() -> None:
    plan: dict[str, list[str | None]] = {
        "hash": [None, "e1"],
        "last_modified": [None, "1700"],
        "size": [None, "5"],
    }
    item = _item({"hash": "e1", "last_modified": "1700", "size": "5"}, plan)
    # hash was written before the stop; last_modified was not; the application wrote size.
    seen = Seen(["e1", None, "9"], after=[True, False, False], before=[False, True, False])
    assert plan_columns(COLUMNS, False, item, seen) == (
        {"last_modified": [None, "1700"]},
        {"hash": [None, "e1"]},
        "written",
    )
    clashing = Seen(["x", "y", "z"], after=[False] * 3, before=[False] * 3)
    assert plan_columns(COLUMNS, False, item, clashing) == ({}, {}, "conflict")


@pytest.mark.parametrize(
    ("attribute", "value", "how", "text"),
    [
        ("lastModified", datetime(2024, 1, 1, 0, 0, 1, tzinfo=UTC), "epochMillis", "1704067201000"),
        (
            "lastModified",
            datetime(2024, 1, 1, 1, tzinfo=UTC),
            "timestamp",
            "2024-01-01T01:00:00+00:00",
        ),
        ("size", 0, "epochMillis", "0"),
        ("hash", "", "epochMillis", None),
        ("versionId", None, "epochMillis", None),
    ],
)
def test_attributes_become_the_text_their_column_casts(
    attribute: str, value: object, how: Any, text: str | None
) -> None:
    assert attribute_text(attribute, value, how) == text


# -- a failed step after verification ---------------------------------------------------------


def _row(attempts: int) -> ObjectRow:
    return ObjectRow(
        id=7, migration_id=1, key="k", version_id="", size=1, etag="e", last_modified=NOW,
        storage_class="STANDARD", target_key="k", target_etag=None, target_version_id=None,
        source_checksum=None, target_checksum=None, state=ObjectState.PENDING,
        attempts=attempts, last_error=None, error_code=None, lease_owner="w",
        lease_expires_at=None, not_before=None, restore_requested_at=None, verified_at=None,
        cut_over_at=None, deleted_at=None, updated_at=NOW, last_seen_scan=1, skip_reason=None,
    )  # fmt: skip


def test_a_retryable_step_failure_keeps_the_verification_and_waits_in_finishing() -> None:
    done = StepResult(id=7, state=ObjectState.VERIFIED, target_etag="t", increment_attempts=True)
    retry = RetrySpec(attempts=3, backoff={"initial": "1s", "max": "1s", "jitter": False})
    busy = ErrorClass("retryable", "Hook503", "HTTP 503: busy")
    later = outcomes.unfinished(_row(0), done, busy, "hook", retry)
    assert later.state is ObjectState.FINISHING
    assert later.target_etag == "t"
    assert later.last_error == "hook: Hook503: HTTP 503: busy"
    assert later.not_before is not None
    assert later.not_before - datetime.now(UTC) <= timedelta(seconds=1)
    spent = outcomes.unfinished(_row(2), done, busy, "hook", retry)
    assert spent.state is ObjectState.FAILED
    refused = ErrorClass("permanent", "Hook400", "HTTP 400: no")
    assert outcomes.unfinished(_row(0), done, refused, "hook", retry).state is ObjectState.FAILED


def test_a_wait_the_endpoint_asks_for_is_kept_up_to_the_backoff_cap() -> None:
    done = StepResult(id=7, state=ObjectState.VERIFIED, increment_attempts=True)
    retry = RetrySpec(attempts=3, backoff={"initial": "10ms", "max": "30s", "jitter": False})
    throttled = ErrorClass("retryable", "Hook429", "HTTP 429: slow down")
    start = datetime.now(UTC)

    def waits(asked: float | None) -> float:
        result = outcomes.unfinished(_row(0), done, throttled, "hook", retry, at_least=asked)
        assert result.not_before is not None
        return (result.not_before - start).total_seconds()

    assert waits(None) < 1
    assert 5 <= waits(5) < 6
    assert 30 <= waits(86400) < 31  # an hour, a day: no longer than backoff.max


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("120", now) == 120
    assert retry_after_seconds("Sun, 06 Dec 2026 12:01:30 GMT", now) == 90
    assert retry_after_seconds("Sun, 06 Dec 2026 11:00:00 GMT", now) == 0  # already past
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds("-5", now) is None
    assert retry_after_seconds(None, now) is None


def test_a_missing_object_is_skipped_unless_the_spec_says_fail() -> None:
    assert outcomes.missing(_row(0), fail=False).skip_reason == "NotFound"
    failed = outcomes.missing(_row(0), fail=True)
    assert (failed.state, failed.error_code) == (ObjectState.FAILED, "NotFound")


# -- the gate and the progress ----------------------------------------------------------------


def _spec(**overrides: Any) -> ObjectMigrationSpec:
    body: dict[str, Any] = {"source": {"bucket": "src-bucket"}, "target": {"bucket": "dst-bucket"}}
    return ObjectMigrationSpec.model_validate(body | overrides)


def test_the_cutover_waits_for_every_hook() -> None:
    tally = Tally(total=10, verified=8, failed=0, source_changed=0, skipped=0, outstanding=2)
    inputs = CutoverInputs(replace(tally, finishing=2), True, CatchUp())
    gate = cutover_gate(_spec(), inputs)
    assert (gate.ok, gate.reason) == (False, "StepsPending")
    assert "2 verified objects wait for their per-object hook or backfill" in gate.message
    busy = CutoverInputs(replace(tally, outstanding=3, finishing=2), True, CatchUp())
    assert cutover_gate(_spec(), busy).reason == "NotAllVerified"


def test_a_run_that_moves_no_bytes_counts_progress_by_objects() -> None:
    counts = Counts(
        by_state={
            ObjectState.VERIFIED: StateCount(3, 0),
            ObjectState.SKIPPED: StateCount(1, 0),
            ObjectState.PENDING: StateCount(4, 0),
        }
    )
    progress = progress_of(counts, Activity(), Rates(objects_per_second=2), by_objects=True)
    objects = progress.objects
    assert (objects.total, objects.processed, objects.remaining) == (8, 4, 4)
    assert progress.percent == 50
    assert progress.eta == "2s"


# -- specs refused, naming the field ----------------------------------------------------------


def _problems(**spec: Any) -> list[str]:
    body: dict[str, Any] = {"source": {"bucket": "src-bucket"}, "target": {"bucket": "dst-bucket"}}
    document = {
        "apiVersion": "objmig.dev/v1alpha1",
        "kind": "ObjectMigration",
        "metadata": {"name": "m"},
        "spec": body | spec,
    }
    try:
        parse_resource(document)
    except SpecError as error:
        return error.problems
    return []


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"copy": {"mode": "none"}}, "spec: copy.mode none writes no object"),
        (
            {
                "target": {
                    "bucket": "dst-bucket",
                    "metadata": {"set": {"v": "3"}, "remove": ["v"]},
                }
            },
            "spec.target.metadata: a key cannot be both set and removed",
        ),
        (
            {"target": {"bucket": "dst-bucket", "metadata": {"remove": ["objmig-migration"]}}},
            "spec.target.metadata: keys starting with objmig- are objmig's own",
        ),
        (
            {"target": {"bucket": "dst-bucket", "metadata": {"set": {"Storage Version": "3"}}}},
            "spec.target.metadata: metadata keys are lower-case letters",
        ),
        (
            {
                "backfill": {
                    "dsnSecretRef": {"name": "db", "key": "dsn"},
                    "table": "files",
                    "keyColumn": "id",
                    "columns": {},
                }
            },
            "spec.backfill.columns: name at least one column to write",
        ),
        (
            {
                "backfill": {
                    "dsnSecretRef": {"name": "db", "key": "dsn"},
                    "table": "files",
                    "keyColumn": "id",
                    "columns": {"hash": "h", "size": "h"},
                }
            },
            "spec.backfill.columns: each column may receive one attribute only",
        ),
        (
            {
                "backfill": {
                    "dsnSecretRef": {"name": "db", "key": "dsn"},
                    "table": "files",
                    "keyColumn": "id",
                    "match": "id",
                    "columns": {"hash": "hash"},
                }
            },
            "spec: backfill.match id matches the id column of a SQL worklist",
        ),
        (
            {
                "selection": {
                    "manifest": {
                        "format": "csv",
                        "sql": {"dsnSecretRef": {"name": "db", "key": "dsn"}, "query": "q"},
                    }
                }
            },
            "spec.selection.manifest: format describes a file",
        ),
        (
            {"hooks": {"perObject": {"url": "ftp://hooks.example/x"}}},
            "spec.hooks.perObject.url: String should match pattern",
        ),
    ],
)
def test_bad_application_specs_name_the_field(spec: dict[str, Any], expected: str) -> None:
    problems = _problems(**spec)
    assert any(p.startswith(expected) for p in problems), problems


def test_a_look_only_run_over_the_source_itself_is_accepted() -> None:
    spec = _spec(target={"bucket": "src-bucket"}, copy={"mode": "none"})
    assert not spec.copy_.writes
    assert spec.rewrites_in_place


def test_a_look_only_run_without_a_target_looks_at_the_source() -> None:
    source = {
        "endpoint": "http://127.0.0.1:9000",
        "bucket": "src-bucket",
        "prefix": "media/",
        "credentialsSecretRef": {"name": "src-creds"},
        "addressingStyle": "path",
    }
    spec = ObjectMigrationSpec.model_validate({"source": source, "copy": {"mode": "none"}})
    assert spec.target.model_dump(include=set(BucketSpec.model_fields)) == (
        spec.source.model_dump(include=set(BucketSpec.model_fields))
    )
    assert spec.rewrites_in_place
    # Only a run that writes nothing may leave the target out.
    with pytest.raises(ValueError, match="target"):
        ObjectMigrationSpec.model_validate({"source": source, "copy": {"mode": "stream"}})


def test_missing_objects_applies_to_every_copy_mode() -> None:
    spec = _spec(copy={"mode": "stream", "missingObjects": "Fail"})
    assert spec.copy_.missing_objects == "Fail"
