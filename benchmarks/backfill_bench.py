"""Benchmark of the backfill: object attributes written into an application's table.

Usage::

    .venv/bin/python benchmarks/backfill_bench.py --rows 100000
    .venv/bin/python benchmarks/backfill_bench.py --rows 100000 --batch-sizes 50,500,1000

A fresh embedded PostgreSQL (fast settings, as the tests use) holds both the ledger and the
application's database (a `files` table with a unique key, as in write-up 001). For each
batch size, N verified ledger rows are backfilled by `objmig.engine.backfill` (the code the
workers and the cutover run: lock the batch's rows, record the plan in the ledger, write
with a compare-and-swap per column, record the outcome), then taken back by the rollback.
Rows/s is wall clock over all N rows; the load average is printed beside it because the
machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from objmig.api.migration import ObjectMigrationSpec
from objmig.engine.backfill import backfill_verified, revert_backfill
from objmig.ledger import InventoryRow, Ledger
from objmig.local.postgres import EmbeddedPostgres

EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


def spec(batch_size: int) -> ObjectMigrationSpec:
    return ObjectMigrationSpec.model_validate(
        {
            "source": {"bucket": "app-files"},
            "target": {"bucket": "app-files"},
            "copy": {"mode": "none"},
            "backfill": {
                "dsnSecretRef": {"name": "app-db", "key": "dsn"},
                "table": "files",
                "keyColumn": "location_key",
                "columns": {"hash": "hash", "lastModified": "last_modified", "size": "size"},
                "batchSize": batch_size,
            },
        }
    )


async def prepare(server: EmbeddedPostgres, rows: int, name: str) -> tuple[str, str]:
    """A ledger with ``rows`` verified objects and an application table listing them."""
    admin = await asyncpg.connect(server.dsn)
    for database in (f"ledger_{name}", f"app_{name}"):
        await admin.execute(f'CREATE DATABASE "{database}"')
    await admin.close()
    ledger_dsn, app_dsn = server.dsn_for(f"ledger_{name}"), server.dsn_for(f"app_{name}")
    keys = [f"files/{i:08d}.bin" for i in range(rows)]
    app = await asyncpg.connect(app_dsn)
    await app.execute(
        "CREATE TABLE files (id bigserial PRIMARY KEY, location_key text NOT NULL UNIQUE,"
        " hash text, last_modified bigint, size bigint)"
    )
    await app.copy_records_to_table("files", records=[(k,) for k in keys], columns=["location_key"])
    await app.close()
    ledger = await Ledger.connect(ledger_dsn)
    mid = await ledger.ensure_migration(f"bench/{name}")
    await ledger.upsert_inventory(
        mid,
        (
            InventoryRow(
                key=k,
                size=1000 + i,
                etag=f"{i:032x}",
                last_modified=EPOCH + timedelta(seconds=i),
                target_key=k,
            )
            for i, k in enumerate(keys)
        ),
        scan_id=1,
    )
    # As the looks of a copy-free run leave them: verified, the object itself as target.
    await ledger.pool.execute(
        """
        UPDATE objects SET state = 'verified', target_etag = etag,
               target_last_modified = last_modified, verified_at = now()
        WHERE migration_id = $1
        """,
        mid,
    )
    await ledger.pool.execute("ANALYZE objects")
    await ledger.close()
    return ledger_dsn, app_dsn


async def measure(server: EmbeddedPostgres, rows: int, batch_size: int) -> None:
    ledger_dsn, app_dsn = await prepare(server, rows, f"b{batch_size}")
    ledger = await Ledger.connect(ledger_dsn)
    mid = await ledger.find_migration(f"bench/b{batch_size}")
    assert mid is not None
    the_spec = spec(batch_size)
    started = time.perf_counter()
    totals = await backfill_verified(ledger, mid, the_spec, app_dsn)
    wrote = time.perf_counter() - started
    assert totals.written == rows, totals
    started = time.perf_counter()
    reverted = await revert_backfill(ledger, mid, the_spec, app_dsn)
    took_back = time.perf_counter() - started
    assert reverted.restored == rows, reverted
    await ledger.close()
    load = os.getloadavg()[0]
    print(
        f"batch {batch_size:>5}: backfill {rows / wrote:>9,.0f} rows/s ({wrote:.1f} s), "
        f"rollback {rows / took_back:>9,.0f} rows/s ({took_back:.1f} s), load {load:.1f}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch-sizes", default="50,500,1000")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="objmig-backfill-bench-"))
    server = EmbeddedPostgres(base / "pg", fast=True)
    await server.start()
    try:
        print(f"{args.rows:,} rows, {os.cpu_count()} CPUs")
        for size in (int(s) for s in args.batch_sizes.split(",")):
            await measure(server, args.rows, size)
    finally:
        await server.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
