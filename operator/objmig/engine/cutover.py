"""Cutover actions: switch applications to the target, and switch them back on rollback.

The catalog action compare-and-swaps each verified object's location in the application's
own table: a row is changed only if it still holds the old location, so a row the
application rewrote meanwhile is left alone (and counted), and running the swap twice
changes nothing the second time. Rollback is the same swap in the other direction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import asyncpg

from objmig.api.migration import CatalogAction, ConfigMapAction, ObjectMigrationSpec
from objmig.engine.policy import CatchUp, Gate, cutover_begun, rollback_gate
from objmig.engine.secrets import SecretSource, require
from objmig.ledger import Ledger, ObjectRow, ObjectState
from objmig.storage.errors import describe


class ConfigMapWriter(Protocol):
    """Writes the ConfigMap action's values; only the operator has a cluster to write to."""

    async def read(self, action: ConfigMapAction) -> dict[str, str | None]:
        """The current values of the action's keys (None: the key is absent)."""
        ...

    async def apply(self, action: ConfigMapAction) -> None:
        """Set ``action.data``."""
        ...

    async def restore(self, action: ConfigMapAction, previous: dict[str, str | None]) -> None:
        """Put ``previous`` back (removing keys that were absent)."""
        ...


@dataclass(frozen=True)
class SwapResult:
    """How many catalog rows moved, were already where they should be, or conflicted."""

    swapped: int = 0
    already: int = 0
    conflicts: int = 0


def _quote_identifier(name: str) -> str:
    # The API model restricts names to [A-Za-z_][A-Za-z0-9_]* (optionally schema.table);
    # quoting keeps mixed case intact and makes the SQL safe by construction anyway.
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


def locations(spec: ObjectMigrationSpec, action: CatalogAction, row: ObjectRow) -> tuple[str, str]:
    """The (source, target) locations of one object as the application writes them."""
    source = action.location_format.format(bucket=spec.source.bucket, key=row.key)
    target = action.location_format.format(bucket=spec.target.bucket, key=row.target_key or row.key)
    return source, target


async def swap_catalog(
    ledger: Ledger,
    migration_id: int,
    spec: ObjectMigrationSpec,
    dsn: str,
    *,
    reverse: bool = False,
) -> SwapResult:
    """Point the application's rows at the target (or, ``reverse``, back at the source)."""
    action = spec.cutover.catalog
    assert action is not None
    table = _quote_identifier(action.table)
    key_column = _quote_identifier(action.key_column)
    location_column = _quote_identifier(action.location_column)
    # One statement per batch: swap where the old value still stands, and report rows that
    # already hold the new value, so a re-run after a crash counts them as done.
    statement = f"""
        WITH wanted AS (
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) AS w(k, old, new)
        ),
        swapped AS (
            UPDATE {table} t SET {location_column} = wanted.new
            FROM wanted
            WHERE t.{key_column} = wanted.k AND t.{location_column} = wanted.old
            RETURNING t.{key_column}
        )
        SELECT
            (SELECT count(*) FROM swapped) AS swapped,
            (SELECT count(*) FROM {table} t JOIN wanted
                ON t.{key_column} = wanted.k AND t.{location_column} = wanted.new) AS already,
            (SELECT count(*) FROM wanted) AS wanted
    """  # noqa: S608 - identifiers are validated by the API model and quoted
    total = SwapResult()
    connection = await asyncpg.connect(dsn)
    try:
        async for batch in _batches(
            ledger.iter_rows(migration_id, [ObjectState.VERIFIED]), action.batch_size
        ):
            keys, olds, news = [], [], []
            for row in batch:
                source, target = locations(spec, action, row)
                old, new = (target, source) if reverse else (source, target)
                keys.append(row.key)
                olds.append(old)
                news.append(new)
            async with connection.transaction():
                record = await connection.fetchrow(statement, keys, olds, news)
            assert record is not None
            swapped, already, wanted = record["swapped"], record["already"], record["wanted"]
            # `already` is read after the update in the same snapshot rules: rows swapped
            # now are not visible to it, so it counts only rows swapped by an earlier run.
            total = SwapResult(
                swapped=total.swapped + swapped,
                already=total.already + already,
                conflicts=total.conflicts + max(0, wanted - swapped - already),
            )
    finally:
        await connection.close()
    return total


async def _batches(rows: AsyncIterator[ObjectRow], size: int) -> AsyncIterator[list[ObjectRow]]:
    batch: list[ObjectRow] = []
    async for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def stopped_half_way(
    step: Literal["cutover", "rollback"], error: Exception, retry: str
) -> dict[str, Any]:
    """The ``failed`` state patch for a cutover or rollback that raised.

    ``retry`` says how this driver tries again ("edit the spec", "run again"). What the
    step did stays done and recorded, for the next attempt to finish (or, for a cutover,
    a rollback to undo).
    """
    undo = ", or set spec.cutover.rollback: true to undo it" if step == "cutover" else ""
    message = (
        f"the {step} stopped half-way ({describe(error)}); what was done is kept: fix the "
        f"cause and {retry} to finish it{undo}"
    )
    return {"failed": {"reason": f"{step.capitalize()}Failed", "message": message}}


