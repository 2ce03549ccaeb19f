"""Keys XML cannot carry, and other awkward keys, end to end on real servers.

Listings ask for URL-encoded keys (issue 21.1): a control character, a carriage return or a
key of a thousand bytes must arrive on the target byte-identical, in both copy modes and
both addressing styles, and a key a store rewrites must fail rather than pass as its
namesake.
"""

from __future__ import annotations

import dataclasses

import pytest
from types_aiobotocore_s3 import S3Client

from objmig.engine.deletion_pass import run_cleanup
from objmig.ledger import Ledger, ObjectState
from objmig.local.s3server import LocalMinio
from objmig.storage.bucket import delete_objects, list_multipart_uploads, list_objects
from objmig.storage.endpoint import Endpoint
from objmig.storage.s3http import open_http_client
from objmig.storage.sdk import open_client
from tests.fixtures.s3 import S3Backend, S3Seeder
from tests.integration.engine_support import (
    cleanup_of,
    migration,
    rows_of,
    run,
    secrets_for,
    sha256_of,
)

KiB = 1024

#: One key per kind of trouble; the value says which.
AWKWARD = {
    "dir/with space.txt": "space",
    "dir/plus+sign": "plus",
    "dir/percent%41%zz": "percent signs, one not an escape",
    "dir/question?mark=1&amp": "query characters",
    "dir/hash#fragment": "fragment character",
    "dir/ünïcödé-日本語-🙂": "unicode",
    "dir/trailing space ": "trailing space",
    "dir/control\x01\x1fchars": "control characters XML cannot carry",
    "dir/carriage\rreturn": "a carriage return (XML turns it into a line feed)",
    "dir/tab\tand\x7fdel": "tab and DEL",
    "dir/" + "/".join(["s" * 200] * 5) + "/end": "over 1,000 bytes",
    "dir//double-slash": "an empty segment",
    "/leading-slash": "a leading slash",
}


def _holdable(backend: str, virtual: bool) -> list[str]:
    """The awkward keys a store can hold as they are (the rest it refuses or rewrites)."""
    keys = list(AWKWARD)
    if backend == "minio":
        # MinIO refuses empty segments (XMinioInvalidObjectName) and drops a leading '/'.
        keys = [k for k in keys if "//" not in k and not k.startswith("/")]
    elif virtual:
        # moto drops a leading '/' of a virtual-hosted path.
        keys = [k for k in keys if not k.startswith("/")]
    return keys


def _virtual(endpoint: Endpoint) -> Endpoint:
    """The same server in virtual-hosted addressing: BUCKET.localhost."""
    assert endpoint.url is not None
    return dataclasses.replace(
        endpoint, url=endpoint.url.replace("127.0.0.1", "localhost"), addressing_style="virtual"
    )


async def _listed(client: S3Client, bucket: str) -> set[str]:
    return {info.key async for info in list_objects(client, bucket)}


@pytest.mark.parametrize("mode", ["stream", "serverSide"])
@pytest.mark.parametrize("addressing", ["path", "virtual"])
async def test_awkward_keys_arrive_byte_identical(
    ledger: Ledger,
    s3_backend: S3Backend,
    backend_seed: S3Seeder,
    backend_client: S3Client,
    mode: str,
    addressing: str,
) -> None:
    virtual = addressing == "virtual"
    endpoint = _virtual(s3_backend.endpoint) if virtual else s3_backend.endpoint
    source = await backend_seed.bucket()
    target = await backend_seed.bucket()
    keys = _holdable(s3_backend.name, virtual)
    async with open_client(endpoint, 8) as client:
        # Written in the addressing style under test, as an application using it would.
        seeder = S3Seeder(client, s3_backend)
        seeded = {key: await seeder.put_object(source, key, 2 * KiB, seed=key) for key in keys}
        part = s3_backend.min_part_size
        # moto answers 500 to CreateMultipartUpload for a key with a control character.
        multipart_key = "dir/multi part é+%" + ("\x02" if s3_backend.name == "minio" else "")
        seeded[multipart_key] = await seeder.put_multipart(source, multipart_key, [part, 100])
    resource = migration(
        endpoint,
        source,
        target,
        copy={"mode": mode},
        source_extra={"addressingStyle": addressing},
        target_extra={"addressingStyle": addressing},
    )

    result = await run(ledger, resource, endpoint)

    assert result.outcome == "cut-over", [(o.key, o.last_error) for o in result.status.objects]
    assert await _listed(backend_client, target) == set(seeded)
    for key, obj in seeded.items():
        assert await sha256_of(backend_client, target, key) == obj.sha256, repr(key)
    rows = await rows_of(ledger)
    assert set(rows) == set(seeded)
    assert {r.state for r in rows.values()} == {ObjectState.VERIFIED}


