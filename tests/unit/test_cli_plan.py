"""What `objmig plan` prints when the globs select otherwise than they did (issue 21.7)."""

from __future__ import annotations

import pytest

from objmig.api.migration import ObjectMigrationStatus, PlanStatus
from objmig.cli.migrate import report_outcome
from objmig.engine.local_run import RunResult


def test_a_plan_whose_globs_select_otherwise_prints_a_warning(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    plan = PlanStatus(
        objects=1, selected_differently=2, selected_differently_examples=["-logs/x.tmp", "+a"]
    )

    report_outcome("ns/m", RunResult("planned", ObjectMigrationStatus(plan=plan)))

    out = capsys.readouterr().out
    assert "WARNING: the include/exclude globs select 2 objects otherwise" in out
    assert "-logs/x.tmp, +a" in out


def test_a_plan_whose_globs_select_as_before_prints_no_warning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    report_outcome("ns/m", RunResult("planned", ObjectMigrationStatus(plan=PlanStatus())))

    assert "WARNING" not in capsys.readouterr().out
