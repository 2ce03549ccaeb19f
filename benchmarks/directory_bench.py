"""Directory benchmark (issue 20): objmig to and from a directory against ``rclone copy`` of
the same tree, in the same run, and the figures of a deduplicating layout.

Usage::

    scripts/rclone.sh                                  # once: builds rclone into the cache
    .venv/bin/python benchmarks/directory_bench.py     # about 2-4 minutes on 2 cores
    .venv/bin/python benchmarks/directory_bench.py --small-count 500 --large-count 2  # quick

One MinIO server (a local child process) and one embedded PostgreSQL for objmig's ledger
(outside objmig's process tree). For each workload a source bucket is seeded once, then, one
tool at a time:

* ``objmig bucket->dir``: ``objmig run`` with ``target.filesystem.path`` (atomic writes,
  fsync, the index, verification on: ``verify.mode: etag`` against the bytes written);
* ``rclone bucket->dir``: ``rclone copy s3:bucket /dir`` (``--transfers`` = objmig's
  ``copy.concurrency``);
* ``objmig dir->bucket`` and ``rclone dir->bucket``: the tree objmig wrote, back into a
  fresh bucket (objmig's ETags come back from its index; rclone's multipart ETags are its
  own).

Each tool's wall time includes its start-up and listing. After each run the result is
checked (every key present with the right size). Page cache: ``sync`` and a wait for
MinIO to go idle before every tool (as in copy_bench.py), not a cache drop (that needs
root and makes every tool read from disk alike).

Then a package store with heavy duplication (``--groups`` packages of ``--files`` files,
``--shared`` of them the same in every package) goes to a content-addressed layout,
``objects/{sha256:2}/{sha256}`` with one manifest per package, and the dedup figures are
read from the ledger: objects processed, contents stored, deduplicated, bytes saved. A
second run must write nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from copy_bench import (
    SECRET_NAME,
    MiB,
    Server,
    Workload,
    find_rclone,
    ledger_dsn,
    listing,
    precompile_objmig,
    remove_bucket,
    seed,
)

from objmig.ledger import Ledger
from objmig.storage.sdk import open_client

KiB = 1024


@dataclass
class Run:
    workload: str
    tool: str
    direction: str
    objects: int
    bytes: int
    seconds: float
    exit_code: int
    missing: int = 0
    wrong_size: int = 0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.missing == 0 and self.wrong_size == 0

    @property
    def mib_per_second(self) -> float:
        return self.bytes / MiB / self.seconds if self.seconds else 0.0


def _spec(
    server: Server,
    name: str,
    source: dict[str, object],
    target: dict[str, object],
    concurrency: int,
    extra: dict[str, object] | None = None,
) -> dict[str, object]:
    s3 = {
        "endpoint": server.url,
        "region": "us-east-1",
        "addressingStyle": "path",
        "credentialsSecretRef": {"name": SECRET_NAME},
    }

    def side(where: dict[str, object]) -> dict[str, object]:
        return where if "filesystem" in where else {**s3, **where}

    return {
        "apiVersion": "objmig.dev/v1alpha1",
        "kind": "ObjectMigration",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "source": side(source),
            "target": side(target),
            "copy": {"concurrency": concurrency},
            "verify": {"mode": "etag"},
            "cutover": {"policy": "Automatic"},
            **(extra or {}),
        },
    }


def run_objmig(
    server: Server, workdir: Path, dsn: str, spec: dict[str, object], workers: int
) -> tuple[float, int]:
    name = spec["metadata"]["name"]  # type: ignore[index]
    spec_path = workdir / f"{name}.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    secrets = workdir / "secrets.yaml"
    secrets.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": SECRET_NAME},
                "stringData": {
                    "accessKeyId": server.access_key,
                    "secretAccessKey": server.secret_key,
                },
            }
        )
    )
    command = [
        sys.executable, "-m", "objmig", "run", "-f", str(spec_path), "--database-url", dsn,
        "--secrets", str(secrets), "--workers", str(workers),
    ]  # fmt: skip
    return _timed(command, dict(os.environ), workdir / f"{name}.log")


def run_rclone(
    rclone: str, server: Server, workdir: Path, source: str, target: str, concurrency: int,
    name: str,
) -> tuple[float, int]:  # fmt: skip
    env = dict(os.environ)
    prefix = "RCLONE_CONFIG_S3_"
    env.update(
        {
            prefix + "TYPE": "s3",
            prefix + "PROVIDER": "Minio",
            prefix + "ENDPOINT": server.url,
            prefix + "ACCESS_KEY_ID": server.access_key,
            prefix + "SECRET_ACCESS_KEY": server.secret_key,
            prefix + "REGION": "us-east-1",
            prefix + "FORCE_PATH_STYLE": "true",
            "RCLONE_CONFIG": os.devnull,
        }
    )
    part = "8Mi"
    command = [
        rclone, "copy", source, target, "--transfers", str(concurrency), "--checkers",
        str(concurrency), "--s3-upload-cutoff", part, "--s3-chunk-size", part,
        "--stats", "0", "--log-level", "NOTICE",
    ]  # fmt: skip
    return _timed(command, env, workdir / f"{name}.log")


def _timed(command: list[str], env: dict[str, str], log: Path) -> tuple[float, int]:
    started = time.monotonic()
    with log.open("wb") as out:
        code = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    seconds = time.monotonic() - started
    if code != 0:
        print(log.read_text()[-3000:], file=sys.stderr)
    return seconds, code


def tree_files(root: Path) -> dict[str, int]:
    """key -> size of every file under `root` but objmig's index."""
    found: dict[str, int] = {}
    for path in root.rglob("*"):
        relative = path.relative_to(root).as_posix()
        if path.is_file() and not relative.startswith(".objmig/"):
            found[relative] = path.stat().st_size
    return found