async def test_a_key_the_target_store_rewrites_fails_instead_of_passing_as_its_namesake(
    ledger: Ledger, s3_seed: S3Seeder, minio_server: LocalMinio
) -> None:
    # moto keeps "/leading"; MinIO keeps it as "leading", and a HEAD of "/leading" then
    # answers for "leading".
    source = await s3_seed.bucket()
    await s3_seed.put_object(source, "/leading", 1 * KiB)
    await s3_seed.put_object(source, "plain", 1 * KiB)
    moto, minio = s3_seed.backend.endpoint, minio_server.endpoint()
    async with open_client(minio, 4) as minio_client:
        target = await S3Seeder(minio_client, s3_seed.backend).bucket()
        resource = migration(moto, source, target, target_endpoint=minio)

        result = await run(ledger, resource, moto, secrets=secrets_for(moto, target=minio))

        rows = await rows_of(ledger)
        assert rows["plain"].state is ObjectState.VERIFIED
        rewritten = rows["/leading"]
        assert (rewritten.state, rewritten.error_code) == (
            ObjectState.FAILED,
            "TargetKeyRewritten",
        )
        assert rewritten.attempts == 1
        assert "'leading'" in (rewritten.last_error or "")
        assert result.outcome == "awaiting-cutover"


@pytest.mark.parametrize("s3_backend", ["minio"], indirect=True)
async def test_a_versioned_source_lists_keys_xml_cannot_carry(
    ledger: Ledger, s3_backend: S3Backend, backend_seed: S3Seeder, backend_client: S3Client
) -> None:
    # Versioned buckets are listed by the SDK (ListObjectVersions). moto does not encode
    # version listings, so a control character breaks its XML: MinIO only.
    source = await backend_seed.bucket(versioned=True)
    target = await backend_seed.bucket()
    keys = ["v/ctl\x01key", "v/cr\rkey", "v/plain"]
    for key in keys:
        await backend_seed.put_object(source, key, 1 * KiB)
    resource = migration(s3_backend.endpoint, source, target)

    result = await run(ledger, resource, s3_backend.endpoint)

    assert result.outcome == "cut-over", [(o.key, o.last_error) for o in result.status.objects]
    assert await _listed(backend_client, target) == set(keys)


async def test_source_cleanup_deletes_exactly_the_awkward_keys(
    ledger: Ledger, s3_backend: S3Backend, backend_seed: S3Seeder, backend_client: S3Client
) -> None:
    # DeleteObjects lists keys in XML: a carriage return would arrive as a line feed and
    # delete "d/cr\nkey" instead. Such keys are deleted one by one.
    source = await backend_seed.bucket()
    target = await backend_seed.bucket()
    migrated = ["d/cr\rkey", "d/ctl\x01key", "d/plain key+"]
    for key in migrated:
        await backend_seed.put_object(source, key, 1 * KiB)
    bystanders = ["e/cr\nkey"] if s3_backend.name == "minio" else ["e/other"]
    for key in bystanders:
        await backend_seed.put_object(source, key, 1 * KiB)
    resource = migration(s3_backend.endpoint, source, target, selection={"include": ["d/**"]})
    result = await run(ledger, resource, s3_backend.endpoint)
    assert result.outcome == "cut-over", [(o.key, o.last_error) for o in result.status.objects]
    digest = result.status.verification.digest
    assert digest is not None

    status = await run_cleanup(ledger, cleanup_of(digest), secrets_for(s3_backend.endpoint))

    assert status.counts.deleted == len(migrated), status.objects
    assert await _listed(backend_client, source) == set(bystanders)


@pytest.mark.parametrize("s3_backend", ["minio"], indirect=True)
async def test_multipart_uploads_and_deletes_of_keys_xml_cannot_carry(
    s3_backend: S3Backend, backend_seed: S3Seeder, backend_client: S3Client
) -> None:
    bucket = await backend_seed.bucket()
    keys = ["u/ctl\x01key", "u/cr\rkey", "u/plain"]
    created = {
        key: (await backend_client.create_multipart_upload(Bucket=bucket, Key=key))["UploadId"]
        for key in keys
    }

    listed = {u.key: u.upload_id async for u in list_multipart_uploads(backend_client, bucket)}

    assert listed == created
    for key in keys:
        await backend_client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=created[key])
        await backend_seed.put_object(bucket, key, 10)
    await backend_seed.put_object(bucket, "u/cr\nkey", 10)
    results = await delete_objects(backend_client, bucket, [(k, None) for k in keys])
    assert [r.deleted for r in results] == [True, True, True]
    assert await _listed(backend_client, bucket) == {"u/cr\nkey"}


async def test_our_listing_decodes_what_the_store_encoded(
    s3_backend: S3Backend, backend_seed: S3Seeder
) -> None:
    bucket = await backend_seed.bucket()
    keys = _holdable(s3_backend.name, virtual=False)
    for key in keys:
        await backend_seed.put_object(bucket, key, 1)
    async with open_http_client(s3_backend.endpoint) as http:
        listed = [info.key async for info in http.list_objects(bucket, page_size=4)]
    assert listed == sorted(keys, key=lambda k: k.encode())
