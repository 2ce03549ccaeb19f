"""Benchmark of the Postgres ledger: inventory insert, claim+complete, counts at scale.

Usage::

    .venv/bin/python benchmarks/ledger_bench.py --rows 1000000            # fast settings
    .venv/bin/python benchmarks/ledger_bench.py --rows 1000000 --durable  # fsync on
    .venv/bin/python benchmarks/ledger_bench.py --database-url postgresql://...

By default a fresh embedded PostgreSQL is created in a temporary directory and removed at
the end. ``fast`` turns off fsync, synchronous_commit and full_page_writes (as the tests
do); ``--durable`` keeps PostgreSQL's defaults, as ``objmig run`` uses them.

Measured:

* inventory insert: ``upsert_inventory`` of N new rows (rows/s), then a re-scan of the same
  N rows (all unchanged);
* ``counts()`` at N rows: median of several calls;
* claim+complete: C concurrent claimers (asyncio tasks, optionally in P processes) claim
  batches of B pending rows and record each as copied (objects/s);
* ``window()`` and, with ``--digest``, ``verification_digest()`` over all rows.

Targets: >= 50,000 rows/s insert, >= 20,000 objects/s claim+complete, <= 200 ms counts.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from objmig.ledger import InventoryRow, Ledger, ObjectState, StepResult
from objmig.local.postgres import EmbeddedPostgres

LEASE = timedelta(minutes=5)
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


class CpuMeter:
    """CPU seconds used by this process and by the PostgreSQL server, for per-row costs.

    Wall-clock rates depend on what else the machine runs; CPU time per row shows what the
    ledger itself costs. The server's CPU is summed over the postmaster and its backends
    (only known for the embedded server).
    """

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid

    def sample(self) -> tuple[float, float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        client = usage.ru_utime + usage.ru_stime
        server = 0.0
        if self.server_pid is not None:
            try:
                import psutil  # a dev dependency; only the benchmark needs it

                main = psutil.Process(self.server_pid)
                for proc in [main, *main.children(recursive=True)]:
                    try:
                        times = proc.cpu_times()
                        server += times.user + times.system
                    except psutil.Error:
                        pass
            except Exception:
                server = float("nan")
        return client, server

    def per_row(self, before: tuple[float, float], rows: int) -> str:
        client, server = self.sample()
        return (
            f"CPU per row: client {(client - before[0]) / rows * 1e6:.1f} us, "
            f"server {(server - before[1]) / rows * 1e6:.1f} us"
        )


@dataclass
class Result:
    """One line of the results table."""

    name: str
    value: float
    unit: str
    target: str = ""
    ok: bool | None = None


class Listing:
    """A synthetic bucket listing, generated lazily like a real scan.

    Keys come in ascending order, as S3's ListObjectsV2 returns them.
    """

    def __init__(self, rows: int) -> None:
        self.rows = rows

    def __iter__(self) -> Iterator[InventoryRow]:
        for start in range(0, self.rows, 10_000):
            chunk = [
                InventoryRow(
                    key=f"data/{i // 1000:05d}/object-{i:09d}.bin",
                    size=1024 + i % 65536,
                    etag=f"{i:032x}",
                    last_modified=EPOCH + timedelta(seconds=i),
                    target_key=f"migrated/data/{i // 1000:05d}/object-{i:09d}.bin",
                )
                for i in range(start, min(start + 10_000, self.rows))
            ]
            yield from chunk


async def claimer(ledger: Ledger, migration_id: int, owner: str, batch: int) -> int:
    """Claim and complete batches until no pending row is left; returns objects done."""
    done = 0
    while rows := await ledger.claim(migration_id, owner, [ObjectState.PENDING], batch, LEASE):
        applied = await ledger.record(
            owner,
            [
                StepResult(
                    id=r.id,
                    state=ObjectState.COPIED,
                    target_etag=r.etag,
                    target_version_id="",
                    increment_attempts=True,
                )
                for r in rows
            ],
        )
        done += applied
    return done


async def _process_claimers(
    dsn: str, migration_id: int, name: str, claimers: int, batch: int
) -> int:
    ledger = await Ledger.connect(dsn, min_size=claimers, max_size=claimers + 1)
    try:
        counts = await asyncio.gather(
            *(claimer(ledger, migration_id, f"{name}-{i}", batch) for i in range(claimers))
        )
        return sum(counts)
    finally:
        await ledger.close()


def process_claimers(dsn: str, migration_id: int, name: str, claimers: int, batch: int) -> int:
    """Entry point of one claimer process."""
    return asyncio.run(_process_claimers(dsn, migration_id, name, claimers, batch))


async def timed_median(runs: int, make: object) -> tuple[float, list[float]]:
    """Median wall time (ms) of ``runs`` awaits of ``make()``."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        await make()  # type: ignore[operator]
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), times


