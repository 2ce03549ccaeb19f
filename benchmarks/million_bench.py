"""A million objects through `objmig run` (issue 22.4): does anything slow down as the
ledger grows, and what does the run cost in memory, disk and status?

    .venv/bin/python benchmarks/million_bench.py                     # 1,000,000 x 1 KiB
    .venv/bin/python benchmarks/million_bench.py --count 50000       # a quick look

MinIO holds the source and the target (one server on loopback, a single drive). The
source is seeded with MinIO's tar extraction (`snowball-auto-extract`: one PUT of a tar
per 50,000 objects, unpacked by the server), so the seeding does not take longer than the
migration. The keys spread over `--prefixes` prefixes, as a real bucket's do, which lets
the scan fan its listing out.

`objmig run` then migrates streamed (GET and PUT per object) with `verify.mode: etag`,
against a ledger in an embedded PostgreSQL server of the benchmark's own (durable, as
`objmig run`'s default one is, unless `--fast-ledger`). Reported, from the ledger and the
process tree:

* wall time and objects per second overall;
* objects per second over the first and the last tenth of the objects, in the order they
  were verified (`objects.verified_at`): the last must keep at least 90% of the first;
* the scan's keys per second (its completion less the migration's creation; the copy
  runs alongside the scan, so this is the scan sharing the machine);
* peak RSS of objmig's process tree (the ledger server is not in it);
* ledger bytes on disk per object (the database, and the objects table with its indexes);
* the size of the status a CR would carry (`objmig status --json`, compact);
* requests per object, counted by MinIO.

Every object is checked on the target afterwards (a listing: count, sizes and ETags).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_support import (
    MetricsMinio,
    MinioRequests,
    TreeSampler,
    check_copies,
    minio_client,
    seed_by_tar,
)

from objmig.ledger.state import MigrationState
from objmig.local.postgres import EmbeddedPostgres

SECRET_NAME = "million-creds"
NAME = "million"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=1024, help="bytes per object")
    parser.add_argument("--prefixes", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=32, help="copy.concurrency")
    parser.add_argument("--workers", type=int, default=1, help="objmig run --workers")
    parser.add_argument("--tar-objects", type=int, default=50_000, help="objects per seed tar")
    parser.add_argument("--fast-ledger", action="store_true", help="ledger without fsync")
    parser.add_argument("--workdir", type=Path, help="keep the spec, the log and the ledger")
    parser.add_argument("--json-out", type=Path, help="write the figures here as JSON")
    return parser.parse_args(argv)


def seed(s3: Any, bucket: str, args: argparse.Namespace) -> float:
    """Fill `bucket` through MinIO's tar extraction; returns the seconds it took."""
    return seed_by_tar(s3, bucket, args.count, args.size, args.prefixes, args.tar_objects)


def check_target(s3: Any, bucket: str, args: argparse.Namespace) -> int:
    """Every object on the target with its size and the MD5 of its bytes; returns the count."""
    return check_copies(s3, bucket, args.count, args.size, args.prefixes)


def spec_files(workdir: Path, server: MetricsMinio, args: argparse.Namespace) -> Path:
    side = {
        "endpoint": server.endpoint_url,
        "region": "us-east-1",
        "addressingStyle": "path",
        "credentialsSecretRef": {"name": SECRET_NAME},
    }
    spec = {
        "apiVersion": "objmig.dev/v1alpha1",
        "kind": "ObjectMigration",
        "metadata": {"name": NAME, "namespace": "default"},
        "spec": {
            "source": {**side, "bucket": "million-src"},
            "target": {**side, "bucket": "million-dst"},
            "copy": {"mode": "stream", "concurrency": args.concurrency},
            "verify": {"mode": "etag"},
            "cutover": {"policy": "Automatic"},
        },
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET_NAME},
        "stringData": {
            "accessKeyId": server.credentials.access_key_id,
            "secretAccessKey": server.credentials.secret_access_key,
        },
    }
    (workdir / "secrets.yaml").write_text(yaml.safe_dump(secret))
    path = workdir / "migration.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


async def _migration_row(connection: asyncpg.Connection) -> asyncpg.Record | None:
    return await connection.fetchrow(
        "SELECT id, created_at, state FROM migrations WHERE name = $1 OR name = $2",
        NAME,
        f"default/{NAME}",
    )


