"""The request diet against real S3 servers (moto and MinIO): a single-part object that
its listing describes is copied at the request floor (server-side: one CopyObject; streamed:
one GET and one PUT), pinned to the listed ETag, with metadata, content headers and tags
carried by the copy itself; a source changed after the listing fails the copy and leaves
nothing; a copy written again to carry objmig's mark leaves no extra version behind. Where
the one CopyObject cannot stand on the listing's word (a store without copy-source
conditions, a directory marker, tags kept on a store without tags) the source is HEADed
first."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Mapping

import pytest
import pytest_asyncio

from objmig.storage import CopyOptions, SourceObject, TargetObject, classify, copy_object
from objmig.storage.errors import SourceChangedError
from objmig.storage.features import Aspect
from objmig.storage.s3http import S3HttpClient, open_http_client
from objmig.storage.types import MIGRATION_METADATA_KEY, ObjectInfo
from tests.fixtures.s3 import S3Backend, S3Seeder
from tests.support.s3proxy import Deny, Fail, S3FaultProxy

PATHS = [pytest.param(True, id="server-side"), pytest.param(False, id="streamed")]

ATTRIBUTES = {
    "metadata": {"storage-version": "3", "owner": "team-a"},
    "tags": {"project": "objmig"},
    "ContentType": "application/x-objmig",
    "CacheControl": "max-age=60",
}


@pytest_asyncio.fixture
async def proxied_http(
    s3_backend: S3Backend, backend_proxy: S3FaultProxy
) -> AsyncIterator[S3HttpClient]:
    """objmig's client on the backend through the counting proxy."""
    endpoint = dataclasses.replace(s3_backend.endpoint, url=backend_proxy.endpoint_url)
    async with open_http_client(endpoint, max_connections=8) as client:
        yield client


async def listed(client: S3HttpClient, bucket: str, key: str) -> ObjectInfo:
    """The object as the scan would see it: from a real listing."""
    async for info in client.list_objects(bucket, key):
        if info.key == key:
            return info
    raise AssertionError(f"{key} is not listed")


def as_scanned(bucket: str, info: ObjectInfo) -> SourceObject:
    return SourceObject(
        bucket,
        info.key,
        size=info.size,
        etag=info.etag,
        last_modified=info.last_modified,
        storage_class=info.storage_class,
    )


async def past_the_second_of(client: S3HttpClient, seeder: S3Seeder, info: ObjectInfo) -> None:
    """Wait until the server's clock has left the second `info` was written in (a copy in
    that second is written twice, to carry objmig's mark; see `route.copy_object`)."""
    probe = await seeder.bucket()
    async with asyncio.timeout(30):
        while True:
            await seeder.put_object(probe, "clock", b"")
            now = (await listed(client, probe, "clock")).last_modified
            if int(now.timestamp()) > int(info.last_modified.timestamp()):
                return


def lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


@pytest.mark.parametrize("server_side", PATHS)
async def test_a_listed_single_part_object_is_copied_at_the_request_floor(
    backend_http: S3HttpClient,
    backend_client,
    backend_seed: S3Seeder,
    backend_proxy: S3FaultProxy,
    proxied_http: S3HttpClient,
    server_side: bool,
) -> None:
    src, dst = await backend_seed.bucket(), await backend_seed.bucket()
    obj = await backend_seed.put_object(src, "k", 1234, **ATTRIBUTES)
    info = await listed(backend_http, src, "k")
    await past_the_second_of(backend_http, backend_seed, info)

    result = await copy_object(
        proxied_http,
        proxied_http,
        as_scanned(src, info),
        TargetObject(dst, "k"),
        CopyOptions(server_side=server_side),
    )

    requests = backend_proxy.seen()
    if server_side:
        # One CopyObject, pinned to the listed ETag; the store copies metadata and tags.
        assert [(r.method, r.bucket) for r in requests] == [("PUT", dst)]
        headers = lower(requests[0].headers)
        assert headers["x-amz-copy-source-if-match"] == f'"{obj.etag}"'
        assert headers["x-amz-metadata-directive"] == "COPY"
        assert headers["x-amz-tagging-directive"] == "COPY"
    else:
        # One GET pinned to the listed ETag brings every header and the tag count; the
        # tags themselves take one more read (an object without tags: GET, PUT).
        assert [(r.method, r.bucket, "tagging" in r.query) for r in requests] == [
            ("GET", src, False),
            ("GET", src, True),
            ("PUT", dst, False),
        ]
        assert lower(requests[0].headers)["if-match"].strip('"') == obj.etag
    # The write's answer is the proof: the store's ETag of what it stored.
    assert result.etag == obj.etag
    assert result.etag_matches_source is True
    head = await backend_http.head(dst, "k")
    assert head.metadata == ATTRIBUTES["metadata"]
    assert head.content.content_type == "application/x-objmig"
    assert head.content.cache_control == "max-age=60"
    tags = await backend_client.get_object_tagging(Bucket=dst, Key="k")
    assert {t["Key"]: t["Value"] for t in tags["TagSet"]} == ATTRIBUTES["tags"]


