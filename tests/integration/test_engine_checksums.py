"""`verify.mode: checksum` with the checksums the stores keep (S3 additional checksums).

Each test runs on moto and on MinIO behind the fault proxy, which counts what objmig asked
for: the point of a stored checksum is that no object needs reading to prove its copy.
"""

from __future__ import annotations

import base64

import pytest

from objmig.ledger import Ledger, ObjectState
from objmig.storage.endpoint import Endpoint
from tests.fixtures.s3 import S3Seeder
from tests.integration.engine_support import migration, rows_of, run, sha256_of
from tests.support.s3proxy import RewriteHeaders, S3FaultProxy

KiB = 1024


async def test_server_side_copies_are_proven_by_stored_checksums_without_reading_the_copy(
    ledger: Ledger, backend_seed: S3Seeder, backend_proxy: S3FaultProxy, backend_via_proxy: Endpoint
) -> None:
    source = await backend_seed.bucket()
    target = await backend_seed.bucket()
    sha = await backend_seed.put_object(source, "sha", 64 * KiB, ChecksumAlgorithm="SHA256")
    crc = await backend_seed.put_object(source, "crc", 64 * KiB, ChecksumAlgorithm="CRC32")
    plain = await backend_seed.put_object(source, "plain", 64 * KiB)
    resource = migration(
        backend_via_proxy, source, target, copy={"mode": "serverSide"}, verify={"mode": "checksum"}
    )

    result = await run(ledger, resource, backend_via_proxy)

    assert result.outcome == "cut-over", [(o.key, o.last_error) for o in result.status.objects]
    rows = await rows_of(ledger)
    assert {row.state for row in rows.values()} == {ObjectState.VERIFIED}
    # The store computed the source's own algorithm for the copy; the two kept values
    # proved it. A source keeping none had SHA-256 computed for the copy: one read of the
    # source matched it.
    assert rows["sha"].source_checksum == rows["sha"].target_checksum == f"sha256:{sha.sha256}"
    assert rows["crc"].source_checksum == rows["crc"].target_checksum
    assert (rows["crc"].target_checksum or "").startswith("crc32:")
    assert rows["plain"].target_checksum == f"sha256:{plain.sha256}"
    assert backend_proxy.object_reads(target) == {}
    assert backend_proxy.object_reads(source) == {"plain": 1}
    assert crc.sha256 == await sha256_of(backend_seed.client, target, "crc")


async def test_streamed_small_objects_send_their_sha256_and_are_not_read_back(
    ledger: Ledger, backend_seed: S3Seeder, backend_proxy: S3FaultProxy, backend_via_proxy: Endpoint
) -> None:
    source = await backend_seed.bucket()
    target = await backend_seed.bucket()
    seeded = [await backend_seed.put_object(source, f"k{i}", (i + 1) * 40 * KiB) for i in range(3)]
    resource = migration(
        backend_via_proxy, source, target, copy={"mode": "stream"}, verify={"mode": "checksum"}
    )

    result = await run(ledger, resource, backend_via_proxy)

    assert result.outcome == "cut-over", [(o.key, o.last_error) for o in result.status.objects]
    rows = await rows_of(ledger)
    for obj in seeded:
        row = rows[obj.key]
        assert row.source_checksum == row.target_checksum == f"sha256:{obj.sha256}"
        # The store keeps what it checked the upload against.
        head = await backend_seed.client.head_object(
            Bucket=target, Key=obj.key, ChecksumMode="ENABLED"
        )
        assert base64.b64decode(head["ChecksumSHA256"]).hex() == obj.sha256
    # Each object read once, by its copy; the copies are not read back.
    assert backend_proxy.object_reads(source) == {obj.key: 1 for obj in seeded}
    assert backend_proxy.object_reads(target) == {}


@pytest.mark.parametrize("mode", ["stream", "serverSide"])
async def test_a_stored_checksum_that_differs_fails_verification(
    ledger: Ledger,
    backend_seed: S3Seeder,
    backend_proxy: S3FaultProxy,
    backend_via_proxy: Endpoint,
    mode: str,
) -> None:
    source = await backend_seed.bucket()
    target = await backend_seed.bucket()
    await backend_seed.put_object(source, "k", 10 * KiB, ChecksumAlgorithm="SHA256")
    wrong = base64.b64encode(bytes(32)).decode()
    backend_proxy.add_rule(
        RewriteHeaders({"x-amz-checksum-sha256": wrong}), method="HEAD", bucket=target
    )
    resource = migration(
        backend_via_proxy, source, target, copy={"mode": mode}, verify={"mode": "checksum"}
    )

    result = await run(ledger, resource, backend_via_proxy)

    assert result.outcome != "cut-over"
    row = (await rows_of(ledger))["k"]
    assert row.state is ObjectState.FAILED
    assert row.error_code == "ChecksumMismatch"
    assert "SHA256 of target differs from source" in (row.last_error or "")
