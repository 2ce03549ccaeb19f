"""The operator's status shaping: the per-object window stays within a byte budget."""

from __future__ import annotations

import itertools
import json

from objmig.api.conditions import Reason
from objmig.api.migration import ObjectMigrationStatus, ObjectStatus
from objmig.api.migration.status import StepsStatus
from objmig.controller.migration_service import bound_window, merge_patch, transition_events


def _status(keys: list[str], error: str | None = None) -> ObjectMigrationStatus:
    return ObjectMigrationStatus(
        objects=[ObjectStatus(key=k, state="failed", attempts=1, last_error=error) for k in keys]
    )


def test_a_window_of_short_keys_is_kept_whole() -> None:
    status = _status([f"photos/{i:04d}.jpg" for i in range(50)], "copy: AccessDenied: denied")
    bound_window(status)
    assert len(status.objects) == 50
    assert not status.objects_truncated


def test_long_keys_are_dropped_past_the_budget_in_order_and_flagged() -> None:
    keys = [f"{i:02d}/" + "k" * 1000 for i in range(50)]
    status = _status(keys, "copy: AccessDenied: denied")
    bound_window(status, budget=16 * 1024)
    assert 10 <= len(status.objects) < 50
    assert [o.key for o in status.objects] == keys[: len(status.objects)]
    assert status.objects_truncated
    assert len(json.dumps([o.to_wire() for o in status.objects])) <= 16 * 1024


def test_long_errors_are_shortened_and_keys_never() -> None:
    status = _status(["k" * 900], "x" * 5000)
    bound_window(status, error_chars=300)
    (entry,) = status.objects
    assert entry.key == "k" * 900
    assert entry.last_error is not None
    assert len(entry.last_error) == 300
    assert entry.last_error.endswith("...")


def test_an_already_truncated_window_stays_flagged() -> None:
    status = _status(["a"])
    status.objects_truncated = True
    bound_window(status)
    assert status.objects_truncated


def test_merge_patch_nulls_keys_gone_at_any_depth() -> None:
    current = {"phase": "Copying", "progress": {"eta": "9s", "percent": 90}, "plan": {"a": 1}}
    desired = {"phase": "CutOver", "progress": {"percent": 100}}
    assert merge_patch(current, desired) == {
        "phase": "CutOver",
        "progress": {"eta": None, "percent": 100},
        "plan": None,
    }


def test_merge_patch_is_empty_when_nothing_changed_and_replaces_lists_whole() -> None:
    status = {"progress": {"percent": 5}, "objects": [{"key": "a"}, {"key": "b"}]}
    assert merge_patch(status, status) == {}
    assert merge_patch(status, {**status, "objects": [{"key": "a"}]}) == {"objects": [{"key": "a"}]}


def test_a_ledger_outage_is_a_condition_with_one_event_until_it_ends() -> None:
    from objmig.controller.outcome import ledger_down, ledger_reachable
    from objmig.ledger import LedgerUnavailable

    error = LedgerUnavailable("postgresql://objmig@db:5432/objmig", "ConnectionRefusedError", 3)
    before = {"phase": "Copying", "progress": {"percent": 40}}

    first = ledger_down(before, ObjectMigrationStatus, error, 5)
    assert first.status is not None
    again = ledger_down(first.status, ObjectMigrationStatus, error, 5)

    # The numbers stay as they were; the condition names the database, once.
    assert first.status["phase"] == "Copying"
    assert first.status["progress"]["percent"] == 40
    (condition,) = first.status["conditions"]
    assert (condition["type"], condition["status"]) == ("LedgerUnavailable", "True")
    assert "postgresql://objmig@db:5432/objmig" in condition["message"]
    assert [e.reason for e in first.events] == ["LedgerUnavailable"]
    assert again.events == []

    conditions = ObjectMigrationStatus.model_validate(again.status).conditions
    back, events = ledger_reachable(conditions)
    assert [(c.type, c.status, c.reason) for c in back] == [
        ("LedgerUnavailable", "False", "LedgerAvailable")
    ]
    assert [e.reason for e in events] == ["LedgerAvailable"]
    assert ledger_reachable(back) == (back, [])
    assert ledger_reachable([]) == ([], [])


def test_an_api_refusal_is_described_by_the_servers_message_not_its_headers() -> None:
    from kubernetes_asyncio.client.rest import ApiException

    from objmig.controller.kube import KubeRefused
    from objmig.controller.outcome import describe_failure

    error = ApiException(status=422, reason="Unprocessable Entity")
    error.body = json.dumps({"message": 'Job.batch "x" is invalid: spec.template: bad'})
    error.headers = {"Audit-Id": "0b6c", "Content-Type": "application/json"}

    text = describe_failure(error)

    assert text == (
        'the Kubernetes API answered 422 Unprocessable Entity: Job.batch "x" is invalid: '
        "spec.template: bad"
    )
    assert KubeRefused("creating Job ns/x", error).permanent
    error.status = 503
    assert not KubeRefused("creating Job ns/x", error).permanent
    terminating = ApiException(status=403, reason="Forbidden")
    terminating.body = json.dumps(
        {"message": "unable to create new content in namespace ns because it is being terminated"}
    )
    refused = KubeRefused("creating Job ns/x", terminating)
    assert refused.namespace_terminating
    assert not refused.permanent
    quota = ApiException(status=403, reason="Forbidden")
    quota.body = json.dumps({"message": 'jobs.batch "x" is forbidden: exceeded quota: jobs'})
    assert not KubeRefused("creating Job ns/x", quota).permanent


def test_objects_missing_is_one_event_when_the_first_is_found_then_rides_on_phase_changes() -> None:
    passes = [
        ObjectMigrationStatus(phase="Copying", steps=StepsStatus(missing=missing))
        for missing in (0, 0, 2, 2, 5, 7)
    ]
    passes.append(ObjectMigrationStatus(phase="AwaitingCutover", steps=StepsStatus(missing=7)))
    passes.append(ObjectMigrationStatus(phase="AwaitingCutover", steps=StepsStatus(missing=7)))

    events = [
        event
        for previous, current in itertools.pairwise(passes)
        for event in transition_events(previous, current)
    ]

    missing = [e for e in events if e.reason == Reason.OBJECTS_MISSING]
    assert [e.message.split(";")[0] for e in missing] == ["selected objects do not exist (2 so far"]
    assert missing[0].type == "Warning"
    (phase,) = [e for e in events if e.reason == Reason.PHASE_CHANGED]
    assert phase.message.startswith("Copying -> AwaitingCutover")
    assert phase.message.endswith("; 7 selected objects do not exist")