async def perform_cutover(
    ledger: Ledger,
    migration_id: int,
    spec: ObjectMigrationSpec,
    secrets: SecretSource,
    config_maps: ConfigMapWriter | None,
) -> dict[str, Any]:
    """Carry out the cutover actions, stamp the ledger, and record what was done.

    Returns the recorded ``cutover`` state (the shape of ``status.cutover``). Progress is
    recorded in ``cutoverInProgress`` before each action, so a cutover that stops half-way
    can be finished (the actions are idempotent: the catalog swap counts rows swapped
    before, the ConfigMap values are set again) or rolled back (`perform_rollback`). The
    ConfigMap's previous values are saved before it is written: saved after, a crash in
    between would make the next attempt save the new values as the ones to restore.
    """
    state = await ledger.get_state(migration_id)
    progress: dict[str, Any] = dict(state.get("cutoverInProgress") or {})
    if not cutover_begun(state):
        progress = {"startedAt": datetime.now(UTC).isoformat()}
        await ledger.update_state(migration_id, {"cutoverInProgress": progress})
    config_map = spec.cutover.config_map_ref
    if (
        config_map is not None
        and config_maps is not None
        and "previousConfigMapData" not in progress
    ):
        # Read first, before any action: this also finds a missing ConfigMap before a
        # catalog row is swapped.
        progress["previousConfigMapData"] = await config_maps.read(config_map)
        await ledger.update_state(migration_id, {"cutoverInProgress": progress})
    actions: list[str] = []
    swapped = 0
    catalog = spec.cutover.catalog
    if catalog is not None:
        dsn = require(secrets, catalog.dsn_secret_ref.name, catalog.dsn_secret_ref.key)
        result = await swap_catalog(ledger, migration_id, spec, dsn)
        swapped = result.swapped + result.already
        actions.append(
            f"catalog {catalog.table}: {result.swapped} swapped, {result.already} already "
            f"on target, {result.conflicts} changed by the application and left alone"
        )
    if config_map is not None:
        if config_maps is None:
            actions.append(
                f"configMap {config_map.name}: set {', '.join(sorted(config_map.data))} "
                "(no cluster: apply these values yourself)"
            )
        else:
            await config_maps.apply(config_map)
            actions.append(f"configMap {config_map.name}: set {', '.join(sorted(config_map.data))}")
    await ledger.mark_cut_over(migration_id)
    record = {
        "at": datetime.now(UTC).isoformat(),
        "actions": actions,
        "catalogRowsSwapped": swapped,
        "configMapData": dict(config_map.data) if config_map else {},
        "previousConfigMapData": progress.get("previousConfigMapData", {}),
    }
    await ledger.update_state(migration_id, {"cutover": record, "cutoverInProgress": None})
    return record


async def perform_rollback(
    ledger: Ledger,
    migration_id: int,
    spec: ObjectMigrationSpec,
    secrets: SecretSource,
    config_maps: ConfigMapWriter | None,
) -> Gate:
    """Revert the cutover actions while no source object can have been deleted.

    A cutover that stopped half-way is rolled back too: its catalog swap is reversed row by
    row (rows it never reached still hold the source location and are counted as such),
    and a ConfigMap is restored if its previous values were saved. Afterwards the next
    cutover waits for a re-scan (`CatchUp.after_rollback`): applications wrote to the
    source again meanwhile.
    """
    state = await ledger.get_state(migration_id)
    cutover = state.get("cutover") or {}
    half_done = cutover_begun(state)
    cut_over = (bool(cutover.get("at")) and not cutover.get("rolledBackAt")) or half_done
    gate = rollback_gate(cut_over=cut_over, cleanup_started=bool(state.get("cleanupStarted")))
    if gate.ok and not await ledger.start_rollback(migration_id):
        # A cleanup started since the state was read.
        gate = rollback_gate(cut_over=cut_over, cleanup_started=True)
    if not gate.ok:
        if gate.reason != "NotCutOver":
            await ledger.update_state(
                migration_id, {"cutover": {**cutover, "rollbackBlocked": gate.message}}
            )
        return gate
    if half_done:
        # What this cutover did is in its progress record; an older record (of a cutover
        # rolled back before) describes nothing that is in place now.
        progress = state["cutoverInProgress"]
        cutover = {
            "actions": ["the cutover stopped before it finished"],
            "previousConfigMapData": progress.get("previousConfigMapData", {}),
        }
    actions = list(cutover.get("actions", []))
    if spec.cutover.catalog is not None:
        ref = spec.cutover.catalog.dsn_secret_ref
        result = await swap_catalog(
            ledger, migration_id, spec, require(secrets, ref.name, ref.key), reverse=True
        )
        actions.append(f"rollback catalog: {result.swapped} rows pointed back at the source")
    config_map = spec.cutover.config_map_ref
    if config_map is not None and config_maps is not None and ("previousConfigMapData" in cutover):
        await config_maps.restore(config_map, cutover["previousConfigMapData"])
        actions.append(f"rollback configMap {config_map.name}: previous values restored")
    await ledger.clear_cut_over(migration_id)
    await ledger.update_state(
        migration_id,
        {
            "cutover": {
                **cutover,
                "actions": actions,
                "rolledBackAt": datetime.now(UTC).isoformat(),
            },
            "cutoverInProgress": None,
            "rollbackStarted": None,
        }
        | CatchUp.of(state).after_rollback(),
    )
    return gate
