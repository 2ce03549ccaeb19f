"""Cutover actions: switch applications to the target, and switch them back on rollback.

The catalog action compare-and-swaps each verified object's location in the application's
own table: a row is changed only if it still holds the old location, so a row the
application rewrote meanwhile is left alone (and counted), and running the swap twice
changes nothing the second time. Rollback is the same swap in the other direction.

The backfill (`objmig.engine.backfill`) writes the target's attributes beside it, into the
rows of objects not backfilled yet; its rollback puts back what it wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from objmig.api.conditions import Reason
from objmig.api.migration import CatalogAction, ConfigMapAction, ObjectMigrationSpec
from objmig.engine.appdb import batches, connection, quote_identifier
from objmig.engine.backfill import backfill_verified, revert_backfill
from objmig.engine.pipeline.outcomes import HOOK_PENDING, NOT_FOUND
from objmig.engine.policy import CatchUp, Gate, rollback_gate
from objmig.engine.secrets import SecretSource, require
from objmig.ledger import CutoverProgress, CutoverRecord, Ledger, ObjectRow, ObjectState


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
    table = quote_identifier(action.table)
    key_column = quote_identifier(action.key_column)
    location_column = quote_identifier(action.location_column)
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
    async with connection(dsn) as conn:
        async for batch in batches(
            ledger.iter_rows(migration_id, [ObjectState.VERIFIED]), action.batch_size
        ):
            keys, olds, news = [], [], []
            for row in batch:
                source, target = locations(spec, action, row)
                old, new = (target, source) if reverse else (source, target)
                keys.append(row.key)
                olds.append(old)
                news.append(new)
            async with conn.transaction():
                record = await conn.fetchrow(statement, keys, olds, news)
            assert record is not None
            swapped, already, wanted = record["swapped"], record["already"], record["wanted"]
            # `already` is read after the update in the same snapshot rules: rows swapped
            # now are not visible to it, so it counts only rows swapped by an earlier run.
            total = SwapResult(
                swapped=total.swapped + swapped,
                already=total.already + already,
                conflicts=total.conflicts + max(0, wanted - swapped - already),
            )
    return total


async def perform_cutover(
    ledger: Ledger,
    migration_id: int,
    spec: ObjectMigrationSpec,
    secrets: SecretSource,
    config_maps: ConfigMapWriter | None,
) -> CutoverRecord:
    """Carry out the cutover actions, stamp the ledger, and record what was done.

    Progress is recorded in ``cutoverInProgress`` before each action, so a cutover that
    stops half-way can be finished (the actions are idempotent: the catalog swap counts
    rows swapped before, the ConfigMap values are set again) or rolled back
    (`perform_rollback`). The ConfigMap's previous values are saved before it is written:
    saved after, a crash in between would make the next attempt save the new values as the
    ones to restore.
    """
    state = await ledger.get_state(migration_id)
    progress = state.cutover_in_progress
    if progress is None:
        progress = CutoverProgress(started_at=datetime.now(UTC))
        await ledger.update_state(migration_id, cutover_in_progress=progress)
    config_map = spec.cutover.config_map_ref
    if (
        config_map is not None
        and config_maps is not None
        and progress.previous_config_map_data is None
    ):
        # Read first, before any action: this also finds a missing ConfigMap before a
        # catalog row is swapped.
        progress = progress.model_copy(
            update={"previous_config_map_data": await config_maps.read(config_map)}
        )
        await ledger.update_state(migration_id, cutover_in_progress=progress)
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
    backfill = spec.backfill
    if backfill is not None:
        ref = backfill.dsn_secret_ref
        dsn = require(secrets, ref.name, ref.key, "spec.backfill.dsnSecretRef")
        await backfill_verified(ledger, migration_id, spec, dsn)
        counts = await ledger.step_counts(
            migration_id, missing_reason=NOT_FOUND, hook_pending_reason=HOOK_PENDING
        )
        actions.append(
            f"backfill {backfill.table}: {counts.backfill_written} rows written, "
            f"{counts.backfill_already_set} already set, {counts.backfill_no_row} without a "
            f"row, {counts.backfill_conflicts} changed by the application and left alone"
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
    record = CutoverRecord(
        at=datetime.now(UTC),
        actions=tuple(actions),
        catalog_rows_swapped=swapped,
        config_map_data=dict(config_map.data) if config_map else {},
        previous_config_map_data=progress.previous_config_map_data,
    )
    await ledger.update_state(migration_id, cutover=record, cutover_in_progress=None)
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
    cutover = state.cutover or CutoverRecord()
    progress = state.cutover_in_progress
    gate = rollback_gate(
        cut_over=state.cut_over or progress is not None, cleanup_started=state.cleanup_started
    )
    if gate.ok and not await ledger.start_rollback(migration_id):
        # A cleanup started since the state was read.
        gate = rollback_gate(cut_over=True, cleanup_started=True)
    if not gate.ok:
        if gate.reason != Reason.NOT_CUT_OVER:
            await ledger.update_state(
                migration_id, cutover=cutover.model_copy(update={"rollback_blocked": gate.message})
            )
        return gate
    if progress is not None:
        # What this cutover did is in its progress record; an older record (of a cutover
        # rolled back before) describes nothing that is in place now.
        cutover = CutoverRecord(
            actions=("the cutover stopped before it finished",),
            previous_config_map_data=progress.previous_config_map_data,
        )
    actions = list(cutover.actions)
    if spec.cutover.catalog is not None:
        ref = spec.cutover.catalog.dsn_secret_ref
        result = await swap_catalog(
            ledger, migration_id, spec, require(secrets, ref.name, ref.key), reverse=True
        )
        actions.append(f"rollback catalog: {result.swapped} rows pointed back at the source")
    backfill = spec.backfill
    if backfill is not None:
        ref = backfill.dsn_secret_ref
        dsn = require(secrets, ref.name, ref.key, "spec.backfill.dsnSecretRef")
        reverted = await revert_backfill(ledger, migration_id, spec, dsn)
        actions.append(
            f"rollback backfill {backfill.table}: {reverted.restored} rows put back, "
            f"{reverted.conflicts} changed by the application and left alone"
        )
    config_map = spec.cutover.config_map_ref
    previous = cutover.previous_config_map_data
    if config_map is not None and config_maps is not None and previous is not None:
        await config_maps.restore(config_map, previous)
        actions.append(f"rollback configMap {config_map.name}: previous values restored")
    await ledger.clear_cut_over(migration_id)
    await ledger.update_state(
        migration_id,
        cutover=cutover.model_copy(
            update={"actions": tuple(actions), "rolled_back_at": datetime.now(UTC)}
        ),
        cutover_in_progress=None,
        rollback_started=False,
        catch_up=CatchUp.of(state).after_rollback(),
    )
    return gate
