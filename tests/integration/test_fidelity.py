"""What a copy keeps of its source, and what verification proves of it (issues 25.1, 25.3,
25.4 and 21.8): data objmig wrote migrates again, tags are proven, metadata differences
are named, and what could not be kept is recorded per object.
"""

from __future__ import annotations

import pytest
from types_aiobotocore_s3 import S3Client

from objmig.ledger import Ledger, ObjectState
from objmig.storage.endpoint import Endpoint
from tests.fixtures.s3 import S3Backend, S3Seeder
from tests.integration.engine_support import keys_of, migration, rows_of, run
from tests.support.s3proxy import Answer, RewriteHeaders, S3FaultProxy

KiB = 1024


async def _metadata(client: S3Client, bucket: str, key: str) -> dict[str, str]:
    return dict((await client.head_object(Bucket=bucket, Key=key))["Metadata"])


@pytest.mark.parametrize("mode", ["stream", "serverSide"])
async def test_chains_returns_and_relayouts_of_objmig_copies_migrate_and_carry_one_marker(
    ledger: Ledger,
    s3_backend: S3Backend,
    backend_seed: S3Seeder,
    backend_client: S3Client,
    mode: str,
) -> None:
    endpoint = s3_backend.endpoint
    a, b, c = [await backend_seed.bucket() for _ in range(3)]
    part = s3_backend.min_part_size
    originals = [
        await backend_seed.put_object(a, "doc.txt", 3 * KiB, metadata={"owner": "x"}),
        await backend_seed.put_multipart(a, "big", [part, 10], metadata={"v": "1"}),
    ]
    copy = {"mode": mode}

    async def migrate(name: str, source: str, target: str, **spec: object) -> None:
        resource = migration(endpoint, source, target, name=name, copy=copy, **spec)
        result = await run(ledger, resource, endpoint)
        assert result.outcome == "cut-over", (name, result.status.objects)
        rows = await rows_of(ledger, f"test/{name}")
        assert {r.state for r in rows.values()} == {ObjectState.VERIFIED}, name

    await migrate("ab", a, b)  # A -> B
    await migrate("bc", b, c)  # B -> C: the sources carry ab's marker
    await migrate("ba", b, a)  # B -> A: a return onto the originals
    # A re-layout of what a migration wrote, inside its bucket.
    await migrate("relayout", c, c, target_extra={"prefix": "v2/"})

    for obj in originals:
        assert await _metadata(backend_client, b, obj.key) == {
            **obj.metadata,
            "objmig-migration": "test/ab",
        }
        assert await _metadata(backend_client, c, obj.key) == {
            **obj.metadata,
            "objmig-migration": "test/bc",
        }
        assert await _metadata(backend_client, c, f"v2/{obj.key}") == {
            **obj.metadata,
            "objmig-migration": "test/relayout",
        }
    on_a = await keys_of(backend_client, a)
    assert {k: on_a[k] for k in ("doc.txt", "big")} == {o.key: o.etag for o in originals}


async def test_tags_the_target_did_not_keep_fail_verification_naming_the_tag(
    ledger: Ledger, s3_seed: S3Seeder, s3_proxy: S3FaultProxy, proxy_endpoint: Endpoint
) -> None:
    source = await s3_seed.bucket()
    target = await s3_seed.bucket()
    await s3_seed.put_object(source, "tagged", 2 * KiB, tags={"team": "blue"})
    await s3_seed.put_object(source, "plain", 2 * KiB)
    # A store that takes tags and keeps none (as Garage did): its GetObjectTagging is empty.
    s3_proxy.add_rule(
        Answer(200, b"<Tagging><TagSet></TagSet></Tagging>"),
        method="GET",
        bucket=target,
        query={"tagging": None},
    )

    result = await run(ledger, migration(proxy_endpoint, source, target), proxy_endpoint)

    rows = await rows_of(ledger)
    assert rows["plain"].state is ObjectState.VERIFIED
    assert rows["tagged"].state is ObjectState.FAILED
    assert rows["tagged"].error_code == "TagsMismatch"
    assert "tag 'team': expected 'blue', found nothing" in (rows["tagged"].last_error or "")
    assert result.outcome == "awaiting-cutover"
    # Cheap: only the tagged object's tags were read, on either side.
    tag_reads = {(r.bucket, r.key) for r in s3_proxy.seen("GET") if "tagging" in r.query}
    assert tag_reads <= {(source, "tagged"), (target, "tagged")}


@pytest.mark.parametrize("match", ["Equivalent", "Exact"])
async def test_a_content_type_the_store_normalised_is_accepted_unless_exact_is_asked_for(
    ledger: Ledger,
    s3_seed: S3Seeder,
    s3_proxy: S3FaultProxy,
    proxy_endpoint: Endpoint,
    match: str,
) -> None:
    source = await s3_seed.bucket()
    target = await s3_seed.bucket()
    await s3_seed.put_object(source, "page", 1 * KiB, ContentType="text/plain; charset=utf-8")
    s3_proxy.add_rule(
        RewriteHeaders({"Content-Type": "text/plain;charset=UTF-8"}), method="HEAD", bucket=target
    )
    resource = migration(proxy_endpoint, source, target, verify={"contentType": match})

    await run(ledger, resource, proxy_endpoint)

    row = (await rows_of(ledger))["page"]
    if match == "Equivalent":
        assert row.state is ObjectState.VERIFIED
    else:
        assert (row.state, row.error_code) == (ObjectState.FAILED, "MetadataMismatch")
        assert row.last_error is not None
        assert (
            "Content-Type: expected 'text/plain; charset=utf-8', "
            "found 'text/plain;charset=UTF-8'" in row.last_error
        )
