"""The Argo CD health checks (docs/argocd-health/*.lua) on statuses the operator writes.

Argo CD runs these scripts with gopher-lua (Lua 5.1 semantics) and a global ``obj``; here they
run in Lua 5.1 through ``lupa``. Sample statuses are built with the operator's own status models
and ``derive_phase``, so a renamed field or a new phase rule breaks these tests rather than the
user's dashboard.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

lupa = pytest.importorskip("lupa")

from objmig.api.conditions import Condition  # noqa: E402
from objmig.api.migration import ObjectMigrationStatus  # noqa: E402
from objmig.api.migration_cleanup import MigrationCleanupStatus, UnmetGate  # noqa: E402
from objmig.engine.status import derive_phase  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
HEALTH_DIR = ROOT / "docs" / "argocd-health"
CHART_NOTES_COPY = ROOT / "charts" / "objmig" / "files" / "argocd-health"
NOW = datetime(2025, 1, 1, tzinfo=UTC)

# A healthy migration in progress: the conditions the operator sets while copying.
COPYING = {
    "Scanned": ("True", "ScanComplete", "10 objects selected"),
    "Restored": ("True", "NothingToRestore", "no object waits for a restore"),
    "Copied": ("False", "CopyInProgress", "4 of 10 objects finished"),
    "Verified": ("False", "VerificationPending", "4 objects verified"),
    "CutoverReady": ("False", "NotAllVerified", "4 of 10 objects verified"),
    "CutOver": ("False", "NotCutOver", "4 of 10 objects verified"),
    "Paused": ("False", "Running", "not paused"),
    "Failed": ("False", "NoError", "no migration-wide error"),
}


def run_health(kind: str, resource: dict[str, Any]) -> dict[str, str]:
    """Run the kind's script as Argo CD does: global ``obj``, a returned table."""
    lua = lupa.lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(resource, recursive=True)
    result = lua.execute((HEALTH_DIR / f"objmig.dev_{kind}.lua").read_text())
    assert result is not None, "the script returned nothing"
    return {"status": result["status"], "message": result["message"]}


def conditions_of(spec: dict[str, tuple[str, str, str]]) -> list[Condition]:
    return [
        Condition(type=t, status=s, reason=r, message=m, last_transition_time=NOW)  # type: ignore[arg-type]
        for t, (s, r, m) in spec.items()
    ]


def migration(
    changes: dict[str, tuple[str, str, str]] | None = None,
    *,
    dry_run: bool = False,
    generation: int = 1,
    observed: int = 1,
    percent: int = 40,
) -> dict[str, Any]:
    """An ObjectMigration whose status the operator could have written."""
    conditions = conditions_of({**COPYING, **(changes or {})})
    status = ObjectMigrationStatus(
        observed_generation=observed,
        phase=derive_phase(conditions, dry_run=dry_run),
        conditions=conditions,
    )
    status.progress.percent = percent
    return {
        "apiVersion": "objmig.dev/v1alpha1",
        "kind": "ObjectMigration",
        "metadata": {"name": "m", "namespace": "ns", "generation": generation},
        "status": status.to_wire(),
    }


ALL_DONE = {
    "Copied": ("True", "AllCopied", "10 verified, 0 failed, 0 skipped"),
    "Verified": ("True", "AllVerified", "10 verified, 0 failed, 0 skipped"),
}


def test_health_scripts_are_shipped_identically_in_the_chart() -> None:
    for script in sorted(HEALTH_DIR.glob("*.lua")):
        assert (CHART_NOTES_COPY / script.name).read_text() == script.read_text(), script.name
    assert {p.name for p in CHART_NOTES_COPY.glob("*.lua")} == {
        p.name for p in HEALTH_DIR.glob("*.lua")
    }


def test_migration_without_status_is_progressing() -> None:
    health = run_health("ObjectMigration", {"metadata": {"generation": 1}, "spec": {}})
    assert health["status"] == "Progressing"


def test_migration_copying_is_progressing_with_percent() -> None:
    resource = migration()
    assert resource["status"]["phase"] == "Copying"
    assert run_health("ObjectMigration", resource) == {
        "status": "Progressing",
        "message": "Copying (40%)",
    }


