"""Fault injection (issue 23's proof): a migration through a proxy that fails 5% of the
requests with each kind of fault, in both copy modes; it must end with every object
verified on the first run and not one corrupt copy accepted.

    .venv/bin/python benchmarks/fault_bench.py                       # 2,000 objects, MinIO
    .venv/bin/python benchmarks/fault_bench.py --server moto --objects 500
    .venv/bin/python benchmarks/fault_bench.py --rate 0.10 --modes stream

The store (MinIO, or moto's server mode) runs as a child process; the fault proxy of the
tests (`tests/support/s3proxy.py`, seeded, so a run can be repeated) stands between it and
objmig, which runs in this process with an embedded PostgreSQL ledger, its spec as a user
writes it (default attempts, backoff, concurrency). Faults, each at `--rate` of the
requests it can hit: 500 InternalError, 503 SlowDown, a reset connection (any request),
a body cut short after 256 bytes (GETs), and a lost answer: the store acted on a write
(PUT, POST, DELETE), the client never hears it.

Afterwards every object is read from the store directly (not through the proxy) and its
SHA-256 compared with the source's: "corrupt accepted" counts verified rows whose bytes
differ. The exit code is non-zero unless every object is verified and none is corrupt.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_support import bench_migration, bench_secrets
from tests.support.s3proxy import S3FaultProxy, add_fault_mix

from objmig.engine.local_run import LocalRun
from objmig.ledger import Ledger, ObjectState
from objmig.local.postgres import EmbeddedPostgres
from objmig.local.s3server import LocalMinio, LocalS3Server
from objmig.storage.endpoint import Endpoint
from objmig.storage.sdk import open_client

KiB = 1024
MiB = 1024 * KiB


@dataclass
class Outcome:
    """One mode's run."""

    mode: str
    objects: int
    wall: float = 0.0
    outcome: str = ""
    verified: int = 0
    other_states: Counter[str] = field(default_factory=Counter)
    attempts: Counter[int] = field(default_factory=Counter)
    requests: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    corrupt_accepted: int = 0
    missing: int = 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=["minio", "moto"], default="minio")
    parser.add_argument("--objects", type=int, default=2000, help="objects in all")
    parser.add_argument(
        "--multipart", type=int, default=20, help="of them multipart (3 parts, the last short)"
    )
    parser.add_argument("--size", type=int, default=16 * KiB, help="size of the others")
    parser.add_argument("--rate", type=float, default=0.05, help="share of each fault kind")
    parser.add_argument("--modes", default="stream,serverSide")
    parser.add_argument("--seed", type=int, default=23)
    return parser.parse_args(argv)


@contextlib.contextmanager
def store(kind: str) -> Iterator[LocalMinio | LocalS3Server]:
    server: LocalMinio | LocalS3Server
    server = LocalMinio() if kind == "minio" else LocalS3Server(min_part_size=5 * MiB)
    with server:
        yield server


