"""Copy benchmark (issues 3, 22): objmig against rclone, s3sync and aws-cli on the same
local S3 server.

Usage::

    scripts/rclone.sh; scripts/s3sync.sh; scripts/awscli.sh   # once: the peers, cached
    scripts/toxiproxy.sh                                       # once: for --latency-ms
    .venv/bin/python benchmarks/copy_bench.py --server both            # small + large
    .venv/bin/python benchmarks/copy_bench.py --server minio --huge    # + 2 x 1 GiB
    .venv/bin/python benchmarks/copy_bench.py --small-count 500 --large-count 2   # quick
    .venv/bin/python benchmarks/copy_bench.py --server minio --latency-ms 20     # a WAN

``--latency-ms`` puts toxiproxy between every tool and the server (this kernel has no netem
qdisc for a veth pair in a network namespace): each request and its answer take that much
longer, streams keep their throughput.

For each server (moto's server mode and/or MinIO, both local child processes) and each
workload, a source bucket is seeded once, then every tool copies it to a fresh target
bucket, one tool at a time:

* ``objmig stream`` and ``objmig serverSide``: ``python -m objmig run`` as a subprocess with
  a ledger on an embedded PostgreSQL started by this script (``--database-url``), so the
  database is NOT in objmig's process tree and not in its RSS. Verification is on
  (``verify.mode: etag``, metadata compared, the source re-checked after the copy).
* ``rclone stream`` (two remotes, so rclone reads and writes the bytes itself) and
  ``rclone serverSide`` (one remote: rclone uses CopyObject / UploadPartCopy);
  ``--transfers`` = objmig's ``copy.concurrency``, 8 MiB parts.
* ``s3sync stream`` and ``s3sync serverSide`` (``--server-side-copy``): ``--worker-size``
  = objmig's concurrency, the same part size and part concurrency, its default
  verification (the ETag of what it wrote) on.
* ``aws-cli``: ``aws s3 cp --recursive`` between two buckets, which is always a server-side
  copy (CopyObject / UploadPartCopy); ``max_concurrent_requests`` = objmig's concurrency,
  8 MiB multipart threshold and chunk size.
* ``floor`` (benchmarks/floor_copy.py): GET + PUT per object (per part for multipart) with
  objmig's own aiobotocore client and the same concurrency, no ledger, no HEADs, no tags:
  what an aiobotocore copier costs at the least, to tell objmig's extra requests apart from
  the Python SDK's per-request cost.

Measured per tool: wall time of its process (start to exit, including start-up and listing),
objects/s, MiB/s, peak RSS of its process tree (psutil, every 50 ms), user+system CPU seconds
(getrusage of waited-for children), and the S3 requests the
server saw (MinIO: its per-API metrics; moto: its access log). After each tool the target is
listed and compared with the source: every key present with the right size; ETag equality
is reported (and required for objmig). The target bucket is then emptied and removed.

Workloads: ``small`` (10,000 x 16 KiB), ``large`` (16 x 128 MiB, multipart in 8 MiB parts),
``huge`` (with --huge: 2 x 1 GiB in 8 MiB parts).

``--profile-objmig`` attaches py-spy (``pip install py-spy`` into
~/.cache/objmig/profile-venv) to each objmig run and prints which pipeline step and which
library its samples fall in.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import psutil  # type: ignore[import-untyped]
import yaml
from botocore.config import Config
from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_support import (
    LatencyProxy,
    MetricsMinio,
    MinioRequests,
    MotoRequests,
    TreeSampler,
    find_toxiproxy,
    format_profile,
    summarise_profile,
)

from objmig.ledger import Ledger, ObjectState
from objmig.local.postgres import EmbeddedPostgres
from objmig.local.s3server import LocalS3Server
from objmig.storage.endpoint import Endpoint
from objmig.storage.sdk import open_client

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("OBJMIG_CACHE") or Path.home() / ".cache" / "objmig")
SECRET_NAME = "bench-s3"
TOOLS = (
    "objmig-stream",
    "objmig-serverSide",
    "rclone-stream",
    "rclone-serverSide",
    "s3sync-stream",
    "s3sync-serverSide",
    "aws-cli",
    "floor",
)
#: Tools whose rows are compared with objmig's (the peers issue 22 names).
PEERS = ("rclone", "s3sync", "aws-cli")


@dataclass(frozen=True)
class Workload:
    name: str
    count: int
    size: int
    part_size: int  # 0: single PUT

    @property
    def total_bytes(self) -> int:
        return self.count * self.size


@dataclass
class Result:
    server: str
    workload: str
    tool: str
    mode: str
    objects: int
    bytes: int
    seconds: float
    exit_code: int
    peak_rss_tree: int
    peak_rss_root: int
    processes: int
    cpu_seconds: float = 0.0
    load_average: float = 0.0  # 1-minute load average of the machine when the tool started
    settle_seconds: float = 0.0  # waited before the start for the server to go idle
    requests: dict[str, int] = field(default_factory=dict)
    missing: int = 0
    wrong_size: int = 0
    etag_mismatch: int = 0
    server_cpu_seconds: float = 0.0
    ledger_cpu_seconds: float = 0.0
    proxy_cpu_seconds: float = 0.0  # the latency proxy's (--latency-ms), not the tool's
    note: str = ""
    profile: dict[str, float] = field(default_factory=dict)
    repetition: int = 1

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.missing == 0 and self.wrong_size == 0

    @property
    def objects_per_second(self) -> float:
        return self.objects / self.seconds if self.seconds else 0.0

    @property
    def mib_per_second(self) -> float:
        return self.bytes / MiB / self.seconds if self.seconds else 0.0

    @property
    def requests_per_object(self) -> float:
        return sum(self.requests.values()) / self.objects if self.objects else 0.0


# ----------------------------------------------------------------------------- servers


class Server:
    """A running local S3 server plus its request counter."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.impl: Any = LocalS3Server() if kind == "moto" else MetricsMinio()

    def __enter__(self) -> Server:
        self.impl.start()
        if self.kind == "minio":
            self.counter: Any = MinioRequests(self.impl.endpoint_url)
        else:
            self.counter = MotoRequests(self.impl._log_path)
        return self

    def __exit__(self, *exc: object) -> None:
        self.impl.stop()

    @property
    def url(self) -> str:
        return str(self.impl.endpoint_url)

    @property
    def access_key(self) -> str:
        return str(self.impl.credentials.access_key_id)

    @property
    def secret_key(self) -> str:
        return str(self.impl.credentials.secret_access_key)

    def endpoint(self) -> Endpoint:
        return self.impl.endpoint()  # type: ignore[no-any-return]

    def boto(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, max_pool_connections=32),
        )

    def cpu_seconds(self) -> float:
        """User + system CPU the server process has used so far."""
        times = psutil.Process(self.impl.pid).cpu_times()
        return float(times.user + times.system)

    def snapshot(self) -> Any:
        return self.counter.snapshot()

    def requests_between(self, before: Any, after: Any, server_side: bool) -> dict[str, int]:
        if self.kind == "minio":
            counts = MinioRequests.delta(before, after)
        else:
            counts = self.counter.delta(before, after, copy_hint=server_side)
        return dict(sorted(counts.items()))

    def rss(self) -> int:
        pid = self.impl.pid
        return int(psutil.Process(pid).memory_info().rss) if pid else 0

    def settle(self, quiet_cpu: float = 0.05, interval: float = 0.5, limit: float = 60.0) -> float:
        """Flush dirty pages and wait until the server is idle; returns the seconds waited.

        Without this a run pays for its predecessor: the kernel writing back the previous
        target's gigabytes, and MinIO deleting the removed bucket in the background, both
        land inside the next tool's wall time, whichever tool that is.
        """
        started = time.monotonic()
        os.sync()
        quiet = 0
        while quiet < 2 and time.monotonic() - started < limit:
            before = self.cpu_seconds()
            time.sleep(interval)
            quiet = quiet + 1 if self.cpu_seconds() - before < quiet_cpu * interval else 0
        os.sync()
        return time.monotonic() - started