def check(expected: dict[str, int], got: dict[str, int]) -> tuple[int, int]:
    missing = sum(1 for key in expected if key not in got)
    wrong = sum(1 for key, size in expected.items() if key in got and got[key] != size)
    return missing, wrong


def round_trip(
    args: argparse.Namespace, server: Server, workdir: Path, dsn: str, rclone: str | None,
    workload: Workload,
) -> list[Run]:  # fmt: skip
    source = f"dir-{workload.name}"
    asyncio.run(seed(server, source, workload, args.concurrency))
    expected = {key: size for key, (size, _) in listing(server, source).items()}
    total = sum(expected.values())
    runs: list[Run] = []
    tools = ["objmig", "rclone"] if rclone else ["objmig"]
    for tool in tools:
        tree = workdir / f"tree-{workload.name}-{tool}"
        name = f"{workload.name}-{tool}-down-{int(time.time())}"
        server.settle()
        print(f"  {workload.name:<6} {tool:<7} bucket->dir", flush=True)
        if tool == "objmig":
            spec = _spec(server, name, {"bucket": source}, {"filesystem": {"path": str(tree),
                         "minFreeSpace": "64Mi"}}, args.concurrency)  # fmt: skip
            seconds, code = run_objmig(server, workdir, dsn, spec, args.workers)
        else:
            assert rclone is not None
            seconds, code = run_rclone(
                rclone, server, workdir, f"s3:{source}", str(tree), args.concurrency, name
            )
        missing, wrong = check(expected, tree_files(tree))
        runs.append(Run(workload.name, tool, "bucket->dir", len(expected), total, seconds, code,
                        missing, wrong))  # fmt: skip

        back = f"back-{workload.name}-{tool}"
        server.boto().create_bucket(Bucket=back)
        name = f"{workload.name}-{tool}-up-{int(time.time())}"
        server.settle()
        print(f"  {workload.name:<6} {tool:<7} dir->bucket", flush=True)
        if tool == "objmig":
            spec = _spec(server, name, {"filesystem": {"path": str(tree)}}, {"bucket": back},
                         args.concurrency)  # fmt: skip
            seconds, code = run_objmig(server, workdir, dsn, spec, args.workers)
        else:
            assert rclone is not None
            seconds, code = run_rclone(
                rclone, server, workdir, str(tree), f"s3:{back}", args.concurrency, name
            )
        got = {key: size for key, (size, _) in listing(server, back).items()}
        missing, wrong = check(expected, got)
        runs.append(Run(workload.name, tool, "dir->bucket", len(expected), total, seconds, code,
                        missing, wrong))  # fmt: skip
        remove_bucket(server, back)
        shutil.rmtree(tree, ignore_errors=True)
    remove_bucket(server, source)
    return runs