@pytest.mark.parametrize("server_side", PATHS)
async def test_a_source_rewritten_after_its_listing_fails_the_copy_and_leaves_nothing(
    s3_backend: S3Backend,
    backend_http: S3HttpClient,
    backend_seed: S3Seeder,
    backend_proxy: S3FaultProxy,
    proxied_http: S3HttpClient,
    server_side: bool,
) -> None:
    src, dst = await backend_seed.bucket(), await backend_seed.bucket()
    await backend_seed.put_object(src, "k", 1234, seed="old")
    info = await listed(backend_http, src, "k")
    await backend_seed.put_object(src, "k", 1234, seed="new")
    scanned, options = as_scanned(src, info), CopyOptions(server_side=server_side)
    if server_side and s3_backend.name == "moto":
        # moto ignores x-amz-copy-source-if-match and copies what is there now: the
        # write's ETag then disagrees with the listed one, and no proof stands (the
        # pipeline HEADs the source and fails the object as changed; test_engine).
        await past_the_second_of(backend_http, backend_seed, info)
        target = TargetObject(dst, "k")
        result = await copy_object(proxied_http, proxied_http, scanned, target, options)
        assert result.etag != info.etag
        assert result.etag_matches_source is False
        return

    with pytest.raises(SourceChangedError) as failure:
        await copy_object(
            proxied_http,
            proxied_http,
            scanned,
            TargetObject(dst, "k"),
            options,
        )

    assert classify(failure.value).kind == "precondition"
    # Refused by the condition on the read itself, not found out by a HEAD first.
    assert not backend_proxy.seen("HEAD")
    assert [i async for i in backend_http.list_objects(dst)] == []


@pytest.mark.parametrize("delete_refused", [False, True], ids=["deleted", "refused"])
async def test_a_copy_made_again_for_its_mark_leaves_one_version(
    backend_http: S3HttpClient,
    backend_client,
    backend_seed: S3Seeder,
    backend_proxy: S3FaultProxy,
    proxied_http: S3HttpClient,
    delete_refused: bool,
) -> None:
    src = await backend_seed.bucket()
    dst = await backend_seed.bucket(versioned=True)
    options = CopyOptions(server_side=True, migration_tag="m-1")
    if delete_refused:
        # Object Lock, or no s3:DeleteObjectVersion: the marked copy still stands.
        backend_proxy.add_rule(Deny(), method="DELETE", bucket=dst)
    versions_left = 2 if delete_refused else 1
    # A copy lands in its source's second when made right after the source was written;
    # try fresh keys until one did (the proxy then sees two CopyObjects for it).
    remade = None
    for attempt in range(20):
        key = f"k{attempt}"
        await backend_seed.put_object(src, key, 100)
        info = await listed(backend_http, src, key)
        await copy_object(
            proxied_http, proxied_http, as_scanned(src, info), TargetObject(dst, key), options
        )
        versions = await backend_client.list_object_versions(Bucket=dst, Prefix=key)
        if len([r for r in backend_proxy.seen("PUT", key=key) if r.bucket == dst]) == 2:
            assert len(versions["Versions"]) == versions_left, key
            remade = key
            break
        assert len(versions["Versions"]) == 1, key
    assert remade is not None, "no copy landed in its source's second"
    head = await backend_http.head(dst, remade)
    assert head.metadata[MIGRATION_METADATA_KEY] == "m-1"


