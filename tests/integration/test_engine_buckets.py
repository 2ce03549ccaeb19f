"""Every bucket of an account (minus exclusions) to a directory, one bucket's cleanup at a
time (seed 003): moto for the DEEP_ARCHIVE objects that need a restore first, a real
PostgreSQL ledger, a real directory."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

from types_aiobotocore_s3 import S3Client

from objmig.engine.deletion_pass import run_cleanup
from objmig.ledger import Ledger, ObjectRow, ObjectState
from tests.fixtures.s3 import S3Seeder, Seeded
from tests.integration.directory_support import files_of, resource
from tests.integration.engine_support import keys_of, run, secrets_for
from tests.integration.test_cleanup import cleanup_of

KiB = 1024


async def _bucket(seed: S3Seeder, name: str) -> str:
    await seed.client.create_bucket(Bucket=name)
    seed.buckets.append(name)
    return name


async def test_three_buckets_minus_one_go_to_a_directory_and_one_bucket_is_cleaned_alone(
    ledger: Ledger, s3_seed: S3Seeder, s3_client: S3Client, tmp_path: Path
) -> None:
    account = f"acct-{uuid.uuid4().hex[:10]}"
    photos = await _bucket(s3_seed, f"{account}-photos")
    archive = await _bucket(s3_seed, f"{account}-archive")
    docs = await _bucket(s3_seed, f"{account}-docs")
    logs = await _bucket(s3_seed, f"{account}-logs")
    seeded: dict[str, list[Seeded]] = {
        photos: [await s3_seed.put_object(photos, f"2019/{i}.jpg", 2 * KiB) for i in range(4)],
        archive: [
            await s3_seed.put_object(archive, f"tax/{i}.pdf", 3 * KiB, storage_class="DEEP_ARCHIVE")
            for i in range(3)
        ]
        + [await s3_seed.put_object(archive, "index.txt", 100)],
        docs: [await s3_seed.put_object(docs, "same/key", 500)],
    }
    # The same key in two buckets stays two objects, two files.
    seeded[photos].append(await s3_seed.put_object(photos, "same/key", 700))
    await s3_seed.put_object(logs, "access.log", 1000)
    endpoint = s3_seed.backend.endpoint
    backup = tmp_path / "backup"
    spec = resource(
        "m",
        {
            "endpoint": endpoint.url,
            "addressingStyle": "path",
            "credentialsSecretRef": {"name": "s3-creds"},
            "buckets": {"include": [f"{account}-*"], "exclude": [f"{account}-logs"]},
        },
        {"filesystem": {"path": f"{backup}/{{bucket}}", "minFreeSpace": "1Mi"}},
        restore={"tier": "Bulk", "days": 1, "pollInterval": "1s"},
    )

    result = await run(ledger, spec, endpoint)

    assert result.outcome == "cut-over", result.status.conditions
    on_disk = files_of(backup)
    expected = {f"{b}/{o.key}": o for b, objects in seeded.items() for o in objects}
    assert set(on_disk) == set(expected)
    for path, obj in expected.items():
        assert hashlib.sha256(on_disk[path]).hexdigest() == obj.sha256, path
    rows = [row async for row in ledger.iter_rows(await _id(ledger))]
    assert {row.bucket for row in rows} == {photos, archive, docs}
    restored = [row for row in rows if row.storage_class == "DEEP_ARCHIVE"]
    assert len(restored) == 3
    assert all(row.restore_requested_at is not None for row in restored)
    assert all(row.state is ObjectState.VERIFIED for row in rows)

    listed = {bucket.name: bucket for bucket in result.status.buckets}
    assert set(listed) == {photos, archive, docs}
    for bucket, objects in seeded.items():
        summary = listed[bucket]
        assert (summary.objects, summary.verified, summary.failed) == (
            len(objects),
            len(objects),
            0,
        )
        assert summary.bytes == sum(o.size for o in objects)
        assert summary.digest is not None
        assert summary.digest.startswith("sha256:")
    assert len({b.digest for b in listed.values()} | {result.status.verification.digest}) == 4

    # The whole migration's digest does not approve one bucket's deletion...
    whole = result.status.verification.digest
    refused = await run_cleanup(
        ledger, cleanup_of(whole, name="wrong", bucket=photos), secrets_for(endpoint)
    )
    assert refused.phase == "Blocked"
    assert refused.unmet_gates[0].reason == "ApprovalDigestMismatch"
    assert f"bucket {photos}'s" in refused.unmet_gates[0].message
    assert set(await keys_of(s3_client, photos)) == {o.key for o in seeded[photos]}

    # ... the bucket's own does, and only that bucket's verified objects go.
    done = await run_cleanup(
        ledger,
        cleanup_of(listed[photos].digest, name="photos", bucket=photos),
        secrets_for(endpoint),
    )
    assert done.phase == "Completed", done.unmet_gates
    assert done.counts.skipped_by_reason == {}, done.objects
    assert (done.counts.deleted, done.counts.skipped, done.counts.failed) == (5, 0, 0)
    assert await keys_of(s3_client, photos) == {}
    assert set(await keys_of(s3_client, docs)) == {"same/key"}
    assert len(await keys_of(s3_client, archive)) == 4
    assert set(await keys_of(s3_client, logs)) == {"access.log"}
    states = {(r.bucket, r.key): r.state for r in (await _rows(ledger))}
    assert {s for (b, _), s in states.items() if b == photos} == {ObjectState.DELETED}
    assert {s for (b, _), s in states.items() if b != photos} == {ObjectState.VERIFIED}
    # The copies stay, of course.
    assert set(files_of(backup)) == set(expected)


async def _id(ledger: Ledger) -> int:
    migration_id = await ledger.find_migration("test/m")
    assert migration_id is not None
    return migration_id


async def _rows(ledger: Ledger) -> list[ObjectRow]:
    return [row async for row in ledger.iter_rows(await _id(ledger))]