def test_migration_scanning_is_progressing() -> None:
    resource = migration({"Scanned": ("False", "Scanning", "listing the source")})
    assert resource["status"]["phase"] == "Scanning"
    assert run_health("ObjectMigration", resource)["status"] == "Progressing"


def test_migration_with_unobserved_generation_is_progressing() -> None:
    resource = migration({**ALL_DONE, "CutOver": ("True", "CutOver", "cut over")}, generation=3)
    health = run_health("ObjectMigration", resource)
    assert health["status"] == "Progressing"
    assert "generation 3" in health["message"]


def test_migration_cut_over_is_healthy() -> None:
    resource = migration(
        {
            **ALL_DONE,
            "CutoverReady": ("True", "CutOver", "the migration has cut over"),
            "CutOver": ("True", "CutOver", "cut over: configMap app: set BUCKET"),
        }
    )
    assert resource["status"]["phase"] == "CutOver"
    assert run_health("ObjectMigration", resource) == {
        "status": "Healthy",
        "message": "cut over: configMap app: set BUCKET",
    }


def test_dry_run_with_plan_ready_is_healthy() -> None:
    resource = migration(
        {**ALL_DONE, "Ready": ("True", "PlanReady", "dry run: see status.plan")}, dry_run=True
    )
    assert resource["status"]["phase"] == "Completed"
    assert run_health("ObjectMigration", resource)["status"] == "Healthy"


def test_migration_suspended_by_spec_is_suspended() -> None:
    resource = migration({"Paused": ("True", "Suspended", "spec.suspend is true")})
    assert resource["status"]["phase"] == "Paused"
    assert run_health("ObjectMigration", resource) == {
        "status": "Suspended",
        "message": "spec.suspend is true",
    }


def test_migration_paused_over_failure_budget_is_suspended_with_the_reason() -> None:
    message = "12 objects failed, more than maxFailedObjects (10)"
    resource = migration({"Paused": ("True", "FailureBudgetExceeded", message)})
    assert run_health("ObjectMigration", resource) == {"status": "Suspended", "message": message}


def test_migration_failed_is_degraded() -> None:
    resource = migration({"Failed": ("True", "AccessDenied", "source bucket: access denied")})
    assert resource["status"]["phase"] == "Failed"
    assert run_health("ObjectMigration", resource) == {
        "status": "Degraded",
        "message": "source bucket: access denied",
    }


def test_migration_awaiting_manual_approval_is_suspended() -> None:
    resource = migration(
        {
            **ALL_DONE,
            "CutoverReady": ("False", "AwaitingApproval", "set spec.cutover.approved: true"),
        }
    )
    assert resource["status"]["phase"] == "AwaitingCutover"
    assert run_health("ObjectMigration", resource)["status"] == "Suspended"


def test_migration_awaiting_automatic_cutover_is_progressing() -> None:
    resource = migration(
        {**ALL_DONE, "CutoverReady": ("True", "GatesPassed", "10 objects verified")}
    )
    assert resource["status"]["phase"] == "AwaitingCutover"
    assert run_health("ObjectMigration", resource)["status"] == "Progressing"


@pytest.mark.parametrize("reason", ["NothingSelected", "NothingVerified", "CatchUpNotConverging"])
def test_migration_with_a_gate_that_cannot_open_is_degraded(reason: str) -> None:
    resource = migration({**ALL_DONE, "CutoverReady": ("False", reason, "cannot cut over")})
    assert resource["status"]["phase"] == "AwaitingCutover"
    health = run_health("ObjectMigration", resource)
    assert health == {"status": "Degraded", "message": "Cutover blocked: cannot cut over"}


def test_migration_with_failed_objects_is_degraded() -> None:
    summary = "8 verified, 2 failed, 0 skipped"
    resource = migration(
        {
            "Copied": ("True", "AllCopied", summary),
            "Verified": ("False", "SomeObjectsFailed", summary),
            "CutoverReady": ("False", "NotAllVerified", "8 of 10 objects verified"),
        }
    )
    assert resource["status"]["phase"] == "AwaitingCutover"
    assert run_health("ObjectMigration", resource) == {
        "status": "Degraded",
        "message": f"Cutover blocked: {summary}",
    }