async def seed(client: Any, bucket: str, args: argparse.Namespace) -> dict[str, str]:
    """The source objects; returns their SHA-256 by key."""
    digests: dict[str, str] = {}
    gate = asyncio.Semaphore(32)

    async def put(index: int) -> None:
        body = hashlib.sha256(f"{args.seed}/{index}".encode()).digest() * (args.size // 32 + 1)
        body = body[: args.size + index % 97]
        key = f"small/{index:05}"
        async with gate:
            await client.put_object(Bucket=bucket, Key=key, Body=body)
        digests[key] = hashlib.sha256(body).hexdigest()

    async def put_multipart(index: int) -> None:
        key = f"multi/{index:04}"
        upload = await client.create_multipart_upload(Bucket=bucket, Key=key)
        digest = hashlib.sha256()
        parts = []
        for number, size in enumerate((5 * MiB, 5 * MiB, 1 * MiB + index), start=1):
            body = hashlib.sha256(f"{key}/{number}".encode()).digest() * (size // 32 + 1)
            body = body[:size]
            digest.update(body)
            answer = await client.upload_part(
                Bucket=bucket,
                Key=key,
                UploadId=upload["UploadId"],
                PartNumber=number,
                Body=body,
            )
            parts.append({"ETag": answer["ETag"], "PartNumber": number})
        await client.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=upload["UploadId"],
            MultipartUpload={"Parts": parts},
        )
        digests[key] = digest.hexdigest()

    small = args.objects - args.multipart
    await asyncio.gather(*(put(i) for i in range(small)))
    for index in range(args.multipart):
        await put_multipart(index)
    return digests


async def sha256_of(client: Any, bucket: str, key: str) -> str | None:
    try:
        answer = await client.get_object(Bucket=bucket, Key=key)
    except client.exceptions.NoSuchKey:
        return None
    async with answer["Body"] as body:
        return hashlib.sha256(await body.read()).hexdigest()


async def run_mode(
    mode: str,
    args: argparse.Namespace,
    direct: Endpoint,
    ledger: Ledger,
    client: Any,
    source: str,
    digests: dict[str, str],
) -> Outcome:
    target = f"target-{mode.lower()}-{uuid.uuid4().hex[:8]}"
    await client.create_bucket(Bucket=target)
    outcome = Outcome(mode, len(digests))
    assert direct.url is not None
    assert direct.credentials is not None
    with S3FaultProxy(direct.url, keep_requests=0, seed=args.seed) as proxy:
        rules = add_fault_mix(proxy, rate=args.rate)
        through = replace(direct, url=proxy.endpoint_url)
        resource = bench_migration(
            through, f"faults-{mode.lower()}", source, target, copy={"mode": mode}
        )
        secrets = bench_secrets(direct)
        started = time.perf_counter()
        result = await LocalRun(ledger, resource, secrets).run()
        outcome.wall = time.perf_counter() - started
        outcome.outcome = result.outcome
        outcome.requests = proxy.received
        for name, rule in rules:
            outcome.faults[name] += rule.hits
    migration_id = await ledger.find_migration(f"bench/faults-{mode.lower()}")
    assert migration_id is not None
    gate = asyncio.Semaphore(32)

    async def check(key: str, state: ObjectState) -> None:
        async with gate:
            found = await sha256_of(client, target, key)
        if found is None:
            outcome.missing += 1
        elif found != digests[key] and state is ObjectState.VERIFIED:
            outcome.corrupt_accepted += 1

    checks = []
    async for row in ledger.iter_rows(migration_id):
        outcome.attempts[row.attempts] += 1
        if row.state is ObjectState.VERIFIED:
            outcome.verified += 1
        else:
            outcome.other_states[row.state.value] += 1
        checks.append(check(row.key, row.state))
    await asyncio.gather(*checks)
    return outcome


def report(outcomes: list[Outcome], args: argparse.Namespace) -> str:
    kinds = sorted({name for o in outcomes for name in o.faults})
    lines = [
        f"{args.objects} objects ({args.multipart} multipart, 3 parts; the others "
        f"{args.size // KiB} KiB), {args.server}, {args.rate:.0%} of each fault kind, "
        f"seed {args.seed}",
        "",
        "| mode | outcome | verified | wall s | requests | "
        + " | ".join(kinds)
        + " | attempts (objects) | corrupt accepted | missing |",
        "|---|---|---:|---:|---:|" + "---:|" * len(kinds) + "---|---:|---:|",
    ]
    for o in outcomes:
        attempts = ", ".join(f"{n}: {count}" for n, count in sorted(o.attempts.items()))
        lines.append(
            f"| {o.mode} | {o.outcome} | {o.verified}/{o.objects} | {o.wall:.1f} | "
            f"{o.requests} | "
            + " | ".join(str(o.faults[k]) for k in kinds)
            + f" | {attempts} | {o.corrupt_accepted} | {o.missing} |"
        )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    with (
        store(args.server) as server,
        tempfile.TemporaryDirectory(prefix="objmig-fault-bench-") as workdir,
    ):
        direct = server.endpoint()
        async with (
            EmbeddedPostgres(Path(workdir), fast=True) as postgres,
            open_client(direct, 64) as client,
        ):
            ledger = await Ledger.connect(postgres.dsn)
            try:
                source = f"source-{uuid.uuid4().hex[:8]}"
                await client.create_bucket(Bucket=source)
                started = time.perf_counter()
                digests = await seed(client, source, args)
                print(f"seeded {len(digests)} objects in {time.perf_counter() - started:.1f} s")
                outcomes = []
                for mode in args.modes.split(","):
                    outcome = await run_mode(mode, args, direct, ledger, client, source, digests)
                    outcomes.append(outcome)
                    print(f"{mode}: {outcome.outcome} in {outcome.wall:.1f} s", flush=True)
            finally:
                await ledger.close()
    print(report(outcomes, args))
    good = all(
        o.verified == o.objects and not o.corrupt_accepted and not o.missing for o in outcomes
    )
    return 0 if good else 1


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
