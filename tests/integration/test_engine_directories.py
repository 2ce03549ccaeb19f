"""Migrations to and from directories, end to end: a real S3 server over HTTP (moto and
MinIO), a real PostgreSQL ledger, a real filesystem (and a tmpfs that fills up)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

from types_aiobotocore_s3 import S3Client

from objmig.engine.audit import run_audit
from objmig.engine.context import MigrationContext
from objmig.ledger import Ledger, ObjectState
from tests.fixtures.s3 import S3Backend, S3Seeder
from tests.integration.directory_support import (
    bucket_side,
    files_of,
    grow,
    resource,
    small_filesystem,
    temporaries_of,
)
from tests.integration.engine_support import rows_of, run, secrets_for

KiB = 1024
MiB = 1024 * KiB


async def _tags(client: S3Client, bucket: str, key: str) -> dict[str, str]:
    answer = await client.get_object_tagging(Bucket=bucket, Key=key)
    return {t["Key"]: t["Value"] for t in answer["TagSet"]}


async def test_a_bucket_goes_to_a_directory_and_back_byte_identical_with_its_metadata(
    ledger: Ledger,
    s3_backend: S3Backend,
    backend_seed: S3Seeder,
    backend_client: S3Client,
    tmp_path: Path,
) -> None:
    source = await backend_seed.bucket()
    back = await backend_seed.bucket()
    part = s3_backend.min_part_size
    seeded = [
        await backend_seed.put_object(
            source,
            "docs/readme.txt",
            3 * KiB,
            metadata={"owner": "ann", "storage-version": "3"},
            tags={"team": "blue green", "tier": "1"},
            ContentType="text/plain; charset=utf-8",
            CacheControl="max-age=60",
            ContentDisposition='attachment; filename="readme.txt"',
        ),
        await backend_seed.put_multipart(
            source, "big/uneven.bin", [part, part, part // 3], metadata={"kind": "blob"}
        ),
        await backend_seed.put_multipart(source, "big/tagged", [part, 17], tags={"x": "y"}),
        await backend_seed.put_object(source, "spaces and ü/ä b+c=d&e.txt", 10),
        await backend_seed.put_object(source, "100% sure/#hash?q", 11),
        await backend_seed.put_object(source, "empty", b""),
        await backend_seed.put_object(source, "a.txt", 5),
        await backend_seed.put_object(source, "a/b", 6),
    ]
    tree = tmp_path / "tree"
    down = resource(
        "down",
        bucket_side(s3_backend.endpoint, source),
        {"filesystem": {"path": str(tree), "minFreeSpace": "1Mi"}},
        copy={"concurrency": 4},
    )
    result = await run(ledger, down, s3_backend.endpoint)
    assert result.outcome == "cut-over", result.status.conditions
    on_disk = files_of(tree)
    assert set(on_disk) == {obj.key for obj in seeded}
    for obj in seeded:
        assert hashlib.sha256(on_disk[obj.key]).hexdigest() == obj.sha256, obj.key
        head = await backend_client.head_object(Bucket=source, Key=obj.key)
        assert os.stat(tree / obj.key).st_mtime == int(head["LastModified"].timestamp()), obj.key
    rows = await rows_of(ledger, "test/down")
    assert {r.state for r in rows.values()} == {ObjectState.VERIFIED}
    assert result.status.verification.audited_at is not None
    assert result.status.verification.extra_files == 0
    assert not temporaries_of(tree)

    up = resource(
        "up",
        {"filesystem": {"path": str(tree)}},
        bucket_side(s3_backend.endpoint, back),
    )
    result = await run(ledger, up, s3_backend.endpoint)
    assert result.outcome == "cut-over", result.status.conditions
    for obj in seeded:
        original = await backend_client.head_object(Bucket=source, Key=obj.key)
        copy = await backend_client.head_object(Bucket=back, Key=obj.key)
        # The index restored the part layout, so the ETag; and what a file cannot hold.
        assert copy["ETag"] == original["ETag"], obj.key
        # (Every copy objmig writes carries its migration's mark besides.)
        assert copy["Metadata"].pop("objmig-migration") == "test/up"
        assert copy["Metadata"] == original["Metadata"], obj.key
        for header in ("ContentType", "CacheControl", "ContentDisposition"):
            assert copy.get(header) == original.get(header), (obj.key, header)
        assert await _tags(backend_client, back, obj.key) == await _tags(
            backend_client, source, obj.key
        )
        assert await backend_seed.get_bytes(back, obj.key) == await backend_seed.get_bytes(
            source, obj.key
        )


async def test_keys_that_would_leave_the_directory_fail_and_nothing_is_written_outside(
    ledger: Ledger, s3_seed: S3Seeder, s3_server: object, tmp_path: Path
) -> None:
    from objmig.local.s3server import LocalS3Server

    assert isinstance(s3_server, LocalS3Server)
    source = await s3_seed.bucket()
    unsafe = ["../escape", "a/../../escape", "/absolute", "dir//double", "dir/", "x/./y"]
    for key in [*unsafe, "fine/ok.txt"]:
        await s3_seed.put_object(source, key, 100)
    root = tmp_path / "jail" / "root"
    root.parent.mkdir()
    endpoint = s3_seed.backend.endpoint
    spec = resource(
        "jail",
        bucket_side(endpoint, source),
        {"filesystem": {"path": str(root)}},
        failurePolicy={"maxFailedObjects": 10},
    )
    result = await run(ledger, spec, endpoint)
    rows = await rows_of(ledger, "test/jail")
    # moto may normalise a few of these keys itself; every one that reached us as written
    # failed with its reason, and the plain one went through.
    assert rows["fine/ok.txt"].state is ObjectState.VERIFIED
    refused = [rows[k] for k in unsafe if k in rows]
    assert len(refused) >= 4
    for row in refused:
        assert row.state is ObjectState.FAILED, row.key
        assert row.error_code == "UnsafeKey", (row.key, row.last_error)
        assert "cannot be a file" in (row.last_error or "")
    assert sorted(os.listdir(tmp_path)) == ["jail"]
    assert sorted(os.listdir(root.parent)) == ["root"]
    assert files_of(root) == {"fine/ok.txt": files_of(root)["fine/ok.txt"]}
    assert result.outcome == "cut-over"


async def test_a_full_disk_pauses_the_run_with_target_space_low_until_there_is_room(
    ledger: Ledger, s3_seed: S3Seeder, tmp_path: Path
) -> None:
    source = await s3_seed.bucket()
    seeded = [await s3_seed.put_object(source, f"obj/{i:02d}", 1 * MiB) for i in range(12)]
    endpoint = s3_seed.backend.endpoint
    with small_filesystem(tmp_path / "small", "8m") as mounted:
        spec = resource(
            "full",
            bucket_side(endpoint, source),
            {"filesystem": {"path": str(mounted / "tree"), "minFreeSpace": "2Mi"}},
            copy={"concurrency": 2},
        )
        paused = asyncio.Event()
        lowest_free: list[int] = []

        def watch(status: object) -> None:
            health = status.health  # type: ignore[attr-defined]
            if health.target_free_bytes is not None:
                lowest_free.append(health.target_free_bytes)
            if status.phase == "Paused" and any(  # type: ignore[attr-defined]
                c.type == "Paused" and c.reason == "TargetSpaceLow"
                for c in status.conditions  # type: ignore[attr-defined]
            ):
                paused.set()

        task = asyncio.create_task(run(ledger, spec, endpoint, on_status=watch))
        try:
            await asyncio.wait_for(paused.wait(), timeout=120)
            statvfs = os.statvfs(mounted)
            free = statvfs.f_bavail * statvfs.f_frsize
            # It stopped before the disk filled: minFreeSpace is still free.
            assert free >= 2 * MiB
            assert not task.done()
            rows = await rows_of(ledger, "test/full")
            waiting = [r for r in rows.values() if r.error_code == "TargetSpaceLow"]
            assert waiting
            assert all(r.state is ObjectState.PENDING for r in waiting)
            assert all(r.attempts == 0 for r in waiting)  # waiting is not failing
            grow(mounted, "32m")
            result = await asyncio.wait_for(task, timeout=180)
        finally:
            if not task.done():
                task.cancel()
        assert result.outcome == "cut-over", result.status.conditions
        assert all(free >= 2 * MiB for free in lowest_free)
        on_disk = files_of(mounted / "tree")
        for obj in seeded:
            assert hashlib.sha256(on_disk[obj.key]).hexdigest() == obj.sha256
        paused_condition = next(c for c in result.status.conditions if c.type == "Paused")
        assert paused_condition.status == "False"


async def test_the_audit_finds_missing_and_extra_files_and_holds_the_cutover(
    ledger: Ledger, s3_seed: S3Seeder, tmp_path: Path
) -> None:
    source = await s3_seed.bucket()
    for i in range(5):
        await s3_seed.put_object(source, f"f/{i}", 1000)
    endpoint = s3_seed.backend.endpoint
    tree = tmp_path / "tree"
    (tree / "f").mkdir(parents=True)
    (tree / "f" / ".DS_Store").write_bytes(b"finder")  # ignorable by default
    (tree / "stray.log").write_bytes(b"not ours")
    spec = resource("audited", bucket_side(endpoint, source), {"filesystem": {"path": str(tree)}})
    result = await run(ledger, spec, endpoint)
    assert result.outcome == "awaiting-cutover"
    ready = next(c for c in result.status.conditions if c.type == "CutoverReady")
    assert (ready.reason, ready.status) == ("ExtraFiles", "False")
    assert "stray.log" in ready.message
    assert result.status.verification.extra_files == 1
    assert result.status.verification.extra_file_examples == ["stray.log"]

    # A copy deleted behind the migration's back is found missing and copied again.
    (tree / "f" / "3").unlink()
    context = MigrationContext.resolve(spec, secrets_for(endpoint))
    migration_id = await ledger.find_migration("test/audited")
    assert migration_id is not None
    found = await run_audit(ledger, migration_id, context, round_=99, wave=0)
    assert (found.missing, found.extra) == (1, 1)
    assert (await rows_of(ledger, "test/audited"))["f/3"].state is ObjectState.PENDING

    allowed = resource(
        "audited",
        bucket_side(endpoint, source),
        {"filesystem": {"path": str(tree), "ignore": ["**/.DS_Store", "*.log"]}},
    )
    result = await run(ledger, allowed, endpoint)
    assert result.outcome == "cut-over", result.status.conditions
    assert (tree / "f" / "3").read_bytes() == await s3_seed.get_bytes(source, "f/3")
    assert result.status.verification.missing_files == 0