class ScanWatch:
    """When the first scan completed, read from the ledger while the run goes on (the
    final re-scan before the cutover later records its own completion in its place)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.completed_at: datetime | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._watch()), daemon=True)

    def __enter__(self) -> ScanWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    async def _watch(self) -> None:
        while not self._stop.is_set() and self.completed_at is None:
            try:
                connection = await asyncpg.connect(self.dsn)
            except OSError:
                await asyncio.sleep(0.5)
                continue
            try:
                while not self._stop.is_set():
                    try:
                        row = await _migration_row(connection)
                    except asyncpg.UndefinedTableError:  # objmig has not made its schema yet
                        row = None
                    if row is not None:
                        state = MigrationState.model_validate(json.loads(row["state"]))
                        if state.scan.completed_at is not None:
                            self.completed_at = state.scan.completed_at
                            return
                    await asyncio.sleep(0.5)
            finally:
                await connection.close()


async def ledger_figures(dsn: str, count: int, scan_done: datetime | None) -> dict[str, Any]:
    connection = await asyncpg.connect(dsn)
    try:
        migration = await _migration_row(connection)
        assert migration is not None
        times = [
            r["verified_at"]
            for r in await connection.fetch(
                "SELECT verified_at FROM objects WHERE migration_id = $1 AND verified_at IS NOT "
                "NULL ORDER BY verified_at",
                migration["id"],
            )
        ]
        tenth = len(times) // 10
        # The seconds each tenth of the objects took to be verified, in verification order.
        tenths = [
            (
                times[min(k * tenth, len(times) - 1)] - times[max((k - 1) * tenth - 1, 0)]
            ).total_seconds()
            for k in range(1, 11)
        ]
        database = await connection.fetchval("SELECT pg_database_size(current_database())")
        objects = await connection.fetchval("SELECT pg_total_relation_size('objects')")
    finally:
        await connection.close()
    scan_seconds = (
        (scan_done - migration["created_at"]).total_seconds() if scan_done is not None else None
    )
    rates = [tenth / seconds if seconds > 0 else None for seconds in tenths]
    return {
        "verified": len(times),
        "tenths_per_s": rates,
        "first_tenth_per_s": rates[0],
        "last_tenth_per_s": rates[-1],
        "scan_seconds": scan_seconds,
        "scan_keys_per_s": count / scan_seconds if scan_seconds else None,
        "ledger_bytes_per_object": database / count,
        "objects_table_bytes_per_object": objects / count,
    }


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {"count": args.count, "size": args.size}
    with (
        MetricsMinio() as server,
        EmbeddedPostgres(workdir / "ledger", fast=args.fast_ledger) as postgres,
    ):
        s3 = minio_client(server)
        print(f"seeding {args.count:,} objects", file=sys.stderr, flush=True)
        figures["seed_seconds"] = seed(s3, "million-src", args)
        s3.create_bucket(Bucket="million-dst")
        spec = spec_files(workdir, server, args)
        counter = MinioRequests(server.endpoint_url)
        before = counter.snapshot()
        command = [
            sys.executable, "-m", "objmig", "run", "-f", str(spec),
            "--database-url", postgres.dsn,
            "--secrets", str(workdir / "secrets.yaml"),
            "--workers", str(args.workers),
        ]  # fmt: skip
        print("running", " ".join(command[1:]), file=sys.stderr, flush=True)
        with (workdir / "objmig.log").open("wb") as log:
            started = time.monotonic()
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            with TreeSampler(process.pid, interval=0.2) as sampler, ScanWatch(postgres.dsn) as scan:
                code = process.wait()
            wall = time.monotonic() - started
        if code != 0:
            raise SystemExit(f"objmig run exited {code}; see {workdir / 'objmig.log'}")
        requests = MinioRequests.delta(before, counter.snapshot())
        figures.update(
            wall_seconds=wall,
            objects_per_s=args.count / wall,
            peak_rss_mib=sampler.peak_tree / 2**20,
            requests_per_object={k: v / args.count for k, v in sorted(requests.items())},
        )
        figures.update(asyncio.run(ledger_figures(postgres.dsn, args.count, scan.completed_at)))
        status = subprocess.run(
            [sys.executable, "-m", "objmig", "status", NAME, "--database-url", postgres.dsn,
             "--json"],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        figures["status_bytes"] = len(json.dumps(json.loads(status), separators=(",", ":")))
        print("checking the target", file=sys.stderr, flush=True)
        figures["checked_on_target"] = check_target(s3, "million-dst", args)
    return figures


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        figures = run(args, args.workdir)
        print(json.dumps(figures, default=str))
    else:
        with tempfile.TemporaryDirectory(prefix="objmig-million-") as workdir:
            figures = run(args, Path(workdir))
    ratio = (figures["last_tenth_per_s"] or 0) / (figures["first_tenth_per_s"] or 1)
    requests = sum(figures["requests_per_object"].values())
    print(
        f"{figures['count']:,} x {figures['size']} B: wall {figures['wall_seconds']:.0f} s "
        f"({figures['objects_per_s']:.0f} objects/s); first tenth "
        f"{figures['first_tenth_per_s'] or 0:.0f}/s, last tenth "
        f"{figures['last_tenth_per_s'] or 0:.0f}/s "
        f"({ratio:.0%} of the first); scan {figures['scan_keys_per_s'] or 0:,.0f} keys/s; "
        f"peak RSS {figures['peak_rss_mib']:.0f} MiB; ledger "
        f"{figures['ledger_bytes_per_object']:.0f} B/object (objects table "
        f"{figures['objects_table_bytes_per_object']:.0f}); status {figures['status_bytes']:,} B; "
        f"{requests:.2f} requests/object {figures['requests_per_object']}; "
        f"seeded in {figures['seed_seconds']:.0f} s; {figures['checked_on_target']:,} checked"
    )
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