async def run(args: argparse.Namespace, dsn: str) -> list[Result]:
    results: list[Result] = []
    pool_size = args.claimers + 2
    ledger = await Ledger.connect(dsn, min_size=2, max_size=pool_size)
    try:
        migration_id = await ledger.ensure_migration(f"bench/{time.time_ns()}")

        meter = CpuMeter(args.server_pid)
        # The listing is made before the clock starts, so the rate is the ledger's alone (a
        # real scan's listing comes from S3 and overlaps with the writes anyway).
        start = time.perf_counter()
        rows = list(Listing(args.rows))
        print(f"  made {args.rows:,} synthetic rows in {time.perf_counter() - start:.1f}s")
        cpu = meter.sample()
        start = time.perf_counter()
        inserted = await ledger.upsert_inventory(migration_id, rows, scan_id=1)
        elapsed = time.perf_counter() - start
        print(f"  insert {meter.per_row(cpu, args.rows)}")
        assert inserted.new == args.rows, inserted
        rate = args.rows / elapsed
        results.append(Result("inventory insert", rate, "rows/s", ">= 50,000", rate >= 50_000))
        print(f"  inserted {args.rows:,} rows in {elapsed:.1f}s", flush=True)

        if not args.skip_rescan:
            start = time.perf_counter()
            rescanned = await ledger.upsert_inventory(migration_id, rows, scan_id=2)
            elapsed = time.perf_counter() - start
            assert rescanned.unchanged == args.rows, rescanned
            results.append(
                Result("inventory re-scan, all unchanged", args.rows / elapsed, "rows/s")
            )
            print(f"  re-scanned in {elapsed:.1f}s", flush=True)
        del rows

        # PostgreSQL's planner statistics after a bulk load, as autovacuum would do soon.
        await ledger.pool.execute("ANALYZE objects")

        await ledger.counts(migration_id)  # first call may fold delta rows
        median, _ = await timed_median(args.counts_runs, lambda: ledger.counts(migration_id))
        results.append(
            Result(f"counts() at {args.rows:,} rows", median, "ms", "<= 200", median <= 200)
        )
        scan_median, _ = await timed_median(
            3,
            lambda: ledger.pool.fetch(
                "SELECT state, count(*), sum(size) FROM objects WHERE migration_id = $1 "
                "GROUP BY state",
                migration_id,
            ),
        )
        results.append(Result("  (for comparison: GROUP BY scan)", scan_median, "ms"))

        cpu = meter.sample()
        start = time.perf_counter()
        if args.processes > 1:
            loop = asyncio.get_running_loop()
            per_process = max(1, args.claimers // args.processes)
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(args.processes, mp_context=context) as executor:
                # Warm the workers up (imports) before the clock starts.
                await asyncio.gather(
                    *(loop.run_in_executor(executor, time.sleep, 0.1) for _ in range(2))
                )
                start = time.perf_counter()
                done = sum(
                    await asyncio.gather(
                        *(
                            loop.run_in_executor(
                                executor,
                                process_claimers,
                                dsn,
                                migration_id,
                                f"p{p}",
                                per_process,
                                args.batch,
                            )
                            for p in range(args.processes)
                        )
                    )
                )
        else:
            done = sum(
                await asyncio.gather(
                    *(
                        claimer(ledger, migration_id, f"c{i}", args.batch)
                        for i in range(args.claimers)
                    )
                )
            )
        elapsed = time.perf_counter() - start
        print(f"  claim+complete {meter.per_row(cpu, args.rows)}")
        assert done == args.rows, (done, args.rows)
        rate = done / elapsed
        results.append(
            Result(
                f"claim+complete ({args.claimers} claimers x {args.batch}"
                + (f", {args.processes} processes)" if args.processes > 1 else ")"),
                rate,
                "objects/s",
                ">= 20,000",
                rate >= 20_000,
            )
        )
        print(f"  claimed and completed {done:,} objects in {elapsed:.1f}s", flush=True)

        await ledger.counts(migration_id)
        median, _ = await timed_median(args.counts_runs, lambda: ledger.counts(migration_id))
        results.append(
            Result("counts() after claim+complete", median, "ms", "<= 200", median <= 200)
        )
        counts = await ledger.counts(migration_id)
        assert counts.state(ObjectState.COPIED).objects == args.rows, counts

        median, _ = await timed_median(5, lambda: ledger.window(migration_id, 100))
        results.append(Result("window(limit=100)", median, "ms"))

        if args.digest:
            await ledger.pool.execute(
                "UPDATE objects SET state = 'verified' WHERE migration_id = $1", migration_id
            )
            start = time.perf_counter()
            digest = await ledger.verification_digest(migration_id)
            elapsed = time.perf_counter() - start
            results.append(Result("verification_digest()", digest.objects / elapsed, "rows/s"))
    finally:
        await ledger.close()
    return results


def print_table(results: list[Result], settings: str, rows: int) -> None:
    print()
    print(f"ledger benchmark: {rows:,} rows, PostgreSQL settings: {settings}")
    width = max(len(r.name) for r in results) + 2
    print(f"{'measure':<{width}} {'value':>14}  {'unit':<10} {'target':<10} ok")
    print("-" * (width + 42))
    for r in results:
        value = f"{r.value:,.1f}" if r.unit == "ms" else f"{r.value:,.0f}"
        ok = "" if r.ok is None else ("yes" if r.ok else "NO")
        print(f"{r.name:<{width}} {value:>14}  {r.unit:<10} {r.target:<10} {ok}")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--claimers", type=int, default=8, help="concurrent claimers")
    parser.add_argument("--batch", type=int, default=500, help="rows per claim")
    parser.add_argument(
        "--processes", type=int, default=1, help="spread the claimers over processes"
    )
    parser.add_argument("--counts-runs", type=int, default=7)
    parser.add_argument(
        "--durable", action="store_true", help="fsync on (default: fast, non-durable)"
    )
    parser.add_argument("--database-url", help="use this server instead of an embedded one")
    parser.add_argument("--skip-rescan", action="store_true")
    parser.add_argument("--digest", action="store_true", help="also time the digest")
    args = parser.parse_args()
    args.server_pid = None
    print(
        f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )

    if args.database_url:
        results = await run(args, args.database_url)
        print_table(results, "external server", args.rows)
        return 0 if all(r.ok is not False for r in results) else 1

    base = Path(tempfile.mkdtemp(prefix="objmig-ledger-bench-"))
    server = EmbeddedPostgres(base / "postgres", fast=not args.durable)
    settings = (
        "durable (fsync on)"
        if args.durable
        else "fast (fsync=off, synchronous_commit=off, full_page_writes=off)"
    )
    try:
        await server.start()
        running = server.running()
        args.server_pid = running.pid if running else None
        print(f"embedded PostgreSQL at {server.dsn}, {settings}", flush=True)
        results = await run(args, server.dsn)
    finally:
        await server.stop()
        shutil.rmtree(base, ignore_errors=True)
    print_table(results, settings, args.rows)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0 if all(r.ok is not False for r in results) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
