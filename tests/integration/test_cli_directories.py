"""``objmig run`` to and from a directory as a user runs it: a real process, killed with
SIGKILL mid-copy, then run again; ``objmig status`` and ``report`` by bucket."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

import yaml

from objmig.ledger import Ledger, ObjectState
from objmig.local.s3server import LocalS3Server
from tests.fixtures.s3 import S3Seeder
from tests.integration.directory_support import files_of, temporaries_of

KiB = 1024
SECRET_KEY = "cli-test-secret-value-3f9a"


def _inputs(tmp_path: Path, name: str, source: dict[str, Any], target: dict[str, Any]) -> list[str]:
    spec = {
        "apiVersion": "objmig.dev/v1alpha1",
        "kind": "ObjectMigration",
        "metadata": {"name": name, "namespace": "cli"},
        "spec": {"source": source, "target": target, "copy": {"concurrency": 4}},
    }
    secrets = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s3"},
        "stringData": {"accessKeyId": "cli-test", "secretAccessKey": SECRET_KEY},
    }
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "secrets.yaml").write_text(yaml.safe_dump(secrets))
    return [
        sys.executable,
        "-m",
        "objmig",
        "run",
        "-f",
        str(tmp_path / f"{name}.yaml"),
        "--secrets",
        str(tmp_path / "secrets.yaml"),
    ]


async def _run(command: list[str], database_url: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *command,
        "--database-url",
        database_url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=300)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def _kill_when_verified(
    command: list[str], database_url: str, ledger: Ledger, name: str, verified: int
) -> None:
    """Start ``objmig run`` and SIGKILL it once `verified` objects are verified."""
    process = await asyncio.create_subprocess_exec(
        *command,
        "--database-url",
        database_url,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        for _ in range(1200):
            await asyncio.sleep(0.05)
            migration_id = await ledger.find_migration(name)
            if migration_id is not None:
                counts = await ledger.counts(migration_id)
                if counts.state(ObjectState.VERIFIED).objects >= verified:
                    break
        assert process.returncode is None, "objmig run finished before it could be killed"
        process.send_signal(signal.SIGKILL)
        await asyncio.wait_for(process.wait(), timeout=10)
    finally:
        if process.returncode is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL


async def test_kill_9_to_and_from_a_directory_then_rerun_leaves_whole_files_and_no_temporaries(
    ledger: Ledger,
    database_url: str,
    s3_server: LocalS3Server,
    s3_seed: S3Seeder,
    tmp_path: Path,
) -> None:
    source = await s3_seed.bucket()
    back = await s3_seed.bucket()
    seeded = [await s3_seed.put_object(source, f"obj/{i:04d}", 24 * KiB) for i in range(200)]
    seeded += [
        await s3_seed.put_multipart(source, f"big/{i}", [256 * KiB] * 6 + [5 * KiB])
        for i in range(6)
    ]
    expected = {obj.key: obj.sha256 for obj in seeded}
    endpoint = {"endpoint": s3_server.endpoint_url, "credentialsSecretRef": {"name": "s3"}}
    tree = tmp_path / "tree"
    down = _inputs(
        tmp_path, "down", {**endpoint, "bucket": source}, {"filesystem": {"path": str(tree)}}
    )

    await _kill_when_verified(down, database_url, ledger, "cli/down", 30)
    # Killed mid-copy: whatever stands at a final path is whole.
    for key, data in files_of(tree).items():
        assert hashlib.sha256(data).hexdigest() == expected[key], key
    code, output = await _run(down, database_url)
    assert code == 0, output
    assert SECRET_KEY not in output
    on_disk = files_of(tree)
    assert {k: hashlib.sha256(v).hexdigest() for k, v in on_disk.items()} == expected
    assert temporaries_of(tree) == []

    up = _inputs(tmp_path, "up", {"filesystem": {"path": str(tree)}}, {**endpoint, "bucket": back})
    await _kill_when_verified(up, database_url, ledger, "cli/up", 30)
    code, output = await _run(up, database_url)
    assert code == 0, output
    for obj in seeded[::25] + seeded[-6:]:
        assert await s3_seed.get_bytes(back, obj.key) == await s3_seed.get_bytes(source, obj.key)
        original = await s3_seed.client.head_object(Bucket=source, Key=obj.key)
        copy = await s3_seed.client.head_object(Bucket=back, Key=obj.key)
        assert copy["ETag"] == original["ETag"], obj.key


async def test_status_report_and_approve_break_down_by_bucket(
    database_url: str, s3_server: LocalS3Server, s3_seed: S3Seeder, tmp_path: Path
) -> None:
    account = f"cli{os.urandom(4).hex()}"
    for name, count in (("a", 3), ("b", 2)):
        bucket = f"{account}-{name}"
        await s3_seed.client.create_bucket(Bucket=bucket)
        s3_seed.buckets.append(bucket)
        for i in range(count):
            await s3_seed.put_object(bucket, f"k{i}", 100 + i)
    source = {
        "endpoint": s3_server.endpoint_url,
        "credentialsSecretRef": {"name": "s3"},
        "buckets": {"include": [f"{account}-*"]},
    }
    command = _inputs(
        tmp_path, "many", source, {"filesystem": {"path": f"{tmp_path}/backup/{{bucket}}"}}
    )
    code, output = await _run(command, database_url)
    assert code == 0, output
    base = [sys.executable, "-m", "objmig"]
    code, shown = await _run([*base, "status", "cli/many", "--json"], database_url)
    assert code == 0, shown
    status = yaml.safe_load(shown)
    buckets = {b["name"]: b for b in status["buckets"]}
    assert {n: (b["objects"], b["verified"]) for n, b in buckets.items()} == {
        f"{account}-a": (3, 3),
        f"{account}-b": (2, 2),
    }
    code, report = await _run(
        [*base, "report", "cli/many", "--by-bucket", "--format", "csv"], database_url
    )
    assert code == 0, report
    lines = [line for line in report.splitlines() if "," in line]
    assert lines[0] == "bucket,objects,bytes,verified,failed,digest"
    assert lines[1].startswith(f"{account}-a,3,303,3,0,sha256:")
    assert lines[1].endswith(buckets[f"{account}-a"]["digest"])
    code, approved = await _run(
        [*base, "approve", "cli/many", "--bucket", f"{account}-b"], database_url
    )
    assert code == 0, approved
    assert f"bucket: {account}-b" in approved
    assert f"digest: {buckets[f'{account}-b']['digest']}" in approved