# -- MigrationCleanup ----------------------------------------------------------------------


def cleanup(
    phase: str,
    conditions: dict[str, tuple[str, str, str]],
    unmet: list[UnmetGate] | None = None,
) -> dict[str, Any]:
    status = MigrationCleanupStatus(
        observed_generation=1,
        phase=phase,  # type: ignore[arg-type]
        conditions=conditions_of(conditions),
        unmet_gates=unmet or [],
    )
    return {
        "apiVersion": "objmig.dev/v1alpha1",
        "kind": "MigrationCleanup",
        "metadata": {"name": "c", "namespace": "ns", "generation": 1},
        "status": status.to_wire(),
    }


def test_cleanup_complete_is_healthy() -> None:
    resource = cleanup(
        "Completed",
        {
            "GatesPassed": ("True", "GatesPassed", "every migration-level gate holds"),
            "Complete": ("True", "Deleted", "10 deleted, 0 skipped"),
        },
    )
    assert run_health("MigrationCleanup", resource) == {
        "status": "Healthy",
        "message": "10 deleted, 0 skipped",
    }


def test_cleanup_deleting_is_progressing() -> None:
    resource = cleanup(
        "Deleting", {"GatesPassed": ("True", "GatesPassed", "every migration-level gate holds")}
    )
    assert run_health("MigrationCleanup", resource) == {
        "status": "Progressing",
        "message": "Deleting",
    }


def test_cleanup_blocked_is_suspended_naming_the_unmet_gates() -> None:
    resource = cleanup(
        "Blocked",
        {"GatesPassed": ("False", "GracePeriodNotElapsed", "grace period: 2h left")},
        [UnmetGate(gate="GracePeriod", reason="GracePeriodNotElapsed", message="2h left")],
    )
    assert run_health("MigrationCleanup", resource) == {
        "status": "Suspended",
        "message": "Blocked: GracePeriod: 2h left",
    }


def test_cleanup_failed_is_degraded() -> None:
    resource = cleanup("Failed", {"Failed": ("True", "MigrationNotFound", "no migration m")})
    assert run_health("MigrationCleanup", resource) == {
        "status": "Degraded",
        "message": "no migration m",
    }


def test_cleanup_without_status_is_progressing() -> None:
    assert run_health("MigrationCleanup", {"metadata": {}})["status"] == "Progressing"


# -- health conditions (spec.health, target directories) -----------------------------------


def test_a_target_directory_short_of_space_is_degraded_though_paused() -> None:
    low = "2 MiB free of 8 MiB, under target.filesystem.minFreeSpace 4 MiB"
    resource = migration(
        {
            "Paused": ("True", "TargetSpaceLow", f"paused: {low}"),
            "TargetSpaceLow": ("True", "FreeSpaceBelowMinimum", low),
        }
    )
    assert resource["status"]["phase"] == "Paused"
    assert run_health("ObjectMigration", resource) == {
        "status": "Degraded",
        "message": f"Target space low: {low}",
    }


@pytest.mark.parametrize(
    ("kind", "reason"), [("Degraded", "ErrorRateHigh"), ("Stalled", "ThroughputBelowFloor")]
)
def test_a_running_migration_that_is_degraded_or_stalled_is_degraded(
    kind: str, reason: str
) -> None:
    resource = migration({kind: ("True", reason, "look at the workers")})
    assert resource["status"]["phase"] == "Copying"
    assert run_health("ObjectMigration", resource) == {
        "status": "Degraded",
        "message": f"{kind}: look at the workers",
    }


def test_health_conditions_that_hold_no_longer_leave_it_progressing() -> None:
    resource = migration(
        {
            "Degraded": ("False", "AllFeaturesPresent", "both stores support every aspect"),
            "Stalled": ("False", "Progressing", "1048576 B/s, 3 objects/s"),
            "TargetSpaceLow": ("False", "FreeSpaceAvailable", "6 GiB free"),
        }
    )
    assert run_health("ObjectMigration", resource) == {
        "status": "Progressing",
        "message": "Copying (40%)",
    }
