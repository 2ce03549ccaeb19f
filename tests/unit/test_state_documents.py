"""Bookkeeping documents written before the typed state still load, and mean the same.

The documents in ``data/state-documents-659a7f3.json`` were captured from the ledger of the
code before ``objmig.ledger.state`` existed (commit 659a7f3), while its own engine, cleanup
and operator tests ran: every distinct shape they wrote, JSON nulls and all. Each is read
here twice, as that code read it (raw keys, below) and through the typed models, and the
two readings must agree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from objmig.ledger.state import CleanupState, MigrationState, encode_changes

_CAPTURED = json.loads(
    (Path(__file__).parent / "data" / "state-documents-659a7f3.json").read_text()
)
_MIGRATIONS = [d["state"] for d in _CAPTURED["documents"] if d["kind"] == "migrations"]
_CLEANUPS = [d["state"] for d in _CAPTURED["documents"] if d["kind"] == "cleanups"]


def _section(raw: dict[str, Any], key: str) -> dict[str, Any]:
    return raw.get(key) or {}


def test_the_capture_covers_every_section_of_a_migration() -> None:
    keys = {key for raw in _MIGRATIONS for key in raw}
    assert keys >= {
        "spec", "generation", "dryRun", "paused", "failed", "scan", "catchUp", "operator",
        "cutover", "cutoverInProgress", "verification", "cleanupStarted", "rollbackStarted",
        "manifestConfigMap",
    }  # fmt: skip
    assert any("rolledBackAt" in _section(raw, "cutover") for raw in _MIGRATIONS)
    assert any("rollbackBlocked" in _section(raw, "cutover") for raw in _MIGRATIONS)


@pytest.mark.parametrize("raw", _MIGRATIONS)
def test_a_captured_migration_document_reads_as_the_old_code_read_it(raw: dict[str, Any]) -> None:
    state = MigrationState.model_validate(raw)

    cutover = _section(raw, "cutover")
    assert state.cut_over == bool(cutover.get("at") and not cutover.get("rolledBackAt"))
    assert state.rolled_back == bool(cutover.get("rolledBackAt"))
    assert state.cutover_begun == bool(raw.get("cutoverInProgress"))
    assert state.spec == raw.get("spec")
    assert state.generation == raw.get("generation")
    assert state.dry_run == bool(raw.get("dryRun"))
    for name in ("failed", "paused"):
        problem, recorded = getattr(state, name), raw.get(name)
        assert (problem is None) == (not recorded)
        if recorded:
            assert problem.reason == recorded["reason"]
            assert problem.message == recorded.get("message", "")
    scan = _section(raw, "scan")
    assert state.scan.id == scan.get("id", 0)
    assert state.scan.running == bool(scan.get("running"))
    assert (state.scan.completed_at is None) == (not scan.get("completedAt"))
    assert state.scan.delta == scan.get("new", 0) + scan.get("changed", 0)
    catch_up = _section(raw, "catchUp")
    assert state.catch_up.rounds == catch_up.get("rounds", 0)
    assert state.catch_up.last_delta == catch_up.get("lastDelta")
    assert state.catch_up.rolled_back_at_round == catch_up.get("rolledBackAtRound")
    rounds = _section(raw, "operator")
    assert (state.rounds.round, state.rounds.wave) == (
        rounds.get("round", 0),
        rounds.get("wave", 0),
    )
    verification = _section(raw, "verification")
    if verification:
        assert state.verification is not None
        assert state.verification.digest == verification["digest"]
        assert state.verification.objects == verification["objects"]
    if cutover:
        assert state.cutover is not None
        assert list(state.cutover.actions) == cutover.get("actions", [])
        assert state.cutover.previous_config_map_data == cutover.get("previousConfigMapData")
        assert state.cutover.rollback_blocked == cutover.get("rollbackBlocked")
    assert state.cleanup_started == bool(raw.get("cleanupStarted"))
    assert state.rollback_started == bool(raw.get("rollbackStarted"))
    worklist = raw.get("manifestConfigMap")
    assert (state.manifest_config_map is None) == (not worklist)


@pytest.mark.parametrize("raw", _MIGRATIONS)
def test_a_captured_migration_document_survives_a_save_and_a_load(raw: dict[str, Any]) -> None:
    state = MigrationState.model_validate(raw)
    sections = {name: getattr(state, name) for name in MigrationState.model_fields}

    saved = encode_changes(MigrationState, sections)

    assert MigrationState.model_validate(json.loads(json.dumps(saved))) == state


@pytest.mark.parametrize("raw", _CLEANUPS)
def test_a_captured_cleanup_document_reads_as_the_old_code_read_it(raw: dict[str, Any]) -> None:
    state = CleanupState.model_validate(raw)

    assert state.spec == raw["spec"]
    assert state.pass_ == raw.get("pass", 0)
    assert (state.completed_at is None) == (not raw.get("completedAt"))
    assert state.summary == raw.get("summary")
    leftovers = raw.get("leftovers")
    if leftovers:
        assert state.leftovers is not None
        assert state.leftovers.uploads_aborted == leftovers.get("uploadsAborted", 0)
        assert state.leftovers.objects_deleted == leftovers.get("objectsDeleted", 0)