# ----------------------------------------------------------------------------- seeding


async def seed(server: Server, bucket: str, workload: Workload, concurrency: int) -> None:
    """Create `bucket` and fill it with the workload's objects (random, distinct bytes)."""
    async with open_client(server.endpoint(), concurrency + 4) as s3:
        await s3.create_bucket(Bucket=bucket)
        semaphore = asyncio.Semaphore(concurrency)
        if workload.part_size == 0:
            base = os.urandom(workload.size)

            async def put(index: int) -> None:
                body = index.to_bytes(8, "big") + base[8:]
                async with semaphore:
                    await s3.put_object(Bucket=bucket, Key=key_of(workload, index), Body=body)

            await asyncio.gather(*(put(i) for i in range(workload.count)))
            return

        base = os.urandom(workload.part_size)
        parts_per_object = -(-workload.size // workload.part_size)

        async def upload(index: int) -> None:
            key = key_of(workload, index)
            created = await s3.create_multipart_upload(Bucket=bucket, Key=key)
            upload_id = created["UploadId"]

            async def part(number: int) -> CompletedPartTypeDef:
                size = min(workload.part_size, workload.size - (number - 1) * workload.part_size)
                body = index.to_bytes(8, "big") + number.to_bytes(8, "big") + base[16:size]
                async with semaphore:
                    response = await s3.upload_part(
                        Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
                    )
                return {"PartNumber": number, "ETag": response["ETag"]}

            parts = await asyncio.gather(*(part(n) for n in range(1, parts_per_object + 1)))
            await s3.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )

        # Objects one after another (their parts in parallel): bounded memory while seeding.
        for index in range(workload.count):
            await upload(index)


def key_of(workload: Workload, index: int) -> str:
    return f"{workload.name}/{index // 1000:03d}/object-{index:06d}.bin"


