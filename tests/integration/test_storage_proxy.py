"""The fault proxy itself: it forwards signed requests unchanged (MinIO checks SigV4), and
its rules fire for the requests they match, as often and as long as they say."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from objmig.storage import object_sha256
from objmig.storage.endpoint import Endpoint
from objmig.storage.errors import S3ResponseError
from objmig.storage.resending import RequestRetry
from objmig.storage.s3http import open_http_client
from objmig.storage.sdk import open_client
from tests.fixtures.s3 import S3Seeder, payload
from tests.support.s3proxy import ABSENT, Fail, Hold, RewriteHeaders, S3FaultProxy, SlowDown


async def test_proxy_passes_sigv4_requests_unchanged_to_minio(minio_server) -> None:
    data = payload(3 * 1024 * 1024, "proxy")
    with S3FaultProxy(minio_server.endpoint_url) as proxy:
        endpoint = Endpoint(url=proxy.endpoint_url, credentials=minio_server.credentials)
        async with open_client(endpoint) as client, open_http_client(endpoint) as http:
            await client.create_bucket(Bucket="via-proxy")
            await client.put_object(Bucket="via-proxy", Key="a b/ü+c", Body=data)
            head = await http.head("via-proxy", "a b/ü+c")
            digest, size = await object_sha256(http, "via-proxy", "a b/ü+c")
            await http.put("via-proxy", "a b/ü+c=2~", data[:1000], 1000, {})
            again = await http.head("via-proxy", "a b/ü+c=2~")
            await client.delete_object(Bucket="via-proxy", Key="a b/ü+c")
            await client.delete_object(Bucket="via-proxy", Key="a b/ü+c=2~")
            await client.delete_bucket(Bucket="via-proxy")
        methods = [r.method for r in proxy.seen()]

    assert head.size == size == len(data)
    assert again.size == 1000
    assert digest == hashlib.sha256(data).hexdigest()
    assert methods == ["PUT", "PUT", "HEAD", "GET", "PUT", "HEAD", "DELETE", "DELETE", "DELETE"]


async def test_rule_fires_only_the_given_number_of_times(
    s3_seed: S3Seeder, s3_proxy: S3FaultProxy, proxy_endpoint
) -> None:
    bucket = await s3_seed.bucket()
    await s3_seed.put_object(bucket, "k", 5)
    rule = s3_proxy.add_rule(SlowDown(), method="HEAD", key="k", times=2)

    # Each request once: what the proxy does, not what the client makes of it.
    async with open_http_client(proxy_endpoint, retry=RequestRetry(attempts=1)) as client:
        for _ in range(2):
            with pytest.raises(S3ResponseError):
                await client.head(bucket, "k")
        assert (await client.head(bucket, "k")).size == 5

    assert rule.hits == 2


async def test_rule_expires_after_its_seconds(
    s3_seed: S3Seeder, s3_proxy: S3FaultProxy, proxy_endpoint
) -> None:
    bucket = await s3_seed.bucket()
    await s3_seed.put_object(bucket, "k", 5)
    # The proxy's clock, moved by the test: the first HEAD falls inside the rule's half
    # second however slow the machine is, the second one after it without waiting.
    now = [1000.0]
    s3_proxy.clock = lambda: now[0]
    s3_proxy.add_rule(Fail(500), method="HEAD", seconds=0.5)

    # Each request once: what the proxy does, not what the client makes of it.
    async with open_http_client(proxy_endpoint, retry=RequestRetry(attempts=1)) as client:
        now[0] += 0.4
        with pytest.raises(S3ResponseError):
            await client.head(bucket, "k")
        now[0] += 0.3
        assert (await client.head(bucket, "k")).size == 5


async def test_rule_matches_query_parameters_and_key_globs(
    s3_seed: S3Seeder, s3_proxy: S3FaultProxy, proxy_endpoint
) -> None:
    bucket = await s3_seed.bucket()
    obj = await s3_seed.put_multipart(bucket, "dir/m", [2048, 2048, 10])
    await s3_seed.put_object(bucket, "other", 5)
    s3_proxy.add_rule(Fail(500), method="HEAD", key="dir/*", query={"partNumber": "2"})

    async with open_http_client(proxy_endpoint) as client:
        assert (await client.head(bucket, "dir/m", part_number=1)).size == 2048
        assert (await client.head(bucket, "dir/m")).etag == obj.etag
        assert (await client.head(bucket, "other")).size == 5
        with pytest.raises(S3ResponseError):
            await client.head(bucket, "dir/m", part_number=2)


async def test_rewritten_headers_reach_the_client_and_rules_can_be_removed(
    s3_seed: S3Seeder, s3_proxy: S3FaultProxy, proxy_endpoint
) -> None:
    bucket = await s3_seed.bucket()
    await s3_seed.put_object(bucket, "k", 5, ContentType="text/plain")
    rule = s3_proxy.add_rule(
        RewriteHeaders({"Content-Type": "application/x-rewritten", "x-amz-meta-new": "1"}),
        method="HEAD",
    )

    async with open_http_client(proxy_endpoint) as client:
        rewritten = await client.head(bucket, "k")
        s3_proxy.remove_rule(rule)
        plain = await client.head(bucket, "k")

    assert rewritten.content.content_type == "application/x-rewritten"
    assert rewritten.metadata == {"new": "1"}
    assert rewritten.size == 5
    assert plain.content.content_type == "text/plain"


async def test_held_request_waits_for_its_release_while_others_pass(
    s3_seed: S3Seeder, s3_proxy: S3FaultProxy, proxy_endpoint
) -> None:
    bucket = await s3_seed.bucket()
    await s3_seed.put_object(bucket, "k", 5)
    await s3_seed.put_object(bucket, "other", 7)
    hold = Hold()
    s3_proxy.add_rule(hold, method="HEAD", key="k")

    async with open_http_client(proxy_endpoint, max_connections=4) as client:
        held = asyncio.create_task(client.head(bucket, "k"))
        await hold.arrived()
        # Another request goes through and back while the first one waits at the proxy.
        assert (await client.head(bucket, "other")).size == 7
        assert not held.done()
        assert hold.held == 1
        hold.release()
        assert (await held).size == 5
        # Released: later requests pass at once.
        assert (await client.head(bucket, "k")).size == 5

    assert (hold.arrivals, hold.held) == (2, 0)


async def test_removing_a_hold_lets_its_requests_through(
    s3_seed: S3Seeder, s3_proxy: S3FaultProxy, proxy_endpoint
) -> None:
    bucket = await s3_seed.bucket()
    await s3_seed.put_object(bucket, "k", 5)
    rule = s3_proxy.add_rule(Hold(), method="HEAD")

    async with open_http_client(proxy_endpoint) as client:
        held = asyncio.create_task(client.head(bucket, "k"))
        assert isinstance(rule.action, Hold)
        await rule.action.arrived()
        s3_proxy.remove_rule(rule)
        assert (await held).size == 5


async def test_a_query_parameter_can_be_required_absent(
    s3_seed: S3Seeder, s3_proxy: S3FaultProxy, proxy_endpoint
) -> None:
    bucket = await s3_seed.bucket()
    await s3_seed.put_object(bucket, "k", 5)
    s3_proxy.add_rule(Fail(500), method="HEAD", query={"partNumber": ABSENT})

    async with open_http_client(proxy_endpoint) as client:
        assert (await client.head(bucket, "k", part_number=1)).size == 5
        with pytest.raises(S3ResponseError):
            await client.head(bucket, "k")