@pytest.mark.parametrize(
    "lacks", [Aspect.COPY_CONDITIONALS, Aspect.TAGS], ids=["no-conditions", "no-tags"]
)
async def test_a_store_lacking_what_the_one_copyobject_needs_is_looked_at_first(
    backend_http: S3HttpClient,
    backend_seed: S3Seeder,
    backend_proxy: S3FaultProxy,
    proxied_http: S3HttpClient,
    lacks: Aspect,
) -> None:
    """Without `x-amz-copy-source-if-match` nothing would pin the listed object; without
    tags the listing cannot tell whether the object has any to lose. A HEAD first."""
    src, dst = await backend_seed.bucket(), await backend_seed.bucket()
    obj = await backend_seed.put_object(src, "k", 1234)
    info = await listed(backend_http, src, "k")
    await past_the_second_of(backend_http, backend_seed, info)
    proxied_http.features.learn_missing(lacks, "as the test says")

    result = await copy_object(
        proxied_http,
        proxied_http,
        as_scanned(src, info),
        TargetObject(dst, "k"),
        CopyOptions(server_side=True),
    )

    requests = backend_proxy.seen()
    assert [(r.method, r.bucket) for r in requests] == [("HEAD", src), ("PUT", dst)]
    headers = lower(requests[1].headers)
    if lacks is Aspect.COPY_CONDITIONALS:
        assert "x-amz-copy-source-if-match" not in headers
    else:
        assert "x-amz-tagging-directive" not in headers
    assert result.etag == obj.etag


async def test_a_copy_that_lost_its_source_condition_is_made_again_after_a_head(
    backend_http: S3HttpClient,
    backend_seed: S3Seeder,
    backend_proxy: S3FaultProxy,
    proxied_http: S3HttpClient,
) -> None:
    """The store refuses the condition (NotImplemented) and takes the copy without it: that
    copy stood on nothing but the listing, so it is made again the way such a store is
    copied, after a HEAD that checks the source against the listing."""
    src, dst = await backend_seed.bucket(), await backend_seed.bucket()
    obj = await backend_seed.put_object(src, "k", 1234)
    info = await listed(backend_http, src, "k")
    await past_the_second_of(backend_http, backend_seed, info)
    backend_proxy.add_rule(
        Fail(501, "NotImplemented", "A header you provided implies functionality that is not"),
        header="x-amz-copy-source-if-match",
    )

    result = await copy_object(
        proxied_http,
        proxied_http,
        as_scanned(src, info),
        TargetObject(dst, "k"),
        CopyOptions(server_side=True, migration_tag="m-1"),
    )

    assert proxied_http.features.lacks(Aspect.COPY_CONDITIONALS)
    requests = [(r.method, r.bucket) for r in backend_proxy.seen()]
    # Refused with the condition, taken without it, the source HEADed, copied again.
    assert requests == [("PUT", dst), ("PUT", dst), ("HEAD", src), ("PUT", dst)]
    assert result.etag == obj.etag
    head = await backend_http.head(dst, "k")
    assert head.metadata[MIGRATION_METADATA_KEY] == "m-1"


async def test_a_directory_marker_is_looked_at_before_its_server_side_copy(
    backend_http: S3HttpClient,
    backend_seed: S3Seeder,
    backend_proxy: S3FaultProxy,
    proxied_http: S3HttpClient,
) -> None:
    """Some stores refuse CopyObject of a directory marker (the HEAD path writes it by
    PutObject there), so a marker never takes the one-CopyObject path."""
    src, dst = await backend_seed.bucket(), await backend_seed.bucket()
    await backend_seed.put_object(src, "dir/", b"")
    info = await listed(backend_http, src, "dir/")

    await copy_object(
        proxied_http,
        proxied_http,
        as_scanned(src, info),
        TargetObject(dst, "dir/"),
        CopyOptions(server_side=True),
    )

    requests = [(r.method, r.bucket) for r in backend_proxy.seen()]
    assert requests[0] == ("HEAD", src)
    assert (await backend_http.head(dst, "dir/")).size == 0
