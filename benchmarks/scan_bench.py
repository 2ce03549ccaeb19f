"""Scan benchmark (issue 22.5): one sequential listing against the parallel listing the scan
uses (`objmig.storage.fanout.list_fanned_out`), on a bucket of many prefixes behind a WAN's
round trip.

Usage::

    scripts/minio.sh; scripts/toxiproxy.sh           # once (tools, cached)
    .venv/bin/python benchmarks/scan_bench.py --prefixes 100 --keys-per-prefix 1000 --latency-ms 20

A MinIO child process is seeded once with `prefixes x keys-per-prefix` empty objects
(`p0042/k000123`), then both listings read every key through toxiproxy (each request and
its answer `--latency-ms` later), `--repeat` times in turns (sequential first on odd
rounds, fanned out first on even ones). Reported per listing: median wall seconds, keys/s,
requests the server answered (its metrics), MinIO's CPU seconds (on a small machine the
server's CPU, not the round trip, can be what a parallel listing waits for), and the
speed-up of the medians. Both listings
must return the same keys in the same order, or the run fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import boto3  # type: ignore[import-untyped]
import psutil  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_support import LatencyProxy, MetricsMinio, MinioRequests, find_toxiproxy

from objmig.storage.endpoint import Endpoint
from objmig.storage.fanout import list_fanned_out
from objmig.storage.s3http import S3HttpClient, open_http_client
from objmig.storage.types import ObjectInfo

BUCKET = "scan-bench"

Lister = Callable[[S3HttpClient], AsyncIterator[ObjectInfo]]


def sequential(client: S3HttpClient) -> AsyncIterator[ObjectInfo]:
    return client.list_objects(BUCKET)


def fanned_out(client: S3HttpClient) -> AsyncIterator[ObjectInfo]:
    return list_fanned_out(client, BUCKET)


LISTERS: dict[str, Lister] = {"sequential": sequential, "fanned-out": fanned_out}


async def seed(endpoint: Endpoint, prefixes: int, per_prefix: int, concurrency: int) -> None:
    keys = [f"p{p:04d}/k{k:06d}" for p in range(prefixes) for k in range(per_prefix)]
    async with open_http_client(endpoint, max_connections=concurrency) as client:
        queue = iter(keys)

        async def writer() -> None:
            for key in queue:
                await client.put(BUCKET, key, b"", 0, {})

        await asyncio.gather(*(writer() for _ in range(concurrency)))


async def list_all(endpoint: Endpoint, lister: Lister) -> tuple[float, list[str]]:
    async with open_http_client(endpoint, max_connections=32) as client:
        started = time.perf_counter()
        keys = [info.key async for info in lister(client)]
        return time.perf_counter() - started, keys


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prefixes", type=int, default=100)
    p.add_argument("--keys-per-prefix", type=int, default=1000)
    p.add_argument("--latency-ms", type=float, default=20.0, help="round trip added (0: none)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seed-concurrency", type=int, default=64)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    toxiproxy = find_toxiproxy() if args.latency_ms > 0 else None
    if args.latency_ms > 0 and toxiproxy is None:
        raise SystemExit("--latency-ms needs toxiproxy-server: run scripts/toxiproxy.sh")
    with MetricsMinio() as minio, contextlib.ExitStack() as stack:
        endpoint = minio.endpoint()
        creds = minio.credentials
        boto3.client(
            "s3",
            endpoint_url=minio.endpoint_url,
            aws_access_key_id=creds.access_key_id,
            aws_secret_access_key=creds.secret_access_key,
            region_name="us-east-1",
        ).create_bucket(Bucket=BUCKET)
        total = args.prefixes * args.keys_per_prefix
        started = time.perf_counter()
        asyncio.run(seed(endpoint, args.prefixes, args.keys_per_prefix, args.seed_concurrency))
        print(f"seeded {total} keys in {time.perf_counter() - started:.1f}s", flush=True)
        listed_through = endpoint
        if toxiproxy is not None:
            upstream = minio.endpoint_url.removeprefix("http://").rstrip("/")
            proxy = stack.enter_context(LatencyProxy(upstream, args.latency_ms, toxiproxy))
            listed_through = Endpoint(
                url=proxy.url,
                region=endpoint.region,
                addressing_style=endpoint.addressing_style,
                credentials=endpoint.credentials,
            )
        counter = MinioRequests(minio.endpoint_url)
        server = psutil.Process(minio.pid)

        def server_cpu() -> float:
            times = server.cpu_times()
            return float(times.user + times.system)

        seconds: dict[str, list[float]] = {name: [] for name in LISTERS}
        cpu: dict[str, list[float]] = {name: [] for name in LISTERS}
        requests: dict[str, list[float]] = {name: [] for name in LISTERS}
        reference: list[str] | None = None
        for round_ in range(args.repeat):
            order = list(LISTERS) if round_ % 2 == 0 else list(reversed(LISTERS))
            for name in order:
                before, cpu_before = counter.snapshot(), server_cpu()
                wall, keys = asyncio.run(list_all(listed_through, LISTERS[name]))
                after = counter.snapshot()
                cpu[name].append(server_cpu() - cpu_before)
                if reference is None:
                    reference = keys
                if len(keys) != total or keys != reference:
                    raise SystemExit(f"{name}: {len(keys)} keys, not the {total} expected in order")
                seconds[name].append(wall)
                requests[name].append(sum(after.values()) - sum(before.values()))
                print(
                    f"  round {round_ + 1} {name:<11} {wall:7.2f}s  server CPU "
                    f"{cpu[name][-1]:6.2f}s  load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
    rtt = f"{args.latency_ms:g} ms round trip (toxiproxy)" if args.latency_ms else "loopback"
    print(
        f"\n{args.prefixes} prefixes x {args.keys_per_prefix} keys = {total} keys, MinIO, {rtt}, "
        f"medians of {args.repeat}\n"
    )
    print("| listing | median s | min | max | keys/s | requests | MinIO CPU s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in LISTERS:
        median = statistics.median(seconds[name])
        print(
            f"| {name} | {median:.2f} | {min(seconds[name]):.2f} | {max(seconds[name]):.2f} "
            f"| {total / median:,.0f} | {statistics.median(requests[name]):.0f} "
            f"| {statistics.median(cpu[name]):.2f} |"
        )
    speedup = statistics.median(seconds["sequential"]) / statistics.median(seconds["fanned-out"])
    print(f"\nfanned-out speed / sequential speed: {speedup:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
