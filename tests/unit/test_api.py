"""API models: defaults, bounds, cross-field rules, and errors that name the field."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from objmig.api import (
    ObjectMigration,
    parse_duration,
    parse_quantity,
    set_condition,
)
from objmig.api.conditions import find_condition
from objmig.api.loading import SpecError, parse_resource
from objmig.api.types import format_duration


def _migration(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "source": {"bucket": "src-bucket"},
        "target": {"bucket": "dst-bucket"},
    }
    base.update(spec)
    return {
        "apiVersion": "objmig.dev/v1alpha1",
        "kind": "ObjectMigration",
        "metadata": {"name": "m1", "namespace": "ns"},
        "spec": base,
    }


def _problems(document: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecError) as caught:
        parse_resource(document)
    return caught.value.problems


def test_minimal_migration_gets_documented_defaults() -> None:
    migration = parse_resource(_migration())
    assert isinstance(migration, ObjectMigration)
    spec = migration.spec
    assert spec.copy_.mode == "auto"
    assert spec.copy_.preserve_part_boundaries is True
    assert spec.copy_.overwrite == "ifDifferent"
    assert spec.verify.mode == "etag"
    assert spec.cutover.policy == "Automatic"
    assert spec.target.key_template == "{relative}"
    assert spec.restore is None


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            {"copy": {"concurrency": "many"}},
            "spec.copy.concurrency: Input should be a valid integer",
        ),
        ({"copy": {"concurrency": 0}}, "spec.copy.concurrency: Input should be greater than"),
        ({"copy": {"overwrite": "sometimes"}}, "spec.copy.overwrite: Input should be 'never'"),
        ({"verify": {"mode": "md5"}}, "spec.verify.mode: Input should be"),
        (
            {"target": {"bucket": "dst-bucket", "encryption": {"mode": "SSE-KMS"}}},
            "spec.target.encryption: SSE-KMS needs kmsKeyId",
        ),
        (
            {"target": {"bucket": "dst-bucket", "encryption": {"mode": "SSE-C"}}},
            "spec.target.encryption: SSE-C needs customerKeySecretRef",
        ),
        (
            {"restore": {"tier": "Expedited"}},
            "spec.restore: Expedited retrieval is not available for DEEP_ARCHIVE",
        ),
        (
            {"cutover": {"approved": True}},
            "spec.cutover: approved is only meaningful with policy Manual",
        ),
        (
            {"selection": {"minSize": "5Mi", "maxSize": "1Ki"}},
            "spec.selection: minSize must not exceed maxSize",
        ),
        (
            {
                "selection": {
                    "modifiedAfter": "2026-02-01T00:00:00Z",
                    "modifiedBefore": "2026-01-01T00:00:00Z",
                }
            },
            "spec.selection: modifiedAfter must be before modifiedBefore",
        ),
        ({"selection": {"minSize": "5 MB"}}, "spec.selection.minSize: '5 MB' is not a quantity"),
        ({"retry": {"objectTimeout": "ten minutes"}}, "spec.retry.objectTimeout:"),
        ({"copy": {"concurency": 4}}, "spec.copy.concurency: Extra inputs are not permitted"),
        (
            {"target": {"bucket": "dst-bucket", "keyTemplate": "{nope}/{key}"}},
            "spec.target.keyTemplate: keyTemplate uses unknown placeholder",
        ),
        (
            {"selection": {"metadata": [{"key": "v", "operator": "Lt", "values": ["x"]}]}},
            "spec.selection.metadata[0]: Lt and Gt need exactly one integer value",
        ),
        (
            {
                "selection": {
                    "metadata": [{"key": "v", "operator": "Lt", "values": ["3"], "default": "x"}]
                }
            },
            "spec.selection.metadata[0]: with Lt and Gt, default must be an integer",
        ),
        (
            {"selection": {"metadata": [{"key": "v", "operator": "Exists", "default": "0"}]}},
            "spec.selection.metadata[0]: default is what a missing key counts as",
        ),
    ],
)
def test_bad_spec_names_the_field(spec: dict[str, Any], expected: str) -> None:
    problems = _problems(_migration(**spec))
    assert any(p.startswith(expected) or expected in p for p in problems), problems


def test_missing_required_field_is_named() -> None:
    document = _migration()
    del document["spec"]["target"]
    assert any(p.startswith("spec: target is required") for p in _problems(document))


def test_unknown_kind_and_version_are_rejected() -> None:
    document = _migration()
    document["kind"] = "ObjectMigrations"
    assert _problems(document)[0].startswith("kind: expected one of")
    document = _migration()
    document["apiVersion"] = "objmig.dev/v1"
    assert _problems(document)[0].startswith("apiVersion: expected objmig.dev/v1alpha1")


def test_cli_rejects_bad_spec_with_field_path_and_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_migration(copy={"overwrite": "sometimes"})))
    result = subprocess.run(
        [sys.executable, "-m", "objmig", "validate", "-f", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "spec.copy.overwrite" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("15m", 900), ("72h", 259200), ("1h30m", 5400), ("500ms", 0.5)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "10", "3d", "1 h", "-5m"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_format_duration() -> None:
    assert format_duration(timedelta(hours=2, minutes=5, seconds=3)) == "2h5m3s"
    assert format_duration(timedelta(0)) == "0s"
    assert format_duration(timedelta(minutes=3)) == "3m"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 0), (1024, 1024), ("5Mi", 5 * 2**20), ("1.5Gi", 3 * 2**29), ("2k", 2000), ("7", 7)],
)
def test_parse_quantity(value: int | str, expected: int) -> None:
    assert parse_quantity(value) == expected


@pytest.mark.parametrize("value", ["5 Mi", "5MB", "-1", "", "1.2.3"])
def test_parse_quantity_rejects(value: str) -> None:
    with pytest.raises(ValueError, match="not a quantity"):
        parse_quantity(value)


def test_condition_keeps_transition_time_while_status_holds() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    t1 = t0 + timedelta(minutes=5)
    conditions = set_condition([], "Copied", "False", "InProgress", "1/10", now=t0)
    conditions = set_condition(conditions, "Copied", "False", "InProgress", "5/10", now=t1)
    copied = find_condition(conditions, "Copied")
    assert copied is not None
    assert copied.last_transition_time == t0
    assert copied.message == "5/10"
    conditions = set_condition(conditions, "Copied", "True", "AllCopied", "10/10", now=t1)
    copied = find_condition(conditions, "Copied")
    assert copied is not None
    assert copied.last_transition_time == t1


def test_condition_order_is_stable() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    conditions = set_condition([], "Scanned", "True", "Done", "", now=now)
    conditions = set_condition(conditions, "Copied", "False", "Waiting", "", now=now)
    conditions = set_condition(conditions, "Scanned", "False", "Rescanning", "", now=now)
    assert [c.type for c in conditions] == ["Scanned", "Copied"]
