"""The storage layer's pure plumbing: endpoints and credentials, client configuration,
ETag helpers, part-size guesses, encryption parameters, the token bucket, the ordered
SHA-256 and the bounded part runner."""

from __future__ import annotations

import asyncio
import base64
import hashlib

import pytest
from aiohttp.abc import AbstractResolver

from objmig.storage.copy import Encryption, run_bounded
from objmig.storage.endpoint import Credentials, Endpoint, same_store
from objmig.storage.parts import guess_part_sizes
from objmig.storage.ratelimit import TokenBucket
from objmig.storage.sdk import client_config
from objmig.storage.streaming import ReadAhead
from objmig.storage.types import multipart_part_count, normalise_etag

MiB = 1024 * 1024


def test_credentials_never_show_secrets() -> None:
    creds = Credentials("AKIAEXAMPLE", "wJalrXUtnFEMI/K7MDENG", "FwoGZXIvYXdzEB0aD")
    endpoint = Endpoint(url="http://s3.local", credentials=creds)

    for text in (repr(creds), str(creds), repr(endpoint), str(endpoint), f"{endpoint}"):
        assert "wJalrXUtnFEMI" not in text
        assert "FwoGZXIvYXdzEB0aD" not in text
    assert "AKIAEXAMPLE" in repr(creds)


def test_same_store_needs_same_service_region_and_identity() -> None:
    a = Credentials("a", "s")
    base = Endpoint(url="http://minio:9000/", region=None, credentials=a)

    assert same_store(base, Endpoint(url="HTTP://minio:9000", region="us-east-1", credentials=a))
    assert not same_store(base, Endpoint(url="http://minio:9001", credentials=a))
    assert not same_store(
        base, Endpoint(url="http://minio:9000", credentials=Credentials("b", "s"))
    )
    assert not same_store(
        base, Endpoint(url="http://minio:9000", region="eu-west-1", credentials=a)
    )
    assert same_store(Endpoint(region="eu-west-1"), Endpoint(region="eu-west-1"))


def test_client_config_retries_briefly_resolves_localhost_names_and_sizes_the_pool() -> None:
    config = client_config(Endpoint(addressing_style="virtual"), max_connections=24)

    assert config.max_pool_connections == 24
    assert config.retries == {"mode": "standard", "total_max_attempts": 3}
    assert isinstance(config.connector_args["resolver"], AbstractResolver)
    assert config.request_checksum_calculation == "when_required"
    assert config.response_checksum_validation == "when_required"
    assert config.s3 == {"addressing_style": "virtual", "payload_signing_enabled": False}
    assert config.region_name == "us-east-1"


def test_etag_helpers() -> None:
    assert normalise_etag('"abc"') == "abc"
    assert normalise_etag('W/"abc"') == "abc"
    assert normalise_etag(None) == ""
    assert multipart_part_count('"' + "a" * 32 + '-12"') == 12
    assert multipart_part_count("a" * 32) is None


@pytest.mark.parametrize(
    ("size", "count", "expected"),
    [
        (20 * MiB + 5, 3, [8 * MiB, 8 * MiB, 4 * MiB + 5]),  # aws-cli's 8 MiB default
        (10 * MiB, 2, [8 * MiB, 2 * MiB]),  # 5 MiB would fit too; 8 MiB is likelier
        (30 * MiB, 2, [16 * MiB, 14 * MiB]),
        (100, 1, [100]),
        (11, 3, [4, 4, 3]),  # no MiB multiple fits: exact ceiling division
    ],
)
def test_guess_part_sizes(size: int, count: int, expected: list[int]) -> None:
    sizes = guess_part_sizes(size, count)

    assert sizes == expected
    assert sum(sizes) == size


def test_encryption_parameters() -> None:
    key = bytes(range(32))

    key_b64 = base64.b64encode(key).decode()
    key_md5 = base64.b64encode(hashlib.md5(key).digest()).decode()

    assert Encryption().object_headers() == {}
    assert Encryption().part_headers() == {}
    assert Encryption("SSE-S3").object_headers() == {"x-amz-server-side-encryption": "AES256"}
    assert Encryption("SSE-KMS").object_headers() == {"x-amz-server-side-encryption": "aws:kms"}
    assert Encryption("SSE-KMS", kms_key_id="k1").object_headers() == {
        "x-amz-server-side-encryption": "aws:kms",
        "x-amz-server-side-encryption-aws-kms-key-id": "k1",
    }
    sse_c = {
        "x-amz-server-side-encryption-customer-algorithm": "AES256",
        "x-amz-server-side-encryption-customer-key": key_b64,
        "x-amz-server-side-encryption-customer-key-md5": key_md5,
    }
    # SSE-C goes on the upload and again on every part (and the completion).
    assert Encryption("SSE-C", sse_c_key=key).object_headers() == sse_c
    assert Encryption("SSE-C", sse_c_key=key).part_headers() == sse_c
    assert Encryption("SSE-S3").part_headers() == {}
    assert Encryption("SSE-KMS", kms_key_id="k1").part_headers() == {}
    assert "sse_c_key" not in repr(Encryption("SSE-C", sse_c_key=key))
    with pytest.raises(ValueError, match="32-byte"):
        Encryption("SSE-C", sse_c_key=b"short")
    with pytest.raises(ValueError, match="kms_key_id"):
        Encryption("SSE-S3", kms_key_id="k")


def test_token_bucket_goes_into_debt_and_repays_it() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=100, burst=100, clock=lambda: now[0])

    assert bucket.reserve(100) == 0.0
    assert bucket.reserve(50) == pytest.approx(0.5)
    now[0] = 1.5  # 150 tokens refilled, capped at the burst
    assert bucket.reserve(100) == 0.0


def test_read_ahead_refuses_what_does_not_fit_and_takes_again_once_given_back() -> None:
    budget = ReadAhead(limit=20)
    assert budget.try_take(8)
    assert budget.try_take(8)
    assert not budget.try_take(8), "24 bytes would exceed the limit of 20"
    assert budget.held == 16
    budget.give(8)
    assert budget.try_take(12)
    assert (budget.held, budget.peak) == (20, 20)


async def test_run_bounded_keeps_order_and_limits_concurrency() -> None:
    running = 0
    peak = 0

    async def work(index: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        # Work of uneven length, in turns of the loop rather than time: items finish out of
        # order the same way on any machine.
        for _ in range(index % 3):
            await asyncio.sleep(0)
        running -= 1
        return index * 10

    assert await run_bounded(20, 4, work) == [i * 10 for i in range(20)]
    assert peak == 4
    assert await run_bounded(0, 4, work) == []


async def test_run_bounded_raises_the_first_failure_itself_and_cancels_the_rest() -> None:
    cancelled = []

    async def work(index: int) -> int:
        if index == 1:
            raise KeyError("boom")
        try:
            await asyncio.Event().wait()  # busy until cancelled
        except asyncio.CancelledError:
            cancelled.append(index)
            raise
        return index

    with pytest.raises(KeyError, match="boom"):
        await run_bounded(5, 3, work)
    assert sorted(cancelled) == [0, 2]
