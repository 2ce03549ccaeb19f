"""What the re-scan before every cutover costs (issue 21.6): nothing is cut over whose
source changed since its verification, because the source is listed once more after the
copies and every verified row compared with it.

    .venv/bin/python benchmarks/rescan_bench.py                  # 10,000 objects, MinIO
    .venv/bin/python benchmarks/rescan_bench.py --objects 2000 --server moto

A migration of `--objects` small objects runs to its cutover in this process (an embedded
PostgreSQL ledger, the store as a child process); its wall time includes that final
re-scan. Then the same re-scan runs alone, three times, timed as a whole and split into
the listing (ListObjectsV2 pages through `s3http`) and the ledger's merge of the listed
rows; the median is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_support import bench_migration, bench_secrets

from objmig.engine.context import MigrationContext
from objmig.engine.local_run import LocalRun
from objmig.engine.scan import run_scan
from objmig.ledger import Ledger
from objmig.local.postgres import EmbeddedPostgres
from objmig.local.s3server import LocalMinio, LocalS3Server
from objmig.storage.sdk import open_client


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=["minio", "moto"], default="minio")
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    return parser.parse_args(argv)


async def main_async(args: argparse.Namespace) -> None:
    server: LocalMinio | LocalS3Server = LocalMinio() if args.server == "minio" else LocalS3Server()
    with server, tempfile.TemporaryDirectory(prefix="objmig-rescan-bench-") as workdir:
        endpoint = server.endpoint()
        secrets = bench_secrets(endpoint)
        async with (
            EmbeddedPostgres(Path(workdir), fast=True) as postgres,
            open_client(endpoint, 64) as client,
        ):
            source, target = (f"{side}-{uuid.uuid4().hex[:8]}" for side in ("src", "dst"))
            await client.create_bucket(Bucket=source)
            await client.create_bucket(Bucket=target)
            gate = asyncio.Semaphore(64)

            async def put(index: int) -> None:
                async with gate:
                    await client.put_object(
                        Bucket=source, Key=f"k/{index:06}", Body=b"x" * args.size
                    )

            await asyncio.gather(*(put(i) for i in range(args.objects)))
            ledger = await Ledger.connect(postgres.dsn)
            try:
                resource = bench_migration(endpoint, "rescan", source, target)
                started = time.perf_counter()
                result = await LocalRun(ledger, resource, secrets).run()
                migration_wall = time.perf_counter() - started
                assert result.outcome == "cut-over", result.status.conditions
                mid = await ledger.find_migration("bench/rescan")
                assert mid is not None
                context = MigrationContext.resolve(resource, secrets)
                whole, listing = [], []
                async with context.clients() as (store, _):
                    for _ in range(args.repeat):
                        started = time.perf_counter()
                        async for _info in store.http.list_objects(source):
                            pass
                        listing.append(time.perf_counter() - started)
                        started = time.perf_counter()
                        outcome = await run_scan(ledger, mid, context, store)
                        whole.append(time.perf_counter() - started)
                        assert outcome.delta == 0
            finally:
                await ledger.close()
    rescan, listed = statistics.median(whole), statistics.median(listing)
    print(
        f"{args.objects} objects of {args.size} B on {args.server}: migration to cutover "
        f"{migration_wall:.1f} s (with its final re-scan); a re-scan of all verified rows "
        f"{rescan:.2f} s (median of {args.repeat}: listing {listed:.2f} s, ledger merge "
        f"{rescan - listed:.2f} s), {rescan / migration_wall:.1%} of the migration"
    )


def main(argv: list[str] | None = None) -> None:
    asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    main()
