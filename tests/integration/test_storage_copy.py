"""copy_object against real S3 servers (moto, and MinIO where built): both paths keep part
boundaries and ETags, carry metadata, content headers and tags, apply storage class and
encryption, refuse changed or archived sources, and never leave an upload behind."""

from __future__ import annotations

import asyncio
import os

import pytest

from objmig.storage import (
    CopyOptions,
    Encryption,
    ObjectArchivedError,
    SourceObject,
    TargetObject,
    classify,
    copy_object,
    list_multipart_uploads,
    object_sha256,
    part_layout,
)
from objmig.storage.errors import S3ResponseError, SourceChangedError
from objmig.storage.parts import resolve_part_layout
from objmig.storage.s3http import open_http_client
from objmig.storage.sdk import open_client
from objmig.storage.streaming import ReadAhead
from objmig.storage.types import MIGRATION_METADATA_KEY
from tests.fixtures.s3 import S3Backend, S3Seeder
from tests.support.s3proxy import Deny, Fail, Hold, S3FaultProxy

PATHS = [pytest.param(True, id="server-side"), pytest.param(False, id="streamed")]


def _parts(backend: S3Backend) -> list[int]:
    """Three parts, the last one shorter and odd-sized."""
    m = max(backend.min_part_size, 64 * 1024)
    return [m, m, m // 2 + 7]


async def _uploads(client, bucket: str) -> list:
    return [u async for u in list_multipart_uploads(client, bucket)]


@pytest.mark.parametrize("server_side", PATHS)
async def test_multipart_copy_keeps_part_layout_and_etag(
    backend_client,
    backend_http,
    backend_seed: S3Seeder,
    s3_backend: S3Backend,
    server_side: bool,
) -> None:
    src, dst = await backend_seed.bucket(), await backend_seed.bucket()
    obj = await backend_seed.put_multipart(src, "dir/big object+1", _parts(s3_backend))

    result = await copy_object(
        backend_http,
        backend_http,
        SourceObject(src, obj.key, size=obj.size, etag=obj.etag),
        TargetObject(dst, "copied/big object+1"),
        CopyOptions(server_side=server_side, part_concurrency=3),
    )

    assert result.etag == obj.etag
    assert result.etag_matches_source is True
    assert result.parts == 3
    assert result.server_side is server_side
    assert await part_layout(backend_http, dst, "copied/big object+1") == list(obj.part_sizes)
    assert (await object_sha256(backend_http, dst, "copied/big object+1"))[0] == obj.sha256
    assert await _uploads(backend_client, dst) == []


@pytest.mark.parametrize("server_side", PATHS)
async def test_single_part_copy_keeps_etag_and_bytes(
    backend_http, backend_seed: S3Seeder, server_side: bool
) -> None:
    src, dst = await backend_seed.bucket(), await backend_seed.bucket()
    obj = await backend_seed.put_object(src, "one", 300_001)

    result = await copy_object(
        backend_http,
        backend_http,
        SourceObject(src, "one", size=obj.size, etag=obj.etag),
        TargetObject(dst, "one"),
        CopyOptions(server_side=server_side, compute_sha256=True),
    )

    assert result.etag == obj.etag
    assert result.parts == 1
    assert result.sha256 == (None if server_side else obj.sha256)
    assert await backend_seed.get_bytes(dst, "one") == obj.data


@pytest.mark.parametrize("server_side", PATHS)
async def test_one_part_multipart_object_keeps_its_dash_one_etag(
    backend_http, backend_seed: S3Seeder, server_side: bool
) -> None:
    src, dst = await backend_seed.bucket(), await backend_seed.bucket()
    obj = await backend_seed.put_multipart(src, "m1", [70_000])
    assert obj.etag.endswith("-1")

    result = await copy_object(
        backend_http,
        backend_http,
        SourceObject(src, "m1", etag=obj.etag),
        TargetObject(dst, "m1"),
        CopyOptions(server_side=server_side),
    )

    assert result.etag == obj.etag


@pytest.mark.parametrize("server_side", PATHS)
async def test_empty_object_copies(backend_http, backend_seed: S3Seeder, server_side: bool):
    src, dst = await backend_seed.bucket(), await backend_seed.bucket()
    obj = await backend_seed.put_object(src, "empty", b"")

    result = await copy_object(
        backend_http,
        backend_http,
        SourceObject(src, "empty", etag=obj.etag, size=0),
        TargetObject(dst, "empty"),
        CopyOptions(server_side=server_side, compute_sha256=True),
    )

    assert result.etag == obj.etag
    assert result.bytes == 0
    assert (await backend_http.head(dst, "empty")).size == 0


async def test_server_side_copy_of_many_small_parts_keeps_etag(s3_http, s3_seed: S3Seeder) -> None:
    # moto's minimum part size is lowered in the test server, so 150 parts stay small.
    src, dst = await s3_seed.bucket(), await s3_seed.bucket()
    sizes = [2048] * 149 + [999]
    obj = await s3_seed.put_multipart(src, "many", sizes)

    result = await copy_object(
        s3_http,
        s3_http,
        SourceObject(src, "many", etag=obj.etag, size=obj.size),
        TargetObject(dst, "many"),
        CopyOptions(server_side=True, part_concurrency=8),
    )

    assert result.etag == obj.etag
    assert result.etag.endswith("-150")
    assert await part_layout(s3_http, dst, "many") == sizes
    assert await s3_seed.get_bytes(dst, "many") == obj.data


@pytest.mark.parametrize("server_side", PATHS)
@pytest.mark.parametrize("multipart", [False, True], ids=["single", "multipart"])
async def test_metadata_content_headers_and_tags_are_preserved(
    backend_client,
    backend_http,
    backend_seed: S3Seeder,
    s3_backend: S3Backend,
    server_side: bool,
    multipart: bool,
) -> None:
    src, dst = await backend_seed.bucket(), await backend_seed.bucket()
    attributes = {
        "metadata": {"Storage-Version": "3", "owner": "team-a"},
        "tags": {"project": "objmig", "tier": "gold"},
        "ContentType": "application/x-objmig",
        "CacheControl": "max-age=60",
        "ContentDisposition": 'attachment; filename="x.bin"',
        "ContentEncoding": "identity",
        "ContentLanguage": "de-CH",
    }
    if multipart:
        obj = await backend_seed.put_multipart(src, "k", _parts(s3_backend), **attributes)
    else:
        obj = await backend_seed.put_object(src, "k", 1234, **attributes)

    await copy_object(
        backend_http,
        backend_http,
        SourceObject(src, "k", etag=obj.etag),
        TargetObject(dst, "k"),
        CopyOptions(server_side=server_side),
    )

    head = await backend_http.head(dst, "k")
    assert head.metadata == {"storage-version": "3", "owner": "team-a"}
    assert head.content.content_type == "application/x-objmig"
    assert head.content.cache_control == "max-age=60"
    assert head.content.content_disposition == 'attachment; filename="x.bin"'
    assert head.content.content_encoding == "identity"
    assert head.content.content_language == "de-CH"
    tags = await backend_client.get_object_tagging(Bucket=dst, Key="k")
    assert {t["Key"]: t["Value"] for t in tags["TagSet"]} == {"project": "objmig", "tier": "gold"}


@pytest.mark.parametrize("server_side", PATHS)
async def test_metadata_dropped_and_tags_left_alone_when_not_preserved_but_marker_added(
    backend_client, backend_http, backend_seed: S3Seeder, server_side: bool
) -> None:
    src, dst = await backend_seed.bucket(), await backend_seed.bucket()
    obj = await backend_seed.put_object(
        src, "k", 10, metadata={"a": "1"}, tags={"t": "1"}, ContentType="text/plain"
    )

    await copy_object(
        backend_http,
        backend_http,
        SourceObject(src, "k", etag=obj.etag),
        TargetObject(dst, "k"),
        CopyOptions(
            server_side=server_side,
            preserve_metadata=False,
            preserve_tags=False,
            migration_tag="mig-1",
        ),
    )

    head = await backend_http.head(dst, "k")
    assert head.metadata == {MIGRATION_METADATA_KEY: "mig-1"}
    # Content headers belong to the object's representation and always travel.
    assert head.content.content_type == "text/plain"
    # Without preserveTags no tagging request or header goes out (stores without tags
    # refuse them): a streamed copy carries none, CopyObject does what S3 does by default.
    tags = await backend_client.get_object_tagging(Bucket=dst, Key="k")
    assert tags["TagSet"] == ([{"Key": "t", "Value": "1"}] if server_side else [])


@pytest.mark.parametrize("server_side", PATHS)
@pytest.mark.parametrize("multipart", [False, True], ids=["single", "multipart"])
async def test_storage_class_is_applied(
    backend_http,
    backend_seed: S3Seeder,
    s3_backend: S3Backend,
    server_side: bool,
    multipart: bool,
) -> None:
    src, dst = await backend_seed.bucket(), await backend_seed.bucket()
    if multipart:
        obj = await backend_seed.put_multipart(src, "k", _parts(s3_backend))
    else:
        obj = await backend_seed.put_object(src, "k", 100)

    result = await copy_object(
        backend_http,
        backend_http,
        SourceObject(src, "k", etag=obj.etag),
        TargetObject(dst, "k"),
        CopyOptions(server_side=server_side, storage_class=s3_backend.other_storage_class),
    )

    head = await backend_http.head(dst, "k")
    assert head.storage_class == s3_backend.other_storage_class
    assert result.etag == obj.etag


@pytest.mark.parametrize("server_side", PATHS)
@pytest.mark.parametrize("multipart", [False, True], ids=["single", "multipart"])
async def test_sse_s3_is_applied(
    backend_http,
    backend_seed: S3Seeder,
    s3_backend: S3Backend,
    server_side: bool,
    multipart: bool,
) -> None:
    src, dst = await backend_seed.bucket(), await backend_seed.bucket()
    if multipart:
        obj = await backend_seed.put_multipart(src, "k", _parts(s3_backend))
    else:
        obj = await backend_seed.put_object(src, "k", 100)

    await copy_object(
        backend_http,
        backend_http,
        SourceObject(src, "k", etag=obj.etag),
        TargetObject(dst, "k"),
        CopyOptions(server_side=server_side, encryption=Encryption("SSE-S3")),
    )

    head = await backend_http.head(dst, "k")
    assert head.encryption.mode == "SSE-S3"
    assert (await object_sha256(backend_http, dst, "k"))[0] == obj.sha256


async def test_sse_c_headers_are_sent_on_every_target_request(
    s3_seed: S3Seeder, s3_proxy: S3FaultProxy, proxy_endpoint
) -> None:
    # moto ignores SSE-C (it stores plaintext) and MinIO refuses it without TLS, so what
    # we can prove is that every request writing the target carries the customer key.
    src, dst = await s3_seed.bucket(), await s3_seed.bucket()
    obj = await s3_seed.put_multipart(src, "k", [64 * 1024, 1000])
    key = os.urandom(32)

    async with open_http_client(proxy_endpoint) as client:
        await copy_object(
            client,
            client,
            SourceObject(src, "k", etag=obj.etag),
            TargetObject(dst, "k"),
            CopyOptions(encryption=Encryption("SSE-C", sse_c_key=key)),
        )

    writes = [r for r in s3_proxy.seen() if r.bucket == dst and r.method in ("PUT", "POST")]
    assert len(writes) == 4  # create, two parts, complete
    for request in writes:
        headers = {k.lower(): v for k, v in request.headers.items()}
        assert headers["x-amz-server-side-encryption-customer-algorithm"] == "AES256"
        assert "x-amz-server-side-encryption-customer-key-md5" in headers


@pytest.mark.parametrize(
    ("server_side", "read_ahead"),
    [
        pytest.param(True, None, id="server-side"),
        pytest.param(False, None, id="streamed"),
        pytest.param(False, ReadAhead(1 << 20), id="streamed-read-ahead"),
    ],
)
async def test_failed_multipart_copy_aborts_its_upload(
    s3_client,
    s3_seed: S3Seeder,
    s3_proxy: S3FaultProxy,
    proxy_endpoint,
    server_side: bool,
    read_ahead: ReadAhead | None,
) -> None:
    src, dst = await s3_seed.bucket(), await s3_seed.bucket()
    obj = await s3_seed.put_multipart(src, "k", [64 * 1024, 64 * 1024, 5000])
    s3_proxy.add_rule(Deny(), method="PUT", bucket=dst, query={"partNumber": "2"})
    started: list[str] = []

    async def record(upload_id: str) -> None:
        started.append(upload_id)

    async with open_http_client(proxy_endpoint) as client:
        with pytest.raises(S3ResponseError) as failure:
            await copy_object(
                client,
                client,
                SourceObject(src, "k", etag=obj.etag),
                TargetObject(dst, "k"),
                CopyOptions(
                    server_side=server_side,
                    on_upload_started=record,
                    part_concurrency=3,
                    read_ahead=read_ahead,
                ),
            )
    assert (failure.value.status, failure.value.code) == (403, "AccessDenied")
    assert failure.value.operation == ("UploadPartCopy" if server_side else "UploadPart")
    error = classify(failure.value)
    assert error.code == "AccessDenied"
    assert not error.is_config_error  # fails the object; the budget decides the rest
    assert len(started) == 1
    assert await _uploads(s3_client, dst) == []
    assert s3_proxy.seen("DELETE", key="k"), "the upload was aborted"
    if read_ahead is not None:
        assert read_ahead.peak > 0
        assert read_ahead.held == 0


async def test_cancelled_copy_aborts_its_upload_and_reraises(
    s3_client, s3_seed: S3Seeder, s3_proxy: S3FaultProxy, proxy_endpoint
) -> None:
    src, dst = await s3_seed.bucket(), await s3_seed.bucket()
    obj = await s3_seed.put_multipart(src, "k", [64 * 1024, 64 * 1024, 5000])
    # Part 2's upload is held at the proxy: the copy is mid-way, with parts read ahead,
    # when it is cancelled.
    part_two = Hold()
    s3_proxy.add_rule(part_two, method="PUT", bucket=dst, query={"partNumber": "2"})
    read_ahead = ReadAhead(1 << 20)

    async with open_http_client(proxy_endpoint) as client:
        task = asyncio.create_task(
            copy_object(
                client,
                client,
                SourceObject(src, "k", etag=obj.etag),
                TargetObject(dst, "k"),
                CopyOptions(part_concurrency=3, read_ahead=read_ahead),
            )
        )
        await part_two.arrived()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert await _uploads(s3_client, dst) == []
    assert read_ahead.peak > 0
    assert read_ahead.held == 0, "parts read ahead were given back on cancellation"


@pytest.mark.parametrize("server_side", PATHS)
async def test_copy_refuses_a_source_changed_since_the_scan(
    s3_client, s3_http, s3_seed: S3Seeder, server_side: bool
) -> None:
    src, dst = await s3_seed.bucket(), await s3_seed.bucket()
    old = await s3_seed.put_object(src, "k", b"old")
    await s3_seed.put_object(src, "k", b"new!")

    with pytest.raises(SourceChangedError) as failure:
        await copy_object(
            s3_http,
            s3_http,
            SourceObject(src, "k", etag=old.etag, size=old.size),
            TargetObject(dst, "k"),
            CopyOptions(server_side=server_side),
        )
    assert classify(failure.value).kind == "precondition"
    assert [o async for o in _keys(s3_client, dst)] == []


async def _keys(client, bucket):
    response = await client.list_objects_v2(Bucket=bucket)
    for item in response.get("Contents", []):
        yield item["Key"]


@pytest.mark.parametrize("server_side", PATHS)
async def test_copy_of_a_pinned_old_version_copies_that_version(
    backend_http, backend_seed: S3Seeder, server_side: bool
) -> None:
    src, dst = await backend_seed.bucket(versioned=True), await backend_seed.bucket()
    old = await backend_seed.put_object(src, "k", b"version one")
    await backend_seed.put_object(src, "k", b"version two, longer")
    assert old.version_id

    result = await copy_object(
        backend_http,
        backend_http,
        SourceObject(src, "k", version_id=old.version_id, etag=old.etag, size=old.size),
        TargetObject(dst, "k"),
        CopyOptions(server_side=server_side),
    )

    assert result.source_version_id == old.version_id
    assert await backend_seed.get_bytes(dst, "k") == b"version one"


@pytest.mark.parametrize("server_side", PATHS)
async def test_archived_source_is_refused_until_restored(
    s3_http, s3_seed: S3Seeder, server_side: bool
) -> None:
    src, dst = await s3_seed.bucket(), await s3_seed.bucket()
    obj = await s3_seed.put_object(src, "cold", 100, storage_class="GLACIER")

    with pytest.raises(ObjectArchivedError) as failure:
        await copy_object(
            s3_http,
            s3_http,
            SourceObject(src, "cold", etag=obj.etag),
            TargetObject(dst, "cold"),
            CopyOptions(server_side=server_side),
        )
    assert classify(failure.value).kind == "invalid_state"


async def test_streamed_copy_between_two_stores(s3_http, s3_seed: S3Seeder, minio_server) -> None:
    """moto -> MinIO: different stores, different credentials: the streamed path."""
    src = await s3_seed.bucket()
    obj = await s3_seed.put_multipart(
        src, "cross", [5 * 1024 * 1024, 5 * 1024 * 1024, 777], metadata={"k": "v"}, tags={"a": "b"}
    )
    async with (
        open_client(minio_server.endpoint()) as minio,
        open_http_client(minio_server.endpoint()) as minio_http,
    ):
        await minio.create_bucket(Bucket="cross-target")
        try:
            result = await copy_object(
                s3_http,
                minio_http,
                SourceObject(src, "cross", etag=obj.etag),
                TargetObject("cross-target", "cross"),
                CopyOptions(compute_sha256=True, part_concurrency=2),
            )
            head = await minio_http.head("cross-target", "cross")
            tags = await minio_http.get_tags("cross-target", "cross")
        finally:
            await minio.delete_object(Bucket="cross-target", Key="cross")
            await minio.delete_bucket(Bucket="cross-target")
    assert result.etag == obj.etag
    assert result.sha256 == obj.sha256
    assert head.metadata == {"k": "v"}
    assert tags == {"a": "b"}


async def test_progress_is_reported_for_every_byte(s3_http, s3_seed: S3Seeder) -> None:
    src, dst = await s3_seed.bucket(), await s3_seed.bucket()
    obj = await s3_seed.put_multipart(src, "k", [64 * 1024, 64 * 1024, 10])
    for server_side in (True, False):
        moved: list[int] = []
        await copy_object(
            s3_http,
            s3_http,
            SourceObject(src, "k", etag=obj.etag),
            TargetObject(dst, f"k{server_side}"),
            CopyOptions(server_side=server_side, on_progress=moved.append),
        )
        assert sum(moved) == obj.size


@pytest.mark.parametrize("server_side", PATHS)
async def test_single_part_source_above_the_put_limit_is_split_into_parts(
    s3_http, s3_seed: S3Seeder, server_side: bool
) -> None:
    # The 5 GiB limit scaled down: the same code path, without writing 5 GiB.
    src, dst = await s3_seed.bucket(), await s3_seed.bucket()
    obj = await s3_seed.put_object(src, "big-single", 10_000)

    result = await copy_object(
        s3_http,
        s3_http,
        SourceObject(src, "big-single", etag=obj.etag),
        TargetObject(dst, "big-single"),
        CopyOptions(
            server_side=server_side,
            max_single_part_size=4096,
            split_part_size=4096,
            compute_sha256=True,
        ),
    )

    assert result.parts == 3
    assert result.etag.endswith("-3")
    assert result.etag_matches_source is None  # a new layout: ETags are not comparable
    assert await part_layout(s3_http, dst, "big-single") == [4096, 4096, 1808]
    assert await s3_seed.get_bytes(dst, "big-single") == obj.data


async def test_store_without_part_heads_gets_a_guessed_layout_and_no_etag_claim(
    s3_seed: S3Seeder, s3_proxy: S3FaultProxy, proxy_endpoint
) -> None:
    src, dst = await s3_seed.bucket(), await s3_seed.bucket()
    obj = await s3_seed.put_multipart(src, "k", [3000, 3000, 100])
    s3_proxy.add_rule(
        Fail(400, "InvalidArgument", "partNumber unsupported"),
        method="HEAD",
        query={"partNumber": None},
    )
    # Nor does it list part sizes in GetObjectAttributes (as AWS for objects uploaded
    # without additional checksums).
    s3_proxy.add_rule(
        Fail(501, "NotImplemented", "attributes unsupported"),
        method="GET",
        query={"attributes": None},
    )

    async with open_http_client(proxy_endpoint) as client:
        layout = await resolve_part_layout(client, src, "k")
        result = await copy_object(
            client,
            client,
            SourceObject(src, "k", etag=obj.etag),
            TargetObject(dst, "k"),
            CopyOptions(compute_sha256=True),
        )

    assert layout.source == "guess"
    assert sum(layout.sizes) == obj.size
    assert len(layout.sizes) == 3
    assert result.etag_matches_source is None
    assert result.sha256 == obj.sha256


async def test_transient_errors_on_part_heads_are_not_mistaken_for_missing_support(
    s3_seed: S3Seeder, s3_proxy: S3FaultProxy, proxy_endpoint
) -> None:
    src = await s3_seed.bucket()
    await s3_seed.put_multipart(src, "k", [3000, 3000, 100])
    s3_proxy.add_rule(Fail(503, "SlowDown"), method="HEAD", query={"partNumber": "2"})

    async with open_http_client(proxy_endpoint) as client:
        with pytest.raises(S3ResponseError) as failure:
            await resolve_part_layout(client, src, "k")

    assert (failure.value.status, failure.value.code) == (503, "503")  # HEAD: no document
    assert classify(failure.value).kind == "retryable"


PART = 64 * 1024


@pytest.mark.parametrize("whole_sha256", [False, True], ids=["etag", "sha256"])
@pytest.mark.parametrize(
    ("limit", "peak"),
    [(None, 0), (PART, PART), (10 * PART, None)],
    ids=["no-read-ahead", "room-for-one-part", "room-for-all"],
)
async def test_streamed_multipart_reads_the_object_with_one_get(
    s3_seed: S3Seeder,
    s3_proxy: S3FaultProxy,
    proxy_endpoint,
    whole_sha256: bool,
    limit: int | None,
    peak: int | None,
) -> None:
    src, dst = await s3_seed.bucket(), await s3_seed.bucket()
    sizes = [PART] * 6 + [5000]
    obj = await s3_seed.put_multipart(src, "k", sizes)
    read_ahead = ReadAhead(limit) if limit is not None else None

    async with open_http_client(proxy_endpoint) as client:
        result = await copy_object(
            client,
            client,
            SourceObject(src, "k", size=obj.size, etag=obj.etag),
            TargetObject(dst, "k"),
            CopyOptions(part_concurrency=3, compute_sha256=whole_sha256, read_ahead=read_ahead),
        )
        layout = await part_layout(client, dst, "k")

    assert result.etag == obj.etag
    assert layout == sizes
    assert result.sha256 == (obj.sha256 if whole_sha256 else None)
    ranges = [
        {k.lower(): v for k, v in r.headers.items()}["range"]
        for r in s3_proxy.seen("GET", key="k")
        if r.bucket == src and "tagging" not in r.query
    ]
    assert ranges == [f"bytes=0-{obj.size - 1}"]
    if read_ahead is not None:
        assert read_ahead.held == 0, "every part read ahead was given back"
        if peak is not None:
            # The first part always finds the budget free; a budget of one part never
            # holds two.
            assert read_ahead.peak == peak
        else:
            # Parts upload while the next are read: up to three parts (the part
            # concurrency) held at once, never more.
            assert PART <= read_ahead.peak <= 3 * PART