async def seed_packages(
    server: Server, bucket: str, groups: int, files: int, shared: int, size: int
) -> None:
    """`groups` packages of `files` files; the first `shared` files are the same in every
    package, the others the package's own."""
    async with open_client(server.endpoint(), 16) as s3:
        await s3.create_bucket(Bucket=bucket)
        semaphore = asyncio.Semaphore(16)

        async def put(group: int, index: int) -> None:
            seed = f"common-{index}" if index < shared else f"own-{group}-{index}"
            body = (seed.encode() * (size // len(seed) + 1))[:size]
            async with semaphore:
                await s3.put_object(Bucket=bucket, Key=f"pkg-{group:03d}/f{index:02d}", Body=body)

        await asyncio.gather(*(put(g, i) for g in range(groups) for i in range(files)))


async def content_counts(dsn: str, name: str) -> tuple[int, int, int, int, int, int]:
    async with await Ledger.connect(dsn) as ledger:
        migration_id = await ledger.find_migration(f"default/{name}")
        if migration_id is None:
            migration_id = await ledger.find_migration(name)
        assert migration_id is not None, name
        c = await ledger.content_counts(migration_id)
        return c.objects, c.bytes, c.contents, c.content_bytes, c.deduplicated, c.bytes_saved


def dedup(args: argparse.Namespace, server: Server, workdir: Path, dsn: str) -> str:
    source, store = "packages", "package-store"
    groups, files, shared, size = args.groups, args.files, args.shared, args.file_size
    asyncio.run(seed_packages(server, source, groups, files, shared, size))
    server.boto().create_bucket(Bucket=store)
    name = f"cas-{int(time.time())}"
    spec = _spec(
        server, name, {"bucket": source},
        {"bucket": store, "keyTemplate": "objects/{sha256:2}/{sha256}"}, args.concurrency,
        {"groups": {"manifestKey": "packages/{group}.json"}},
    )  # fmt: skip
    server.settle()
    seconds, code = run_objmig(server, workdir, dsn, spec, args.workers)
    figures = asyncio.run(content_counts(dsn, name))
    stored = listing(server, store)
    contents = sum(1 for key in stored if key.startswith("objects/"))
    manifests = sum(1 for key in stored if key.startswith("packages/"))
    before = {key: etag for key, (_, etag) in stored.items()}
    again, code_again = run_objmig(server, workdir, dsn, spec, args.workers)
    after = {key: etag for key, (_, etag) in listing(server, store).items()}
    objects, nbytes, distinct, distinct_bytes, deduplicated, saved = figures
    expected_contents = shared + groups * (files - shared)
    lines = [
        f"packages: {groups} x {files} files of {size // KiB} KiB, {shared} shared by all",
        f"objmig run: {seconds:.1f} s (exit {code}); again: {again:.1f} s (exit {code_again})",
        f"processed {objects} objects ({nbytes / MiB:.1f} MiB); contents stored {distinct} "
        f"({distinct_bytes / MiB:.1f} MiB; expected {expected_contents}); deduplicated "
        f"{deduplicated}; bytes saved {saved / MiB:.1f} MiB",
        f"target: {contents} content objects, {manifests} manifests; a second run changed "
        f"{'nothing' if before == after else 'SOMETHING'}",
    ]
    return "\n".join(lines)


def markdown(runs: list[Run]) -> str:
    rows = [
        "| workload | direction | tool | objects | MiB | seconds | MiB/s | ok |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in runs:
        rows.append(
            f"| {r.workload} | {r.direction} | {r.tool} | {r.objects} | {r.bytes / MiB:.0f} | "
            f"{r.seconds:.2f} | {r.mib_per_second:.1f} | "
            f"{'yes' if r.ok else f'NO (exit {r.exit_code}, {r.missing} missing)'} |"
        )
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small-count", type=int, default=2000)
    parser.add_argument("--small-size", type=int, default=16 * KiB)
    parser.add_argument("--large-count", type=int, default=6)
    parser.add_argument("--large-size", type=int, default=64 * MiB)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--shared", type=int, default=14)
    parser.add_argument("--file-size", type=int, default=64 * KiB)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--fast-ledger", action="store_true", default=True)
    parser.add_argument("--rclone", default=None)
    parser.add_argument("--dedup-only", action="store_true", help="Only the package store.")
    args = parser.parse_args()
    rclone = find_rclone(args.rclone)
    precompile_objmig()
    workloads = [
        Workload("small", args.small_count, args.small_size, 0),
        Workload("large", args.large_count, args.large_size, 8 * MiB),
    ]
    with tempfile.TemporaryDirectory(prefix="objmig-dirbench-", dir="/var/tmp") as tmp:
        workdir = Path(tmp)
        with ledger_dsn(args, workdir) as (dsn, _), Server("minio") as server:
            runs: list[Run] = []
            for workload in [] if args.dedup_only else workloads:
                runs += round_trip(args, server, workdir, dsn, rclone, workload)
            print()
            print(markdown(runs))
            print()
            print(dedup(args, server, workdir, dsn))
            print(json.dumps([r.__dict__ for r in runs]))
            return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
