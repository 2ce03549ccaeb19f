"""Faults between objmig and a real store (issues 21.2 and 23.1): a lost answer is not a
failure, a transient fault costs a request rather than an attempt, and with 5% of every
kind of fault every object ends verified on the first run, byte-identical.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
from types_aiobotocore_s3 import S3Client

from objmig.ledger import Ledger, ObjectState
from objmig.storage.copy import CopyOptions, SourceObject, TargetObject, copy_object
from objmig.storage.endpoint import Endpoint
from objmig.storage.errors import S3ResponseError, classify
from objmig.storage.s3http import open_http_client
from tests.fixtures.s3 import S3Backend, S3Seeder
from tests.integration.engine_support import keys_of, migration, rows_of, run, sha256_of
from tests.support.s3proxy import (
    Fail,
    LoseAnswer,
    S3FaultProxy,
    SlowDown,
    Truncate,
    add_fault_mix,
)

KiB = 1024


def _through(proxy: S3FaultProxy, backend: S3Backend) -> Endpoint:
    return dataclasses.replace(backend.endpoint, url=proxy.endpoint_url)


@pytest.mark.parametrize("server_side", [False, True], ids=["stream", "serverSide"])
async def test_a_lost_answer_to_complete_multipart_upload_is_the_upload_done(
    s3_backend: S3Backend,
    backend_seed: S3Seeder,
    backend_client: S3Client,
    backend_proxy: S3FaultProxy,
    server_side: bool,
) -> None:
    bucket = await backend_seed.bucket()
    part = s3_backend.min_part_size
    source = await backend_seed.put_multipart(bucket, "big", [part, part, 100])
    complete = backend_proxy.add_rule(
        LoseAnswer(), method="POST", key="copy", query={"uploadId": None}, times=1
    )

    async with open_http_client(_through(backend_proxy, s3_backend)) as http:
        result = await copy_object(
            http,
            http,
            SourceObject(bucket, "big", size=source.size, etag=source.etag),
            TargetObject(bucket, "copy"),
            CopyOptions(server_side=server_side),
        )

    assert complete.hits == 1
    # Sent again, the completion found no upload: the target was what this one made.
    assert len(backend_proxy.seen("POST", key="copy")) >= 3  # create, complete, complete
    assert result.etag == source.etag
    assert result.etag_matches_source
    assert await sha256_of(backend_client, bucket, "copy") == source.sha256
    uploads = await backend_client.list_multipart_uploads(Bucket=bucket)
    assert not uploads.get("Uploads")


async def test_an_upload_gone_before_completing_is_an_attempt_to_repeat_not_a_copy(
    s3_seed: S3Seeder, s3_proxy: S3FaultProxy, proxy_http
) -> None:
    bucket = await s3_seed.bucket()
    source = await s3_seed.put_multipart(bucket, "big", [2 * KiB, 2 * KiB, 100])
    # Something else sits where the copy goes, and the upload vanished (aborted meanwhile).
    await s3_seed.put_object(bucket, "copy", 4 * KiB + 100)
    s3_proxy.add_rule(
        Fail(404, "NoSuchUpload"), method="POST", key="copy", query={"uploadId": None}, times=1
    )

    with pytest.raises(S3ResponseError) as raised:
        await copy_object(
            proxy_http,
            proxy_http,
            SourceObject(bucket, "big", size=source.size, etag=source.etag),
            TargetObject(bucket, "copy"),
            CopyOptions(),
        )

    error = classify(raised.value)
    assert (error.code, error.kind) == ("NoSuchUpload", "retryable")
    # Sent once: an upload that is gone stays gone; the next attempt uploads anew.
    completions = [r for r in s3_proxy.seen("POST", key="copy") if "uploadId" in r.query]
    assert len(completions) == 1


async def test_a_part_whose_body_is_cut_short_is_read_on_where_it_stopped(
    s3_backend: S3Backend,
    backend_seed: S3Seeder,
    backend_client: S3Client,
    backend_proxy: S3FaultProxy,
) -> None:
    bucket = await backend_seed.bucket()
    part = s3_backend.min_part_size
    source = await backend_seed.put_multipart(bucket, "big", [part, part, 8000])
    # The first part read: its answer is cut short after 4,000 bytes, once.
    # (A GET with a Range: the object's bytes, not GetObjectAttributes, which a part layout
    # may ask first.)
    cut = backend_proxy.add_rule(Truncate(4000), method="GET", key="big", header="range", times=1)

    async with open_http_client(_through(backend_proxy, s3_backend)) as http:
        result = await copy_object(
            http,
            http,
            SourceObject(bucket, "big", size=source.size, etag=source.etag),
            TargetObject(bucket, "copy"),
            CopyOptions(preserve_tags=False),
        )

    assert cut.hits == 1
    assert result.etag == source.etag
    assert await sha256_of(backend_client, bucket, "copy") == source.sha256
    # One upload, and the read that was cut read on from where it stopped, to its end.
    uploads = [r for r in backend_proxy.seen("POST", key="copy") if "uploads" in r.query]
    assert len(uploads) == 1
    ranges = [
        {k.lower(): v for k, v in r.headers.items()}["range"]
        for r in backend_proxy.seen("GET", key="big")
        if "attributes" not in r.query
    ]
    first, end = ranges[0].removeprefix("bytes=").split("-")
    assert ranges.count(f"bytes={int(first) + 4000}-{end}") == 1
    assert len(ranges) == len(set(ranges)), f"nothing read twice: {ranges}"


@pytest.mark.parametrize("mode", ["stream", "serverSide"])
async def test_lost_answers_and_transient_faults_cost_no_attempt(
    ledger: Ledger,
    s3_backend: S3Backend,
    backend_seed: S3Seeder,
    backend_client: S3Client,
    backend_proxy: S3FaultProxy,
    mode: str,
) -> None:
    source = await backend_seed.bucket()
    target = await backend_seed.bucket()
    seeded = [await backend_seed.put_object(source, f"o/{i}", 3 * KiB) for i in range(4)]
    part = s3_backend.min_part_size
    seeded.append(await backend_seed.put_multipart(source, "o/big", [part, 100]))
    # Every write of the copies loses its answer once, and the looks meet faults.
    for method in ("PUT", "POST"):
        backend_proxy.add_rule(LoseAnswer(), method=method, bucket=target, once_each=True)
    backend_proxy.add_rule(SlowDown(), method="HEAD", once_each=True)
    backend_proxy.add_rule(Fail(500), method="GET", query={"list-type": "2"}, times=2)
    endpoint = _through(backend_proxy, s3_backend)

    result = await run(ledger, migration(endpoint, source, target, copy={"mode": mode}), endpoint)

    assert result.outcome == "cut-over", [(o.key, o.last_error) for o in result.status.objects]
    rows = await rows_of(ledger)
    assert {r.state for r in rows.values()} == {ObjectState.VERIFIED}
    assert {r.attempts for r in rows.values()} == {1}
    assert sum(1 for r in backend_proxy.seen() if r.action == "LoseAnswer") >= 5
    for obj in seeded:
        assert await sha256_of(backend_client, target, obj.key) == obj.sha256


@pytest.mark.parametrize("mode", ["stream", "serverSide"])
async def test_five_percent_of_every_fault_kind_still_verifies_every_object_on_the_first_run(
    ledger: Ledger,
    s3_backend: S3Backend,
    backend_seed: S3Seeder,
    backend_client: S3Client,
    backend_proxy: S3FaultProxy,
    mode: str,
) -> None:
    source = await backend_seed.bucket()
    target = await backend_seed.bucket()
    seeded = [
        await backend_seed.put_object(source, f"small/{i:03}", 1 * KiB + i) for i in range(80)
    ]
    part = s3_backend.min_part_size
    seeded += [
        await backend_seed.put_multipart(source, f"multi/{i}", [part, part, 1000 + i])
        for i in range(3)
    ]
    rules = add_fault_mix(backend_proxy, rate=0.05)
    endpoint = _through(backend_proxy, s3_backend)
    resource = migration(
        # spec.retry's attempts as they come (5); only the backoff is shortened.
        endpoint,
        source,
        target,
        copy={"mode": mode},
        retry={"backoff": {"initial": "50ms", "max": "500ms"}},
    )

    result = await run(ledger, resource, endpoint)

    assert result.outcome == "cut-over", (
        result.status.conditions,
        [(o.key, o.last_error) for o in result.status.objects],
    )
    rows = await rows_of(ledger)
    assert {r.state for r in rows.values()} == {ObjectState.VERIFIED}
    on_target = await keys_of(backend_client, target)
    assert set(on_target) == {obj.key for obj in seeded}
    for obj in seeded:
        # 0 corrupt accepted: every byte of every copy, read directly from the store.
        assert await sha256_of(backend_client, target, obj.key) == obj.sha256, obj.key
        assert on_target[obj.key] == obj.etag
    fired = Counter[str]()
    for name, rule in rules:
        fired[name] += rule.hits
    # Server-side copies GET no object: only listings could have their body cut short.
    expected = {name for name, _ in rules if mode == "stream" or name != "truncated body"}
    assert {name for name, hits in fired.items() if hits} >= expected, fired


async def test_a_listing_page_outlasting_its_resends_is_asked_for_again_not_the_scans_end(
    s3_seed: S3Seeder, s3_proxy: S3FaultProxy, proxy_http
) -> None:
    bucket = await s3_seed.bucket()
    keys = [f"k{i}" for i in range(5)]
    for key in keys:
        await s3_seed.put_object(bucket, key, 10)
    # The second page throttled four times in a row: more than one request's own resends.
    throttled = s3_proxy.add_rule(
        SlowDown(),
        method="GET",
        bucket=bucket,
        query={"list-type": "2", "continuation-token": None},
        times=4,
    )

    listed = [info.key async for info in proxy_http.list_objects(bucket, page_size=2)]

    assert listed == keys
    assert throttled.hits == 4


async def test_a_listing_refused_for_good_is_not_asked_for_again(
    s3_seed: S3Seeder, s3_proxy: S3FaultProxy, proxy_http
) -> None:
    bucket = await s3_seed.bucket()
    await s3_seed.put_object(bucket, "k", 10)
    s3_proxy.add_rule(
        Fail(403, "AccessDenied"), method="GET", bucket=bucket, query={"list-type": "2"}
    )

    with pytest.raises(S3ResponseError):
        _ = [info async for info in proxy_http.list_objects(bucket)]

    assert len([r for r in s3_proxy.seen("GET") if r.query.get("list-type") == "2"]) == 1