def listing(server: Server, bucket: str) -> dict[str, tuple[int, str]]:
    """key -> (size, ETag) of every object in `bucket`."""
    out: dict[str, tuple[int, str]] = {}
    paginator = server.boto().get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            out[item["Key"]] = (int(item["Size"]), str(item["ETag"]).strip('"'))
    return out


def remove_bucket(server: Server, bucket: str) -> None:
    s3 = server.boto()
    keys = list(listing(server, bucket))
    for start in range(0, len(keys), 1000):
        chunk = keys[start : start + 1000]
        s3.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True}
        )
    for upload in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    s3.delete_bucket(Bucket=bucket)


# ----------------------------------------------------------------------------- tools


@dataclass
class Context:
    args: argparse.Namespace
    server: Server
    workdir: Path
    dsn: str
    rclone: str | None
    aws: str | None
    ledger_pid: int | None
    s3sync: str | None = None
    #: The latency proxy in front of the server, when --latency-ms asks for one.
    proxy: LatencyProxy | None = None

    @property
    def url(self) -> str:
        """Where the tools reach the server: through the latency proxy, if any."""
        return self.proxy.url if self.proxy is not None else self.server.url


def objmig_command(ctx: Context, run_id: str, source: str, target: str, mode: str) -> list[str]:
    args = ctx.args
    spec = {
        "apiVersion": "objmig.dev/v1alpha1",
        "kind": "ObjectMigration",
        "metadata": {"name": run_id, "namespace": "default"},
        "spec": {
            "source": {
                "endpoint": ctx.url,
                "region": "us-east-1",
                "addressingStyle": "path",
                "bucket": source,
                "credentialsSecretRef": {"name": SECRET_NAME},
            },
            "target": {
                "endpoint": ctx.url,
                "region": "us-east-1",
                "addressingStyle": "path",
                "bucket": target,
                "credentialsSecretRef": {"name": SECRET_NAME},
            },
            "copy": {
                "mode": mode,
                "concurrency": args.concurrency,
                "partConcurrency": args.part_concurrency,
            },
            "verify": {"mode": "etag", "metadata": args.verify_metadata},
            "cutover": {"policy": "Automatic"},
        },
    }
    spec_path = ctx.workdir / f"{run_id}.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    secrets_path = ctx.workdir / "secrets.yaml"
    secrets_path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": SECRET_NAME},
                "stringData": {
                    "accessKeyId": ctx.server.access_key,
                    "secretAccessKey": ctx.server.secret_key,
                },
            }
        )
    )
    command = [
        sys.executable,
        "-m",
        "objmig",
        "run",
        "-f",
        str(spec_path),
        "--database-url",
        ctx.dsn,
        "--secrets",
        str(secrets_path),
        "--workers",
        str(args.workers),
    ]
    return command


