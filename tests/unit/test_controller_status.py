"""The operator's status shaping: the per-object window stays within a byte budget."""

from __future__ import annotations

import json

from objmig.api.migration import ObjectMigrationStatus, ObjectStatus
from objmig.controller.migration_service import bound_window, merge_patch


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
