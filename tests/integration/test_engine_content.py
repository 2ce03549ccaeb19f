"""A package store moved to a file-level, content-addressed layout (seed 002): 50 packages
sharing 70% of their files, deduplicated, one manifest per package, cutover and rollback,
and a cleanup that keeps every package whose manifest does not verify. Real MinIO (whose
additional checksums prove dedup hits without reading them) and PostgreSQL."""

from __future__ import annotations

import hashlib
import json

import pytest
from types_aiobotocore_s3 import S3Client

from objmig.engine.deletion_pass import run_cleanup
from objmig.ledger import Ledger, ObjectState
from tests.fixtures.s3 import S3Backend, S3Seeder
from tests.integration.directory_support import bucket_side, resource
from tests.integration.engine_support import keys_of, run, secrets_for
from tests.integration.test_cleanup import cleanup_of

KiB = 1024
GROUPS = 50
SHARED = 7  # files every package has, byte for byte
OWN = 3  # files of one package alone


async def _listing(client: S3Client, bucket: str) -> dict[str, tuple[str, object]]:
    """Key -> (ETag, LastModified): anything written again shows."""
    found: dict[str, tuple[str, object]] = {}
    async for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            found[item["Key"]] = (item["ETag"], item["LastModified"])
    return found


@pytest.mark.parametrize("s3_backend", ["minio"], indirect=True)
async def test_a_package_store_becomes_content_addressed_with_exact_dedup_and_manifests(
    ledger: Ledger, s3_backend: S3Backend, backend_seed: S3Seeder, backend_client: S3Client
) -> None:
    packages = await backend_seed.bucket(prefix="pkgs")
    store = await backend_seed.bucket(prefix="store")
    shared = [f"lib/common-{j}.so" for j in range(SHARED)]
    contents: dict[str, bytes] = {}  # sha256 -> bytes
    sizes: dict[str, int] = {}  # key -> size
    for g in range(GROUPS):
        group = f"pkg-{g:02d}"
        for j, name in enumerate(shared):
            obj = await backend_seed.put_object(
                packages, f"{group}/{name}", 4 * KiB, seed=f"common-{j}", metadata={"mode": "0755"}
            )
            contents[obj.sha256] = obj.data or b""
            sizes[obj.key] = obj.size
        for j in range(OWN):
            obj = await backend_seed.put_object(
                packages, f"{group}/share/own-{j}.txt", 2 * KiB, ContentType="text/plain"
            )
            contents[obj.sha256] = obj.data or b""
            sizes[obj.key] = obj.size
    endpoint = s3_backend.endpoint
    spec = dict(
        groups={"by": "{group}", "manifestKey": "packages/{group}.json"},
        cutover={
            "configMapRef": {
                "name": "store-layout",
                "data": {"STORE_LAYOUT": "file-level", "MANIFESTS": f"s3://{store}/packages/"},
            }
        },
        copy={"concurrency": 8},
    )
    target = bucket_side(endpoint, store, keyTemplate="objects/{sha256:2}/{sha256}")

    result = await run(
        ledger, resource("pkg", bucket_side(endpoint, packages), target, **spec), endpoint
    )

    assert result.outcome == "cut-over", result.status.conditions
    objects = GROUPS * (SHARED + OWN)
    distinct = SHARED + GROUPS * OWN
    content = result.status.content
    assert content is not None
    assert (content.processed, content.contents, content.deduplicated) == (
        objects,
        distinct,
        objects - distinct,
    )
    stored_bytes = SHARED * 4 * KiB + GROUPS * OWN * 2 * KiB
    assert content.bytes_saved == sum(sizes.values()) - stored_bytes
    # Identical content is stored once, under its own SHA-256.
    stored = await _listing(backend_client, store)
    blobs = {k for k in stored if k.startswith("objects/")}
    assert blobs == {f"objects/{sha[:2]}/{sha}" for sha in contents}
    for key in sorted(blobs)[::10]:
        data = await backend_seed.get_bytes(store, key)
        assert hashlib.sha256(data).hexdigest() == key.rsplit("/", 1)[1]
    # One manifest per package, listing exactly its members with path, content and metadata.
    assert result.status.groups is not None
    assert (result.status.groups.groups, result.status.groups.manifests_written) == (GROUPS, GROUPS)
    manifest = json.loads(await backend_seed.get_bytes(store, "packages/pkg-07.json"))
    members = {m["path"]: m for m in manifest["members"]}
    assert set(members) == {*shared, *(f"share/own-{j}.txt" for j in range(OWN))}
    common = members["lib/common-3.so"]
    assert common["content"] == f"objects/{common['sha256'][:2]}/{common['sha256']}"
    assert (common["size"], common["metadata"]) == (4 * KiB, {"mode": "0755"})
    assert members["share/own-1.txt"]["contentType"] == "text/plain"
    assert result.status.cutover.config_map_data == spec["cutover"]["configMapRef"]["data"]  # type: ignore[index]

    # Another run over the same packages into the same store writes nothing at all.
    again = await run(
        ledger, resource("pkg-again", bucket_side(endpoint, packages), target, **spec), endpoint
    )
    assert again.outcome == "cut-over"
    assert again.status.content is not None
    assert again.status.content.deduplicated == objects - distinct
    assert await _listing(backend_client, store) == stored

    # Rollback withdraws what the cutover published; cutting over again re-scans first.
    rolled = await run(
        ledger,
        resource(
            "pkg",
            bucket_side(endpoint, packages),
            target,
            **{**spec, "cutover": {**spec["cutover"], "rollback": True}},  # type: ignore[dict-item]
        ),
        endpoint,
    )
    assert rolled.outcome == "rolled-back"
    assert rolled.status.cutover.rolled_back_at is not None
    back = await run(
        ledger, resource("pkg", bucket_side(endpoint, packages), target, **spec), endpoint
    )
    assert back.outcome == "cut-over", back.status.conditions
    assert await _listing(backend_client, store) == stored

    # A cleanup deletes a package's old files only while its manifest and contents verify.
    await backend_client.delete_object(Bucket=store, Key="packages/pkg-13.json")
    digest = back.status.verification.digest
    cleaned = await run_cleanup(
        ledger,
        cleanup_of(digest, name="old-layout", migrationRef={"name": "pkg"}),
        secrets_for(endpoint),
    )
    assert cleaned.phase == "Completed", cleaned.unmet_gates
    assert cleaned.counts.skipped_by_reason == {"GroupManifestMissing": SHARED + OWN}
    assert cleaned.counts.deleted == objects - (SHARED + OWN)
    left = await keys_of(backend_client, packages)
    assert {key.split("/", 1)[0] for key in left} == {"pkg-13"}
    assert len(left) == SHARED + OWN
    states = {row.key: row.state async for row in ledger.iter_rows(await _id(ledger, "test/pkg"))}
    assert {s for k, s in states.items() if not k.startswith("pkg-13/")} == {ObjectState.DELETED}


async def _id(ledger: Ledger, name: str) -> int:
    migration_id = await ledger.find_migration(name)
    assert migration_id is not None
    return migration_id
