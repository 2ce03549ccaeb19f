"""objmig's own S3 client (`storage.s3http`) against real servers (moto and MinIO): HEAD,
GET (ranged, conditional), PUT with metadata, content headers, tags and storage class,
CopyObject, UploadPartCopy and multipart completion; errors as `S3ResponseError`s that
`classify` understands; and the copy paths built on it: create-only writes, the equal-parts
layout and its fallback, and the single-part fast path that never HEADs the source."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from objmig.storage import (
    CopyOptions,
    SourceObject,
    TargetObject,
    classify,
    copy_object,
    list_multipart_uploads,
    list_objects,
    object_sha256,
    part_layout,
)
from objmig.storage.copy import TargetExistsError
from objmig.storage.endpoint import Credentials, Endpoint
from objmig.storage.errors import S3ResponseError, SourceChangedError
from objmig.storage.s3http import S3HttpClient, open_http_client
from objmig.storage.s3wire import content_headers, metadata_headers
from objmig.storage.types import ContentHeaders, multipart_part_count
from tests.fixtures.s3 import S3Backend, S3Seeder, payload
from tests.support.s3proxy import Fail, S3FaultProxy

MiB = 1024 * 1024
PATHS = [pytest.param(True, id="server-side"), pytest.param(False, id="streamed")]


def _parts(backend: S3Backend) -> list[int]:
    m = max(backend.min_part_size, 64 * 1024)
    return [m, m, m // 2 + 7]


async def _read(client: S3HttpClient, bucket: str, key: str, **kwargs: object) -> bytes:
    async with client.get(bucket, key, **kwargs) as got:  # type: ignore[arg-type]
        return await got.body.read()


async def _failure(awaitable: object) -> BaseException:
    try:
        await awaitable  # type: ignore[misc]
    except Exception as exc:
        return exc
    raise AssertionError("expected a failure")


# ------------------------------------------------------------------------- the requests


async def test_put_then_head_and_get_see_everything_that_was_sent(
    backend_http: S3HttpClient, backend_seed: S3Seeder, s3_backend: S3Backend
) -> None:
    bucket = await backend_seed.bucket(versioned=True)
    data = payload(100_000, "put")
    content = ContentHeaders(
        content_type="application/x-objmig",
        cache_control="max-age=60",
        content_disposition='attachment; filename="x.bin"',
        content_encoding="identity",
        content_language="de-CH",
        expires=datetime(2094, 12, 1, 16, tzinfo=UTC),
    )
    headers = {
        **metadata_headers({"Owner": "team-a", "storage-version": "3"}),
        **content_headers(content),
        "x-amz-tagging": "project=objmig&tier=gold%20plus",
        "x-amz-storage-class": s3_backend.other_storage_class,
    }

    written = await backend_http.put(bucket, "dir/a b+ü", data, len(data), headers)
    head = await backend_http.head(bucket, "dir/a b+ü")
    tags = await backend_http.get_tags(bucket, "dir/a b+ü")
    async with backend_http.get(bucket, "dir/a b+ü", if_match=written.etag) as got:
        body = await got.body.read()
        got_head, length = got.head, got.content_length

    assert written.etag == hashlib.md5(data).hexdigest()
    assert written.version_id is not None
    assert (head.etag, head.size, head.version_id) == (written.etag, len(data), written.version_id)
    assert head.metadata == {"owner": "team-a", "storage-version": "3"}
    assert head.content == content
    assert head.storage_class == s3_backend.other_storage_class
    assert head.tag_count == 2
    assert tags == {"project": "objmig", "tier": "gold plus"}
    assert body == data
    assert length == len(data)
    # The GET's headers are a HEAD's: the fast copy path relies on that.
    assert got_head == head


async def test_ranged_get_reports_the_whole_size_and_the_range_length(
    backend_http: S3HttpClient, backend_seed: S3Seeder
) -> None:
    bucket = await backend_seed.bucket()
    obj = await backend_seed.put_object(bucket, "k", 10_000)
    assert obj.data is not None

    async with backend_http.get(bucket, "k", byte_range=(1000, 1999), if_match=obj.etag) as got:
        body = await got.body.read()

    assert body == obj.data[1000:2000]
    assert got.content_length == 1000
    assert got.head.size == 10_000
    assert got.head.etag == obj.etag


async def test_if_match_mismatch_is_a_precondition_failure(
    backend_http: S3HttpClient, backend_seed: S3Seeder
) -> None:
    bucket = await backend_seed.bucket()
    await backend_seed.put_object(bucket, "k", b"now")

    failure = await _failure(_read(backend_http, bucket, "k", if_match="0" * 32))

    assert isinstance(failure, S3ResponseError)
    assert (failure.operation, failure.status) == ("GetObject", 412)
    assert classify(failure).kind == "precondition"


async def test_missing_objects_and_versions_are_not_found(
    backend_http: S3HttpClient, backend_seed: S3Seeder
) -> None:
    bucket = await backend_seed.bucket()

    head = await _failure(backend_http.head(bucket, "nope"))
    get = await _failure(_read(backend_http, bucket, "nope"))

    assert isinstance(head, S3ResponseError)
    assert (head.operation, head.status, head.code) == ("HeadObject", 404, "404")
    assert classify(head).kind == "not_found"
    assert isinstance(get, S3ResponseError)
    assert (get.status, get.code) == (404, "NoSuchKey")
    assert classify(get).kind == "not_found"


@pytest.mark.parametrize("s3_backend", ["minio"], indirect=True)
async def test_bad_credentials_are_config_errors(s3_backend: S3Backend) -> None:
    # moto accepts any signature; MinIO checks them.
    good = s3_backend.endpoint
    assert good.credentials is not None
    for credentials, code in (
        (
            Credentials(good.credentials.access_key_id, "not-the-secret-123"),
            "SignatureDoesNotMatch",
        ),
        (Credentials("AKIAUNKNOWNKEY000000", "another-secret-456"), "InvalidAccessKeyId"),
    ):
        endpoint = Endpoint(url=good.url, credentials=credentials)
        async with open_http_client(endpoint) as client:
            failure = await _failure(_read(client, "any-bucket", "k"))
            put = await _failure(client.put("any-bucket", "k", b"x", 1, {}))
        for error in (failure, put):
            assert isinstance(error, S3ResponseError)
            assert (error.status, error.code) == (403, code)
            problem = classify(error)
            assert problem.is_config_error
            assert credentials.secret_access_key not in problem.message
            assert "AKIAUNKNOWNKEY000000" not in problem.message


async def test_copy_object_copies_metadata_or_replaces_it(
    backend_http: S3HttpClient, backend_seed: S3Seeder, s3_backend: S3Backend
) -> None:
    bucket = await backend_seed.bucket()
    obj = await backend_seed.put_object(
        bucket, "src key+", 5000, metadata={"a": "1"}, tags={"t": "1"}, ContentType="text/plain"
    )

    kept = await backend_http.copy(
        bucket,
        "src key+",
        bucket,
        "kept",
        {"x-amz-metadata-directive": "COPY", "x-amz-copy-source-if-match": f'"{obj.etag}"'},
    )
    replaced = await backend_http.copy(
        bucket,
        "src key+",
        bucket,
        "replaced",
        {
            "x-amz-metadata-directive": "REPLACE",
            "x-amz-tagging-directive": "REPLACE",
            **metadata_headers({"b": "2"}),
            "content-type": "application/json",
        },
    )

    assert kept.etag == replaced.etag == obj.etag
    kept_head = await backend_http.head(bucket, "kept")
    replaced_head = await backend_http.head(bucket, "replaced")
    assert (kept_head.metadata, kept_head.content.content_type) == ({"a": "1"}, "text/plain")
    assert await backend_http.get_tags(bucket, "kept") == {"t": "1"}
    assert replaced_head.metadata == {"b": "2"}
    assert replaced_head.content.content_type == "application/json"
    assert await backend_http.get_tags(bucket, "replaced") == {}


@pytest.mark.parametrize("s3_backend", ["minio"], indirect=True)
async def test_copy_source_if_match_mismatch_is_a_precondition_failure(
    backend_http: S3HttpClient, backend_seed: S3Seeder, s3_backend: S3Backend
) -> None:
    # moto ignores x-amz-copy-source-if-match (server-side copies there are protected by
    # the engine's re-check of the source only); MinIO and AWS honour it.
    bucket = await backend_seed.bucket()
    await backend_seed.put_object(bucket, "src", 100)

    stale = await _failure(
        backend_http.copy(
            bucket, "src", bucket, "stale", {"x-amz-copy-source-if-match": '"' + "0" * 32 + '"'}
        )
    )

    assert isinstance(stale, S3ResponseError)
    assert (stale.operation, stale.status) == ("CopyObject", 412)
    assert classify(stale).kind == "precondition"
    assert isinstance(await _failure(backend_http.head(bucket, "stale")), S3ResponseError)


async def test_upload_part_copy_and_complete_reproduce_a_multipart_etag(
    backend_client, backend_http: S3HttpClient, backend_seed: S3Seeder, s3_backend: S3Backend
) -> None:
    src, dst = await backend_seed.bucket(), await backend_seed.bucket()
    sizes = _parts(s3_backend)
    obj = await backend_seed.put_multipart(src, "m", sizes, metadata={"k": "v"})

    upload_id = await backend_http.create_multipart_upload(dst, "m", metadata_headers({"k": "v"}))
    etags = []
    start = 0
    for number, size in enumerate(sizes, start=1):
        etags.append(
            await backend_http.upload_part_copy(
                src,
                "m",
                dst,
                "m",
                upload_id,
                number,
                {"x-amz-copy-source-if-match": f'"{obj.etag}"'},
                byte_range=(start, start + size - 1),
            )
        )
        start += size
    done = await backend_http.complete_multipart_upload(dst, "m", upload_id, etags, {})

    assert done.etag == obj.etag
    assert multipart_part_count(done.etag) == 3
    assert await part_layout(backend_http, dst, "m") == sizes
    assert (await object_sha256(backend_http, dst, "m"))[0] == obj.sha256
    assert (await backend_http.head(dst, "m")).metadata == {"k": "v"}
    assert [u async for u in list_multipart_uploads(backend_client, dst)] == []


async def test_upload_part_checks_md5_and_abort_forgets_the_upload(
    backend_client, backend_http: S3HttpClient, backend_seed: S3Seeder, s3_backend: S3Backend
) -> None:
    bucket = await backend_seed.bucket()
    first, last = payload(s3_backend.min_part_size, "p1"), payload(1000, "p2")

    upload_id = await backend_http.create_multipart_upload(bucket, "m", {})
    one = await backend_http.upload_part(bucket, "m", upload_id, 1, first, len(first))
    two = await backend_http.upload_part(bucket, "m", upload_id, 2, last, len(last))
    assert one.etag == hashlib.md5(first).hexdigest()
    assert two.etag == hashlib.md5(last).hexdigest()
    await backend_http.abort_multipart_upload(bucket, "m", upload_id)

    gone = await _failure(
        backend_http.complete_multipart_upload(bucket, "m", upload_id, [one.etag, two.etag], {})
    )
    assert isinstance(gone, S3ResponseError)
    if s3_backend.name == "minio":  # moto answers 500 for an upload it no longer knows
        assert gone.code == "NoSuchUpload"
        # Not the object's end: another attempt copies it with a new upload.
        assert classify(gone).kind == "retryable"
    assert [u async for u in list_multipart_uploads(backend_client, bucket)] == []


# ----------------------------------------------------------------------- create-only copies


@pytest.mark.parametrize(
    ("server_side", "multipart"),
    [
        pytest.param(False, False, id="streamed-single"),  # PutObject If-None-Match
        pytest.param(False, True, id="streamed-multipart"),  # Complete If-None-Match
        pytest.param(True, True, id="server-side-multipart"),  # Complete If-None-Match
        # Server-side single-part (CopyObject If-None-Match): moto and MinIO ignore the
        # header there; see test_create_only_copy_object_refused_by_the_store.
    ],
)
async def test_create_only_copy_onto_a_taken_key_leaves_it_alone(
    backend_client,
    backend_http: S3HttpClient,
    backend_seed: S3Seeder,
    s3_backend: S3Backend,
    server_side: bool,
    multipart: bool,
) -> None:
    src, dst = await backend_seed.bucket(), await backend_seed.bucket()
    if multipart:
        obj = await backend_seed.put_multipart(src, "k", _parts(s3_backend))
    else:
        obj = await backend_seed.put_object(src, "k", 20_000)
    existing = await backend_seed.put_object(dst, "k", 3000, seed="already there")
    before = await backend_http.head(dst, "k")

    with pytest.raises(TargetExistsError) as taken:
        await copy_object(
            backend_http,
            backend_http,
            SourceObject(src, "k", etag=obj.etag, size=obj.size),
            TargetObject(dst, "k"),
            CopyOptions(server_side=server_side, create_only=True),
        )
    free = await copy_object(
        backend_http,
        backend_http,
        SourceObject(src, "k", etag=obj.etag, size=obj.size),
        TargetObject(dst, "free"),
        CopyOptions(server_side=server_side, create_only=True),
    )

    # The error carries the source as read, for the caller's comparison.
    assert (taken.value.source.etag, taken.value.source.size) == (obj.etag, obj.size)
    after = await backend_http.head(dst, "k")
    assert (after.etag, after.size, after.last_modified) == (
        existing.etag,
        existing.size,
        before.last_modified,
    )
    assert await backend_seed.get_bytes(dst, "k") == existing.data
    assert free.etag == obj.etag
    assert [u async for u in list_multipart_uploads(backend_client, dst)] == []


# ------------------------------------------------------------------ layouts and fast path


@pytest.mark.parametrize("server_side", PATHS)
@pytest.mark.parametrize(
    "sizes_mib",
    [
        # Part 1 and the count suggest equal parts of 6 MiB and a last one of 5: wrong.
        pytest.param((6, 5, 6), id="uniform-guess-wrong"),
        # The last part would be longer than the first: not equal parts, asked at once.
        pytest.param((5, 7, 5), id="not-uniform"),
    ],
)
@pytest.mark.parametrize("create_only", [False, True], ids=["overwrite", "create-only"])
async def test_unequal_parts_still_copy_with_an_equal_etag(
    backend_client,
    backend_http: S3HttpClient,
    backend_seed: S3Seeder,
    server_side: bool,
    sizes_mib: tuple[int, ...],
    create_only: bool,
) -> None:
    src, dst = await backend_seed.bucket(), await backend_seed.bucket()
    sizes = [size * MiB for size in sizes_mib]
    obj = await backend_seed.put_multipart(src, "uneven", sizes)

    result = await copy_object(
        backend_http,
        backend_http,
        SourceObject(src, "uneven", etag=obj.etag, size=obj.size),
        TargetObject(dst, "uneven"),
        CopyOptions(server_side=server_side, create_only=create_only, part_concurrency=3),
    )

    assert result.etag == obj.etag
    assert result.etag_matches_source is True
    assert await part_layout(backend_http, dst, "uneven") == sizes
    assert (await object_sha256(backend_http, dst, "uneven"))[0] == obj.sha256
    assert [u async for u in list_multipart_uploads(backend_client, dst)] == []


async def test_equal_parts_are_learned_from_one_part_head(
    s3_seed: S3Seeder, s3_proxy: S3FaultProxy, proxy_http: S3HttpClient
) -> None:
    src, dst = await s3_seed.bucket(), await s3_seed.bucket()
    obj = await s3_seed.put_multipart(src, "even", [4096] * 5 + [100])

    result = await copy_object(
        proxy_http,
        proxy_http,
        SourceObject(src, "even", etag=obj.etag, size=obj.size),
        TargetObject(dst, "even"),
        CopyOptions(server_side=True),
    )

    part_heads = [r for r in s3_proxy.seen("HEAD") if "partNumber" in r.query]
    assert [r.query["partNumber"] for r in part_heads] == ["1"]
    assert result.etag == obj.etag


async def test_a_wrong_equal_parts_guess_is_copied_again_with_exact_sizes(
    s3_client, s3_seed: S3Seeder, s3_proxy: S3FaultProxy, proxy_http: S3HttpClient
) -> None:
    src, dst = await s3_seed.bucket(), await s3_seed.bucket()
    obj = await s3_seed.put_multipart(src, "uneven", [3000, 2000, 3000])

    result = await copy_object(
        proxy_http,
        proxy_http,
        SourceObject(src, "uneven", etag=obj.etag, size=obj.size),
        TargetObject(dst, "uneven"),
        CopyOptions(server_side=True),
    )

    part_heads = sorted(
        r.query["partNumber"] for r in s3_proxy.seen("HEAD") if "partNumber" in r.query
    )
    uploads = [r for r in s3_proxy.seen("POST") if r.bucket == dst and "uploads" in r.query]
    assert result.etag == obj.etag
    assert part_heads == ["1", "1", "2", "3"]  # the guess, then every part
    assert len(uploads) == 2
    assert await part_layout(proxy_http, dst, "uneven") == [3000, 2000, 3000]
    assert [u async for u in list_multipart_uploads(s3_client, dst)] == []


async def test_streamed_single_part_copy_does_not_head_the_source(
    s3_seed: S3Seeder, s3_proxy: S3FaultProxy, proxy_http: S3HttpClient
) -> None:
    src, dst = await s3_seed.bucket(), await s3_seed.bucket()
    obj = await s3_seed.put_object(
        src,
        "k",
        30_000,
        metadata={"owner": "team-a"},
        tags={"t": "1"},
        ContentType="text/csv",
        ContentLanguage="en",
    )
    plain = await s3_seed.put_object(src, "plain", 100)
    # What a scan knows of each: the listing's ETag, size and last-modified.
    listed = {info.key: info.last_modified async for info in proxy_http.list_objects(src)}
    s3_proxy.clear()

    result = await copy_object(
        proxy_http,
        proxy_http,
        SourceObject(src, "k", etag=obj.etag, size=obj.size, last_modified=listed["k"]),
        TargetObject(dst, "k"),
        CopyOptions(),
    )
    await copy_object(
        proxy_http,
        proxy_http,
        SourceObject(src, "plain", etag=plain.etag, size=plain.size, last_modified=listed["plain"]),
        TargetObject(dst, "plain"),
        CopyOptions(),
    )

    source_requests = [
        (r.method, r.key, sorted(r.query)) for r in s3_proxy.seen() if r.bucket == src
    ]
    # One GET of the bytes; the tags only where the GET said there are some.
    assert source_requests == [("GET", "k", []), ("GET", "k", ["tagging"]), ("GET", "plain", [])]
    assert result.etag == obj.etag
    assert result.source.metadata == {"owner": "team-a"}
    head = await proxy_http.head(dst, "k")
    assert head.metadata == {"owner": "team-a"}
    assert (head.content.content_type, head.content.content_language) == ("text/csv", "en")
    assert await proxy_http.get_tags(dst, "k") == {"t": "1"}


@pytest.mark.parametrize("server_side", PATHS)
async def test_fast_path_keeps_metadata_content_headers_and_tags_on_both_backends(
    backend_http: S3HttpClient, backend_seed: S3Seeder, server_side: bool
) -> None:
    # SourceObject with ETag and size: the streamed copy reads headers from its GET alone.
    src, dst = await backend_seed.bucket(), await backend_seed.bucket()
    obj = await backend_seed.put_object(
        src,
        "k",
        4321,
        metadata={"storage-version": "2"},
        tags={"a": "b"},
        ContentType="text/plain",
        CacheControl="no-cache",
    )

    result = await copy_object(
        backend_http,
        backend_http,
        SourceObject(src, "k", etag=obj.etag, size=obj.size),
        TargetObject(dst, "k"),
        CopyOptions(server_side=server_side, compute_sha256=True),
    )

    head = await backend_http.head(dst, "k")
    assert result.etag == obj.etag
    assert result.sha256 == (None if server_side else obj.sha256)
    assert head.metadata == {"storage-version": "2"}
    assert (head.content.content_type, head.content.cache_control) == ("text/plain", "no-cache")
    assert await backend_http.get_tags(dst, "k") == {"a": "b"}


async def test_create_only_copy_object_refused_by_the_store(
    s3_seed: S3Seeder, s3_proxy: S3FaultProxy, proxy_http: S3HttpClient
) -> None:
    """AWS answers a CopyObject with If-None-Match: * onto a taken key with 412; moto and
    MinIO ignore the header, so the proxy answers as AWS would."""
    src, dst = await s3_seed.bucket(), await s3_seed.bucket()
    obj = await s3_seed.put_object(src, "k", 1000)
    existing = await s3_seed.put_object(dst, "k", 10, seed="mine")
    s3_proxy.add_rule(Fail(412, "PreconditionFailed", "If-None-Match"), method="PUT", bucket=dst)

    taken = await _failure(
        copy_object(
            proxy_http,
            proxy_http,
            SourceObject(src, "k", etag=obj.etag, size=obj.size),
            TargetObject(dst, "k"),
            CopyOptions(server_side=True, create_only=True),
        )
    )
    # A 412 onto a free key is the other condition failing: the source moved.
    moved = await _failure(
        copy_object(
            proxy_http,
            proxy_http,
            SourceObject(src, "k", etag=obj.etag, size=obj.size),
            TargetObject(dst, "free"),
            CopyOptions(server_side=True, create_only=True),
        )
    )

    copies = [r for r in s3_proxy.seen("PUT") if r.bucket == dst]
    assert [r.key for r in copies] == ["k", "free"]
    for request in copies:
        headers = {name.lower(): value for name, value in request.headers.items()}
        assert headers["if-none-match"] == "*"
        assert headers["x-amz-copy-source-if-match"] == f'"{obj.etag}"'
    assert isinstance(taken, TargetExistsError)
    assert taken.source.etag == obj.etag
    assert (await proxy_http.head(dst, "k")).etag == existing.etag
    # (Both conditions are ours: with the target's ruled out, the source's failed.)
    assert isinstance(moved, SourceChangedError)


async def test_list_page_pages_through_a_prefix_like_the_sdk_listing(
    backend_client, backend_http: S3HttpClient, backend_seed: S3Seeder, s3_backend: S3Backend
) -> None:
    bucket = await backend_seed.bucket()
    keys = ["p/a b", "p/ü+=~", "p/c/d", "p/e", "p/f&g<h>", "q/outside"]
    for key in keys:
        await backend_seed.put_object(bucket, key, len(key))
    await backend_seed.put_multipart(bucket, "p/multi", [s3_backend.min_part_size, 10])

    pages: list[list[str]] = []
    listed = []
    token: str | None = None
    while True:
        page, token = await backend_http.list_page(
            bucket, "p/", continuation_token=token, max_keys=2
        )
        pages.append([o.key for o in page])
        listed += page
        if token is None:
            break
    resumed, last = await backend_http.list_page(bucket, "p/", start_after="p/e")
    expected = [o async for o in list_objects(backend_client, bucket, "p/")]
    walked = [o async for o in backend_http.list_objects(bucket, "p/", page_size=2)]
    walked_after = [
        o.key async for o in backend_http.list_objects(bucket, "p/", start_after="p/c/d")
    ]

    assert listed == expected
    assert walked == expected
    assert walked_after == ["p/e", "p/f&g<h>", "p/multi", "p/ü+=~"]
    assert [o.key for o in listed] == sorted(k for k in [*keys, "p/multi"] if k.startswith("p/"))
    assert all(len(keys_) <= 2 for keys_ in pages)
    assert len(pages) >= 3
    assert [o.key for o in resumed] == ["p/f&g<h>", "p/multi", "p/ü+=~"]
    assert last is None
    assert multipart_part_count(next(o for o in listed if o.key == "p/multi").etag) == 2


async def test_bucket_versioning_reads_each_status_and_a_missing_bucket_is_a_config_error(
    backend_client, backend_http: S3HttpClient, backend_seed: S3Seeder
) -> None:
    plain = await backend_seed.bucket()
    enabled = await backend_seed.bucket(versioned=True)
    suspended = await backend_seed.bucket(versioned=True)
    await backend_client.put_bucket_versioning(
        Bucket=suspended, VersioningConfiguration={"Status": "Suspended"}
    )

    statuses = [await backend_http.bucket_versioning(b) for b in (plain, enabled, suspended)]
    missing = await _failure(backend_http.bucket_versioning(f"{plain}-missing"))

    assert statuses == ["", "Enabled", "Suspended"]
    assert isinstance(missing, S3ResponseError)
    assert (missing.status, missing.code) == (404, "NoSuchBucket")
    assert classify(missing).is_config_error
