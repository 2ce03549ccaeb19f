"""classify() on failures produced by real servers and by the fault proxy: throttling,
server errors, resets and truncated bodies are retryable; bad credentials and missing
buckets are configuration errors; missing keys, failed preconditions and archived objects
have their own kinds; and no message ever shows a secret."""

from __future__ import annotations

import pytest

from objmig.storage import (
    CopyOptions,
    Credentials,
    SourceObject,
    TargetObject,
    classify,
    copy_object,
    list_multipart_uploads,
    object_sha256,
)
from objmig.storage.endpoint import Endpoint
from objmig.storage.errors import S3ResponseError
from objmig.storage.s3http import open_http_client
from objmig.storage.sdk import open_client
from tests.fixtures.s3 import S3Seeder
from tests.support.s3proxy import Deny, Fail, Reset, S3FaultProxy, SlowDown, Truncate


async def _failure(awaitable) -> BaseException:
    try:
        await awaitable
    except Exception as exc:
        return exc
    raise AssertionError("expected a failure")


@pytest.mark.parametrize(
    ("method", "action", "code"),
    [
        ("GET", Fail(500, "InternalError"), "InternalError"),
        ("HEAD", Fail(500, "InternalError"), "500"),
        ("GET", SlowDown(), "SlowDown"),
        ("HEAD", SlowDown(), "503"),
        ("GET", Fail(503, "ServiceUnavailable"), "ServiceUnavailable"),
    ],
)
async def test_server_errors_and_throttling_are_retryable(
    s3_seed: S3Seeder, s3_proxy: S3FaultProxy, proxy_endpoint, method, action, code
) -> None:
    bucket = await s3_seed.bucket()
    await s3_seed.put_object(bucket, "k", 10)
    s3_proxy.add_rule(action, method=method, key="k")

    async with open_http_client(proxy_endpoint) as client:
        call = client.head(bucket, "k") if method == "HEAD" else object_sha256(client, bucket, "k")
        failure = await _failure(call)
        error = classify(failure)

    assert isinstance(failure, S3ResponseError)
    assert failure.status == action.status

    assert error.kind == "retryable"
    assert error.code == code
    assert not error.is_config_error


async def test_connection_reset_is_retryable(
    s3_seed: S3Seeder, s3_proxy: S3FaultProxy, proxy_endpoint
) -> None:
    bucket = await s3_seed.bucket()
    await s3_seed.put_object(bucket, "k", 10)
    s3_proxy.add_rule(Reset(), method="GET", key="k")

    async with open_http_client(proxy_endpoint) as client:
        error = classify(await _failure(object_sha256(client, bucket, "k")))

    assert error.kind == "retryable", error


async def test_truncated_body_is_retryable(
    s3_seed: S3Seeder, s3_proxy: S3FaultProxy, proxy_endpoint
) -> None:
    bucket = await s3_seed.bucket()
    await s3_seed.put_object(bucket, "k", 200_000)
    s3_proxy.add_rule(Truncate(50_000), method="GET", key="k")

    async with open_http_client(proxy_endpoint) as client:
        error = classify(await _failure(object_sha256(client, bucket, "k")))

    assert error.kind == "retryable", error


async def test_truncated_source_part_fails_a_streamed_copy_retryably_and_aborts(
    s3_client, s3_seed: S3Seeder, s3_proxy: S3FaultProxy, proxy_endpoint
) -> None:
    src, dst = await s3_seed.bucket(), await s3_seed.bucket()
    obj = await s3_seed.put_multipart(src, "k", [100_000, 100_000, 10])
    # Fires on every GET of the source; bodies shorter than the limit (GetObjectTagging)
    # pass whole.
    s3_proxy.add_rule(Truncate(30_000), method="GET", bucket=src, key="k")

    async with open_http_client(proxy_endpoint) as client:
        failure = await _failure(
            copy_object(
                client,
                client,
                SourceObject(src, "k", etag=obj.etag),
                TargetObject(dst, "k"),
                CopyOptions(part_concurrency=1),
            )
        )
    assert classify(failure).kind == "retryable", failure
    assert [u async for u in list_multipart_uploads(s3_client, dst)] == []


async def test_access_denied_fails_the_object_not_the_migration(
    s3_seed: S3Seeder, s3_proxy: S3FaultProxy, proxy_endpoint
) -> None:
    bucket = await s3_seed.bucket()
    s3_proxy.add_rule(Deny(), method="PUT", key="secret/*")

    async with open_http_client(proxy_endpoint) as client:
        await client.put(bucket, "public/ok", b"x", 1, {})
        failure = await _failure(client.put(bucket, "secret/no", b"x", 1, {}))
        error = classify(failure)

    assert isinstance(failure, S3ResponseError)
    assert (failure.operation, failure.status) == ("PutObject", 403)

    # A denied key fails that object; the failure budget decides about the migration.
    assert (error.kind, error.code, error.is_config_error) == ("permanent", "AccessDenied", False)


async def test_missing_keys_and_buckets(s3_http, s3_seed: S3Seeder) -> None:
    bucket = await s3_seed.bucket()

    head_404 = classify(await _failure(s3_http.head(bucket, "nope")))
    get_404 = classify(await _failure(object_sha256(s3_http, bucket, "nope")))
    no_bucket = classify(await _failure(object_sha256(s3_http, "no-such-bucket-xyz", "k")))

    assert (head_404.kind, head_404.code) == ("not_found", "404")
    assert (get_404.kind, get_404.code) == ("not_found", "NoSuchKey")
    assert no_bucket.code == "NoSuchBucket"
    assert no_bucket.is_config_error


async def test_failed_precondition(s3_http, s3_seed: S3Seeder) -> None:
    bucket = await s3_seed.bucket()
    await s3_seed.put_object(bucket, "k", b"now")

    failure = await _failure(object_sha256(s3_http, bucket, "k", if_match="0" * 32))
    error = classify(failure)

    assert isinstance(failure, S3ResponseError)
    assert failure.status == 412
    assert error.kind == "precondition"


async def test_reading_an_archived_object_is_invalid_state(s3_http, s3_seed: S3Seeder) -> None:
    bucket = await s3_seed.bucket()
    await s3_seed.put_object(bucket, "cold", 10, storage_class="DEEP_ARCHIVE")

    error = classify(await _failure(object_sha256(s3_http, bucket, "cold")))

    assert (error.kind, error.code) == ("invalid_state", "InvalidObjectState")


async def test_bad_credentials_are_config_errors_without_secrets(minio_server) -> None:
    good = minio_server.credentials
    wrong_secret = Credentials(good.access_key_id, "not-the-secret-at-all-123")
    unknown_key = Credentials("AKIAUNKNOWNKEY000000", "another-secret-value-456")

    for credentials, code in (
        (wrong_secret, "SignatureDoesNotMatch"),
        (unknown_key, "InvalidAccessKeyId"),
    ):
        endpoint = Endpoint(url=minio_server.endpoint_url, credentials=credentials)
        async with open_client(endpoint) as client:
            sdk_error = classify(await _failure(client.list_buckets()))
        async with open_http_client(endpoint) as http:
            # GET carries the error document; HEAD has only the status to go on.
            get_error = classify(await _failure(object_sha256(http, "any-bucket", "k")))
        for error in (sdk_error, get_error):
            assert error.code == code
            assert error.is_config_error
            assert credentials.secret_access_key not in error.message
            assert "AKIAUNKNOWNKEY000000" not in error.message