def rclone_command(
    ctx: Context, source: str, target: str, server_side: bool
) -> tuple[list[str], dict[str, str]]:
    assert ctx.rclone is not None
    args = ctx.args
    env = dict(os.environ)
    remotes = ("S3",) if server_side else ("SRC", "DST")
    for remote in remotes:
        prefix = f"RCLONE_CONFIG_{remote}_"
        env.update(
            {
                prefix + "TYPE": "s3",
                prefix + "PROVIDER": "Minio" if ctx.server.kind == "minio" else "Other",
                prefix + "ENDPOINT": ctx.url,
                prefix + "ACCESS_KEY_ID": ctx.server.access_key,
                prefix + "SECRET_ACCESS_KEY": ctx.server.secret_key,
                prefix + "REGION": "us-east-1",
                prefix + "FORCE_PATH_STYLE": "true",
            }
        )
    env["RCLONE_CONFIG"] = os.devnull  # no config file: only the remotes above
    src, dst = (
        (f"s3:{source}", f"s3:{target}") if server_side else (f"src:{source}", f"dst:{target}")
    )
    part = str(args.part_size // MiB) + "Mi"
    command = [
        ctx.rclone,
        "copy",
        src,
        dst,
        "--transfers",
        str(args.concurrency),
        "--checkers",
        str(args.concurrency),
        "--s3-upload-cutoff",
        part,
        "--s3-chunk-size",
        part,
        # server-side: objects above the cutoff are copied with UploadPartCopy in parts of
        # this size (so 8 MiB parts, like the source); below it, one CopyObject.
        "--s3-copy-cutoff",
        part,
        "--s3-upload-concurrency",
        str(args.part_concurrency),
        "--stats",
        "0",
        "--log-level",
        "NOTICE",
    ]
    return command, env


def aws_command(ctx: Context, source: str, target: str) -> tuple[list[str], dict[str, str]]:
    assert ctx.aws is not None
    args = ctx.args
    config = ctx.workdir / "aws-config"
    part = f"{args.part_size // MiB}MB"  # aws-cli's MB are MiB
    config.write_text(
        "[default]\n"
        "region = us-east-1\n"
        "s3 =\n"
        f"  max_concurrent_requests = {args.concurrency}\n"
        f"  multipart_threshold = {part}\n"
        f"  multipart_chunksize = {part}\n"
        "  addressing_style = path\n"
    )
    env = dict(os.environ)
    env.update(
        {
            "AWS_CONFIG_FILE": str(config),
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_ACCESS_KEY_ID": ctx.server.access_key,
            "AWS_SECRET_ACCESS_KEY": ctx.server.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    command = [
        ctx.aws,
        "s3",
        "cp",
        f"s3://{source}",
        f"s3://{target}",
        "--recursive",
        "--endpoint-url",
        ctx.url,
        "--only-show-errors",
        "--no-progress",
    ]
    return command, env


def s3sync_command(
    ctx: Context, source: str, target: str, server_side: bool
) -> tuple[list[str], dict[str, str]]:
    """s3sync between the buckets: `--worker-size` = objmig's concurrency, parts of the
    same size, `--max-parallel-uploads` = part concurrency; its default verification
    (the ETag of what it wrote against the source's) is on."""
    assert ctx.s3sync is not None
    args = ctx.args
    part = f"{args.part_size // MiB}MiB"
    command = [ctx.s3sync]
    for side in ("source", "target"):
        command += [
            f"--{side}-endpoint-url",
            ctx.url,
            f"--{side}-region",
            "us-east-1",
            f"--{side}-force-path-style",
        ]
    command += [
        "--worker-size",
        str(args.concurrency),
        "--max-parallel-uploads",
        str(args.part_concurrency),
        "--multipart-threshold",
        part,
        "--multipart-chunksize",
        part,
        "--show-no-progress",
    ]
    if server_side:
        command.append("--server-side-copy")
    command += [f"s3://{source}", f"s3://{target}"]
    env = dict(os.environ)
    # Credentials through its environment, never on a command line others can read.
    for side in ("SOURCE", "TARGET"):
        env[f"{side}_ACCESS_KEY"] = ctx.server.access_key
        env[f"{side}_SECRET_ACCESS_KEY"] = ctx.server.secret_key
    return command, env


def run_tool(ctx: Context, tool: str, workload: Workload, source: str, index: int) -> Result | None:
    server = ctx.server
    mode = "serverSide" if tool.endswith("serverSide") or tool == "aws-cli" else "stream"
    proxy_cpu_before = ctx.proxy.cpu_seconds() if ctx.proxy is not None else 0.0
    target = f"bench-{workload.name}-{index:02d}"
    run_id = f"bench-{server.kind}-{workload.name}-{tool.lower()}-{int(time.time())}"
    env = dict(os.environ)
    if tool.startswith("objmig"):
        command = objmig_command(ctx, run_id, source, target, mode)
    elif tool == "floor":
        command = [
            sys.executable,
            str(Path(__file__).resolve().parent / "floor_copy.py"),
            "--endpoint",
            ctx.url,
            "--access-key",
            server.access_key,
            "--secret-key",
            server.secret_key,
            "--source",
            source,
            "--target",
            target,
            "--concurrency",
            str(ctx.args.concurrency),
            "--part-concurrency",
            str(ctx.args.part_concurrency),
            "--part-size",
            str(ctx.args.part_size),
        ]
    elif tool.startswith("rclone"):
        if ctx.rclone is None:
            return None
        command, env = rclone_command(ctx, source, target, mode == "serverSide")
    elif tool.startswith("s3sync"):
        if ctx.s3sync is None:
            return None
        command, env = s3sync_command(ctx, source, target, mode == "serverSide")
    else:
        if ctx.aws is None:
            return None
        command, env = aws_command(ctx, source, target)
    server.boto().create_bucket(Bucket=target)
    log_path = ctx.workdir / f"{run_id}.log"
    print(f"  {tool:<18} {' '.join(command[:3])} ...", flush=True)
    before = server.snapshot()
    server_cpu_before = server.cpu_seconds()
    ledger_cpu_before = ledger_cpu_seconds(ctx.ledger_pid)
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    settled = server.settle()
    load = os.getloadavg()[0]
    with log_path.open("wb") as log:
        started = time.monotonic()
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        profiler = None
        if tool.startswith("objmig") and ctx.args.profile_objmig:
            profiler = start_profiler(ctx, process.pid, run_id)
        with TreeSampler(process.pid) as sampler:
            code = process.wait()
        if profiler is not None:
            profiler.wait(timeout=120)
        seconds = time.monotonic() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    after = server.snapshot()
    server_cpu = server.cpu_seconds() - server_cpu_before
    ledger_cpu = ledger_cpu_seconds(ctx.ledger_pid) - ledger_cpu_before
    result = Result(
        server=server.kind,
        workload=workload.name,
        tool={"aws-cli": "aws-cli", "floor": "floor (GET+PUT)"}.get(tool, tool.split("-")[0]),
        mode=mode,
        objects=workload.count,
        bytes=workload.total_bytes,
        seconds=seconds,
        exit_code=code,
        peak_rss_tree=sampler.peak_tree,
        peak_rss_root=sampler.peak_root,
        processes=sampler.peak_processes,
        # user + system CPU of the tool and every descendant it waited for.
        cpu_seconds=(cpu_after.ru_utime - cpu_before.ru_utime)
        + (cpu_after.ru_stime - cpu_before.ru_stime),
        load_average=load,
        settle_seconds=settled,
        server_cpu_seconds=server_cpu,
        # Only objmig uses the ledger; the other rows read the idle server's background.
        ledger_cpu_seconds=ledger_cpu if tool.startswith("objmig") else 0.0,
        requests=server.requests_between(before, after, mode == "serverSide"),
        proxy_cpu_seconds=(ctx.proxy.cpu_seconds() - proxy_cpu_before) if ctx.proxy else 0.0,
    )
    check_target(ctx, result, source, target, strict_etag=tool.startswith("objmig"))
    if tool.startswith("objmig"):
        # Objects on the target are not enough: objmig must have verified every one.
        unverified = asyncio.run(objmig_unverified(ctx.dsn, f"default/{run_id}"))
        if unverified:
            result.note = (result.note + f" {unverified} objects not verified").strip()
            result.exit_code = result.exit_code or 98
    if profiler is not None:
        profile = ctx.workdir / f"{run_id}.collapsed"
        if profile.exists():
            result.profile = summarise_profile(profile)
            print(f"    profile ({profile}):\n" + format_profile(result.profile), flush=True)
    if code != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        result.note = f"exit {code}; log {log_path}"
        print("    " + "\n    ".join(tail), flush=True)
    print(
        f"    {seconds:8.1f}s  {result.objects_per_second:8.1f} obj/s  "
        f"{result.mib_per_second:7.1f} MiB/s  rss {result.peak_rss_tree / MiB:6.0f} MiB  "
        f"cpu {result.cpu_seconds:6.1f}s  server cpu {result.server_cpu_seconds:6.1f}s  "
        f"ledger cpu {result.ledger_cpu_seconds:5.1f}s  "
        f"{result.requests_per_object:5.2f} req/obj  "
        f"load {load:.1f}  settled {settled:.1f}s  "
        f"missing={result.missing} size={result.wrong_size} etag!={result.etag_mismatch}"
        f"{'  ' + result.note if result.note else ''}",
        flush=True,
    )
    if not ctx.args.keep_targets:
        remove_bucket(server, target)
    return result


async def objmig_unverified(dsn: str, name: str) -> int:
    """Objects of migration `name` that objmig did not verify (per its ledger)."""
    async with await Ledger.connect(dsn) as ledger:
        migration_id = await ledger.find_migration(name)
        if migration_id is None:
            return -1
        counts = await ledger.counts(migration_id)
        return counts.total.objects - counts.state(ObjectState.VERIFIED).objects


def start_profiler(ctx: Context, pid: int, run_id: str) -> subprocess.Popen[bytes] | None:
    """Attach py-spy (on-CPU samples, collapsed stacks) to objmig; None if py-spy is missing."""
    py_spy = shutil.which("py-spy") or str(CACHE / "profile-venv" / "bin" / "py-spy")
    if not os.access(py_spy, os.X_OK):
        print("    py-spy not found: pip install py-spy into ~/.cache/objmig/profile-venv")
        return None
    out = ctx.workdir / f"{run_id}.collapsed"
    return subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--rate", "100", "--format", "raw", "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=(ctx.workdir / f"{run_id}.py-spy.log").open("wb"),
    )


def check_target(
    ctx: Context, result: Result, source: str, target: str, *, strict_etag: bool
) -> None:
    want = listing(ctx.server, source)
    have = listing(ctx.server, target)
    for key, (size, etag) in want.items():
        got = have.get(key)
        if got is None:
            result.missing += 1
        elif got[0] != size:
            result.wrong_size += 1
        elif got[1] != etag:
            result.etag_mismatch += 1
    if strict_etag and result.etag_mismatch:
        result.note = (result.note + " ETag mismatch").strip()
        result.exit_code = result.exit_code or 99


# ----------------------------------------------------------------------------- report


def human(n: float) -> str:
    if n >= GiB:
        return f"{n / GiB:.1f} GiB"
    return f"{n / MiB:.0f} MiB" if n >= MiB else f"{n / KiB:.0f} KiB"


def rate(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.2f}"


def markdown(results: list[Result]) -> str:
    lines = [
        "| server | workload | tool | mode | wall s | objects/s | MiB/s | objmig speed ÷ tool "
        "| peak RSS (tree) | CPU s | ledger CPU s | S3 server CPU s | S3 req/object | load "
        "| check |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    objmig_time = {
        (r.server, r.workload, r.mode, r.repetition): r.seconds
        for r in results
        if r.tool == "objmig" and r.ok
    }
    for r in results:
        ratio = ""
        if r.tool != "objmig":
            # The same mode where objmig has it; aws-cli is always server-side.
            mine = objmig_time.get((r.server, r.workload, r.mode, r.repetition))
            if mine:
                ratio = f"{r.seconds / mine:.2f}"
        check = "ok" if r.ok else "FAIL"
        if r.etag_mismatch:
            check += f", {r.etag_mismatch} ETags differ"
        if r.note and not r.ok:
            check += f" ({r.note})"
        lines.append(
            f"| {r.server} | {r.workload} | {r.tool} | {r.mode} | {r.seconds:.1f} "
            f"| {rate(r.objects_per_second)} | {r.mib_per_second:.1f} | {ratio} "
            f"| {r.peak_rss_tree / MiB:.0f} MiB | {r.cpu_seconds:.1f} "
            f"| {r.ledger_cpu_seconds:.1f} | {r.server_cpu_seconds:.1f} "
            f"| {r.requests_per_object:.2f} | {r.load_average:.1f} | {check} |"
        )
    return "\n".join(lines)


def medians(results: list[Result]) -> str:
    """Per tool: the medians of its repetitions (wall time, CPU of the tool, the ledger and
    the server, requests per object), objmig's speed over it, and per workload and mode
    objmig against the fastest peer."""
    runs: dict[tuple[str, str, str, str], list[Result]] = {}
    for r in results:
        if r.ok:
            runs.setdefault((r.server, r.workload, r.tool, r.mode), []).append(r)

    def median_of(key: tuple[str, str, str, str], field: str) -> float:
        return statistics.median(getattr(r, field) for r in runs[key])

    lines = [
        "| server | workload | tool | mode | runs | median wall s | min | max "
        "| objmig speed ÷ tool (medians) | CPU s | ledger CPU s | S3 server CPU s "
        "| S3 req/object |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, group in runs.items():
        server, workload, tool, mode = key
        seconds = [r.seconds for r in group]
        median = statistics.median(seconds)
        mine = (server, workload, "objmig", mode)
        ratio = (
            f"{median / median_of(mine, 'seconds'):.2f}"
            if mine in runs and tool != "objmig"
            else ""
        )
        lines.append(
            f"| {server} | {workload} | {tool} | {mode} | {len(seconds)} | {median:.1f} "
            f"| {min(seconds):.1f} | {max(seconds):.1f} | {ratio} "
            f"| {median_of(key, 'cpu_seconds'):.1f} | {median_of(key, 'ledger_cpu_seconds'):.1f} "
            f"| {median_of(key, 'server_cpu_seconds'):.1f} "
            f"| {median_of(key, 'requests_per_object'):.2f} |"
        )
    best = [
        "| server | workload | mode | objmig median s | fastest peer | its median s "
        "| objmig speed ÷ fastest peer |",
        "|---|---|---|---:|---|---:|---:|",
    ]
    for key in runs:
        server, workload, tool, mode = key
        if tool != "objmig":
            continue
        peers = [k for k in runs if k[:2] == key[:2] and k[3] == mode and k[2] in PEERS]
        if not peers:
            continue
        fastest = min(peers, key=lambda k: median_of(k, "seconds"))
        mine = median_of(key, "seconds")
        theirs = median_of(fastest, "seconds")
        best.append(
            f"| {server} | {workload} | {mode} | {mine:.1f} | {fastest[2]} | {theirs:.1f} "
            f"| {theirs / mine:.2f} |"
        )
    return (
        "(median of the repetitions; objmig speed ÷ tool above 1.00 means objmig was faster)"
        "\n\n" + "\n".join(lines) + "\n\n" + "\n".join(best)
    )


def request_table(results: list[Result]) -> str:
    apis = sorted({api for r in results for api in r.requests})
    header = "| server | workload | tool | mode | " + " | ".join(apis) + " |"
    lines = [header, "|---|---|---|---|" + "---:|" * len(apis)]
    for r in results:
        cells = [
            f"{r.requests.get(api, 0) / r.objects:.2f}" if r.requests.get(api) else ""
            for api in apis
        ]
        lines.append(
            f"| {r.server} | {r.workload} | {r.tool} | {r.mode} | " + " | ".join(cells) + " |"
        )
    return "(requests per object, counted by the server)\n\n" + "\n".join(lines)


# ----------------------------------------------------------------------------- main


def find_rclone(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    candidates = sorted((CACHE / "rclone").glob("*/bin/rclone"), reverse=True)
    return str(candidates[0]) if candidates else shutil.which("rclone")


def find_aws(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    candidates = sorted((CACHE / "awscli").glob("*/bin/aws"), reverse=True)
    candidates.append(CACHE / "awscli-venv" / "bin" / "aws")
    found = next((c for c in candidates if c.exists()), None)
    return str(found) if found else shutil.which("aws")


def find_s3sync(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    candidates = sorted((CACHE / "s3sync").glob("*/bin/s3sync"), reverse=True)
    return str(candidates[0]) if candidates else shutil.which("s3sync")


def precompile_objmig() -> None:
    """Write objmig's bytecode, as installing its wheel does.

    A checkout installed in editable mode has none, and with PYTHONDONTWRITEBYTECODE set
    (this sandbox, many CI images) every run would recompile the package: about 0.15 s
    per start that no installed objmig (pip or the container image) pays.
    """
    import compileall

    import objmig

    compileall.compile_dir(Path(objmig.__file__).parent, quiet=1)


def tool_version(command: list[str]) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except OSError:
        return "?"
    return (out.stdout or out.stderr).splitlines()[0].strip() if (out.stdout or out.stderr) else "?"


def size(text: str) -> int:
    """Bytes from '16384', '16KiB', '128MiB', '1GiB' (also Ki/Mi/Gi, K/M/G as binary)."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(?:i?B?)?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    scale = {"": 1, "K": KiB, "M": MiB, "G": GiB}[match.group(2).upper()]
    return int(match.group(1)) * scale


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--server", choices=("moto", "minio", "both"), default="both")
    p.add_argument("--workloads", default="small,large", help="comma list of small,large,huge")
    p.add_argument("--huge", action="store_true", help="also run the huge workload")
    p.add_argument("--small-count", type=int, default=10_000)
    p.add_argument("--small-size", type=size, default=16 * KiB)
    p.add_argument("--large-count", type=int, default=16)
    p.add_argument("--large-size", type=size, default=128 * MiB)
    p.add_argument("--huge-count", type=int, default=2)
    p.add_argument("--huge-size", type=size, default=1 * GiB)
    p.add_argument("--part-size", type=size, default=8 * MiB)
    p.add_argument(
        "--concurrency",
        type=int,
        default=32,
        help="objmig copy.concurrency = rclone --transfers = aws max_concurrent_requests",
    )
    p.add_argument(
        "--part-concurrency",
        type=int,
        default=4,
        help="objmig copy.partConcurrency = rclone --s3-upload-concurrency",
    )
    p.add_argument("--workers", type=int, default=1, help="objmig run --workers")
    p.add_argument(
        "--verify-metadata",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="objmig verify.metadata (default true, the product default): read each copy's "
        "metadata back with a HEAD; --no-verify-metadata proves content (ETag) and re-checks "
        "the source only, which is what the other tools' verification amounts to",
    )
    p.add_argument("--tools", default=",".join(TOOLS), help=f"comma list of {','.join(TOOLS)}")
    p.add_argument("--database-url", help="ledger for objmig (default: an embedded PostgreSQL)")
    p.add_argument("--fast-ledger", action="store_true", help="embedded PostgreSQL without fsync")
    p.add_argument("--rclone", help="rclone binary (default: scripts/rclone.sh cache, PATH)")
    p.add_argument("--aws", help="aws binary (default: scripts/awscli.sh cache, PATH)")
    p.add_argument("--s3sync", help="s3sync binary (default: scripts/s3sync.sh cache, PATH)")
    p.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="round-trip time added between every tool and the server (toxiproxy, built by "
        "scripts/toxiproxy.sh): a WAN instead of loopback",
    )
    p.add_argument("--keep-targets", action="store_true", help="do not delete target buckets")
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run every tool this many times per workload, in turns (tool A, B, A, B, ...); "
        "a second table gives each tool's median wall time and the ratio of medians",
    )
    p.add_argument(
        "--profile-objmig",
        action="store_true",
        help="sample objmig's CPU with py-spy and summarise where it goes",
    )
    p.add_argument("--json-out", type=Path, help="write the results as JSON here")
    p.add_argument("--markdown-out", type=Path, help="write the tables here")
    p.add_argument("--workdir", type=Path, help="keep specs, logs and profiles here")
    return p.parse_args(argv)


@contextlib.contextmanager
def ledger_dsn(args: argparse.Namespace, workdir: Path) -> Iterator[tuple[str, int | None]]:
    """The ledger's DSN, and the postmaster's pid when the benchmark runs it."""
    if args.database_url:
        yield args.database_url, None
        return
    with EmbeddedPostgres(workdir / "postgres", fast=args.fast_ledger) as pg:
        running = pg.running()
        yield pg.dsn, running.pid if running else None


def ledger_cpu_seconds(pid: int | None) -> float:
    """CPU of the postmaster and every backend it has reaped (each objmig connection)."""
    if pid is None:
        return 0.0
    postmaster = psutil.Process(pid)
    times = postmaster.cpu_times()
    children = postmaster.children(recursive=True)
    live = sum(c.cpu_times().user + c.cpu_times().system for c in children)
    return float(times.user + times.system + times.children_user + times.children_system + live)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [w for w in args.workloads.split(",") if w]
    if args.huge and "huge" not in names:
        names.append("huge")
    catalog = {
        "small": Workload("small", args.small_count, args.small_size, 0),
        "large": Workload("large", args.large_count, args.large_size, args.part_size),
        "huge": Workload("huge", args.huge_count, args.huge_size, args.part_size),
    }
    workloads = [catalog[n] for n in names]
    tools = [t for t in args.tools.split(",") if t]
    unknown = set(tools) - set(TOOLS)
    if unknown:
        raise SystemExit(f"unknown tools: {sorted(unknown)}")
    servers = ("moto", "minio") if args.server == "both" else (args.server,)
    rclone, aws, s3sync = find_rclone(args.rclone), find_aws(args.aws), find_s3sync(args.s3sync)
    toxiproxy = find_toxiproxy() if args.latency_ms > 0 else None
    if args.latency_ms > 0 and toxiproxy is None:
        raise SystemExit("--latency-ms needs toxiproxy-server: run scripts/toxiproxy.sh")
    precompile_objmig()
    versions = {
        "objmig": tool_version([sys.executable, "-m", "objmig", "--version"]),
        "rclone": tool_version([rclone, "version"]) if rclone else "missing",
        "aws-cli": tool_version([aws, "--version"]) if aws else "missing",
        "s3sync": tool_version([s3sync, "--version"]) if s3sync else "missing",
    }
    header = (
        f"date {dt.datetime.now().astimezone().isoformat(timespec='seconds')}, "
        f"{platform.node()}, {os.cpu_count()} cores, "
        f"{round(psutil.virtual_memory().total / GiB)} GiB RAM, "
        f"load average at start {os.getloadavg()[0]:.2f}\n"
        f"command: {' '.join([Path(sys.executable).name, *sys.argv])}\n"
        f"versions: {versions}\n"
        f"concurrency {args.concurrency}, part concurrency {args.part_concurrency}, "
        f"part size {args.part_size // MiB} MiB, objmig workers {args.workers}, "
        f"objmig verify.metadata {str(args.verify_metadata).lower()}, "
        f"ledger {'--database-url' if args.database_url else 'embedded PostgreSQL'}"
        f"{' (fast: no fsync)' if args.fast_ledger else ' (durable defaults)'}; "
        + (
            f"{args.latency_ms:g} ms round trip added by toxiproxy between tools and server; "
            if args.latency_ms > 0
            else "tools on loopback; "
        )
        + "objmig bytecode precompiled; before each run: sync, then wait for an idle server; "
        "tool order reversed every other repetition"
    )
    print(header, flush=True)
    if rclone is None:
        print("rclone not found: run scripts/rclone.sh (rclone rows skipped)", flush=True)
    if aws is None:
        print("aws not found: run scripts/awscli.sh (aws-cli rows skipped)", flush=True)
    if s3sync is None:
        print("s3sync not found: run scripts/s3sync.sh (s3sync rows skipped)", flush=True)

    workdir_cm: Any = (
        contextlib.nullcontext(str(args.workdir))
        if args.workdir
        else tempfile.TemporaryDirectory(prefix="objmig-copy-bench-")
    )
    results: list[Result] = []
    server_rss: dict[str, int] = {}
    with workdir_cm as wd:
        workdir = Path(wd)
        workdir.mkdir(parents=True, exist_ok=True)
        with ledger_dsn(args, workdir) as (dsn, ledger_pid):
            for kind in servers:
                with Server(kind) as server, contextlib.ExitStack() as stack:
                    proxy = None
                    if toxiproxy is not None:
                        upstream = server.url.removeprefix("http://").rstrip("/")
                        proxy = stack.enter_context(
                            LatencyProxy(upstream, args.latency_ms, toxiproxy)
                        )
                    ctx = Context(
                        args, server, workdir, dsn, rclone, aws, ledger_pid, s3sync, proxy
                    )
                    for workload in workloads:
                        source = f"src-{workload.name}"
                        started = time.monotonic()
                        asyncio.run(seed(server, source, workload, 64))
                        print(
                            f"[{kind}] seeded {source}: {workload.count} x "
                            f"{human(workload.size)} in {time.monotonic() - started:.1f}s",
                            flush=True,
                        )
                        for repetition in range(1, max(1, args.repeat) + 1):
                            # Every other repetition runs the tools in reverse, so no tool
                            # always follows the same neighbour.
                            order = tools if repetition % 2 else tools[::-1]
                            for index, tool in enumerate(order):
                                run = (repetition - 1) * len(tools) + index
                                result = run_tool(ctx, tool, workload, source, run)
                                if result is not None:
                                    result.repetition = repetition
                                    results.append(result)
                                server_rss[kind] = max(server_rss.get(kind, 0), server.rss())
                        remove_bucket(server, source)
    report = (
        header
        + "\n\n"
        + markdown(results)
        + "\n\n"
        + (medians(results) + "\n\n" if args.repeat > 1 else "")
        + request_table(results)
        + "\n\nRSS of the S3 servers after the runs: "
        + ", ".join(f"{k} {v / MiB:.0f} MiB" for k, v in server_rss.items())
        + "\n"
    )
    print("\n" + report)
    if args.markdown_out:
        args.markdown_out.write_text(report)
    if args.json_out:
        args.json_out.write_text(
            json.dumps(
                {"header": header, "results": [r.__dict__ for r in results]}, indent=2, default=str
            )
        )
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
