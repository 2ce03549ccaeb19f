"""Manifests stored in a bucket: an S3 Inventory report (manifest.json + gzipped CSV data
files, MD5-checked), and plain / CSV / ConfigMap manifests, streamed from moto."""

from __future__ import annotations

import gzip
import hashlib
import json

import pytest

from objmig.storage.errors import ManifestError
from objmig.storage.manifest import ManifestEntry, read_inventory, read_manifest_object
from tests.fixtures.s3 import S3Seeder

SCHEMA = "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag"


def _inventory_file(rows: list[str]) -> bytes:
    return gzip.compress(("\n".join(rows) + "\n").encode())


async def _seed_inventory(seed: S3Seeder, *, corrupt: bool = False) -> tuple[str, str]:
    bucket = await seed.bucket(prefix="inv")
    files = {
        "src/config/data/a.csv.gz": _inventory_file(
            [
                f'"src","photos%2F{i:04d}+%C3%BC.jpg","","true","false","{i}",'
                f'"2024-01-01T00:00:00.000Z","etag{i}"'
                for i in range(3000)
            ]
        ),
        "src/config/data/b.csv.gz": _inventory_file(
            [
                '"src","deleted","v1","true","true","","2024-01-01T00:00:00.000Z",""',
                '"src","last","","true","false","1","2024-01-01T00:00:00.000Z","e"',
            ]
        ),
    }
    entries = []
    for key, data in files.items():
        await seed.put_object(bucket, key, data)
        md5 = hashlib.md5(data).hexdigest()
        entries.append({"key": key, "size": len(data), "MD5checksum": "0" * 32 if corrupt else md5})
    manifest = {
        "sourceBucket": "src",
        "destinationBucket": f"arn:aws:s3:::{bucket}",
        "fileFormat": "CSV",
        "fileSchema": SCHEMA,
        "files": entries,
    }
    await seed.put_object(
        bucket, "src/config/2024-01-01T00-00Z/manifest.json", json.dumps(manifest).encode()
    )
    return bucket, "src/config/2024-01-01T00-00Z/manifest.json"


async def test_s3_inventory_is_streamed_from_its_bucket(s3_client, s3_seed: S3Seeder) -> None:
    bucket, manifest_key = await _seed_inventory(s3_seed)

    entries = [e async for e in read_inventory(s3_client, bucket, manifest_key)]

    assert len(entries) == 3001
    assert entries[0] == ManifestEntry("photos/0000 ü.jpg", None, "src", 0, "etag0")
    assert entries[-1].key == "last"
    assert "deleted" not in {e.key for e in entries}


async def test_s3_inventory_with_a_bad_checksum_fails(s3_client, s3_seed: S3Seeder) -> None:
    bucket, manifest_key = await _seed_inventory(s3_seed, corrupt=True)

    with pytest.raises(ManifestError, match="MD5"):
        _ = [e async for e in read_inventory(s3_client, bucket, manifest_key)]


async def test_inventory_format_is_also_reachable_through_read_manifest_object(
    s3_client, s3_seed: S3Seeder
) -> None:
    bucket, manifest_key = await _seed_inventory(s3_seed)

    count = 0
    async for _ in read_manifest_object(s3_client, bucket, manifest_key, "inventory"):
        count += 1

    assert count == 3001


async def test_large_gzipped_csv_manifest_streams_across_chunks(
    s3_client, s3_seed: S3Seeder
) -> None:
    bucket = await s3_seed.bucket()
    # Long keys so the file spans several read chunks and line batches, with a quoted
    # multi-line key in the middle.
    rows = ["bucket,key,version"]
    rows += [f"src,{'k' * 200}-{i},v{i}" for i in range(6000)]
    rows.insert(3000, 'src,"line one\nline two",vx')
    await s3_seed.put_object(bucket, "work.csv.gz", gzip.compress("\n".join(rows).encode()))

    entries = [e async for e in read_manifest_object(s3_client, bucket, "work.csv.gz", "csv")]

    assert len(entries) == 6001
    assert entries[0].key.endswith("-0")
    assert entries[0].version_id == "v0"
    assert ManifestEntry("line one\nline two", "vx", "src") in entries
    assert entries[-1].version_id == "v5999"


async def test_plain_and_configmap_manifests_in_a_bucket(s3_client, s3_seed: S3Seeder) -> None:
    bucket = await s3_seed.bucket()
    await s3_seed.put_object(bucket, "keys.txt", "a\r\nb/ü\n\nc".encode())
    await s3_seed.put_object(bucket, "cm.yaml", b"data:\n  keys: |\n    x\n    y\n")

    plain = [e.key async for e in read_manifest_object(s3_client, bucket, "keys.txt", "lines")]
    configmap = [
        e.key async for e in read_manifest_object(s3_client, bucket, "cm.yaml", "configmap")
    ]

    assert plain == ["a", "b/ü", "c"]
    assert configmap == ["x", "y"]
