"""Cutover actions: switch applications to the target, and switch them back on rollback.

The catalog action compare-and-swaps each verified object's location in the application's
own table: a row is changed only if it still holds the old location, so a row the
application rewrote meanwhile is left alone (and counted), and running the swap twice
changes nothing the second time. Rollback is the same swap in the other direction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg

from objmig.api.migration import CatalogAction, ObjectMigrationSpec
from objmig.ledger import Ledger, ObjectRow, ObjectState


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
