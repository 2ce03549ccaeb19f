"""A store that lacks part of S3, in the operator: the aspect is learned once by the worker
pods, costs that aspect only, and shows as the `Degraded` condition and in the status's
verification counts, as it does for `objmig run` (tests/integration/test_s3_compat.py).

The source answers as s3proxy does (501 to HEAD `?partNumber` and to GetObjectAttributes),
through the fault proxy in front of moto: no server of the suite lacks part sizes itself.
"""

from __future__ import annotations

import pytest
from types_aiobotocore_s3 import S3Client

from objmig.local.s3server import LocalS3Server
from tests.fixtures.operator import OperatorProcess
from tests.fixtures.s3 import S3Seeder
from tests.k8s.test_operator import (
    apply_migration,
    condition,
    create_secret,
    listing,
    moto_keys,
    seed_many,
    wait_cut_over,
)
from tests.support.cluster import ControlPlane
from tests.support.s3proxy import Fail, S3FaultProxy

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

KiB = 1024


async def test_a_source_that_tells_no_part_sizes_is_degraded_not_failed(
    k8s_cluster: ControlPlane,
    k8s_namespace: str,
    objmig_operator: OperatorProcess,
    s3_server: LocalS3Server,
    s3_seed: S3Seeder,
    s3_client: S3Client,
) -> None:
    ns, name = k8s_namespace, "no-part-sizes"
    source, target = await s3_seed.bucket(), await s3_seed.bucket()
    expected = await seed_many(s3_seed, source, (f"small/{i}" for i in range(5)), 100)
    uneven = await s3_seed.put_multipart(source, "uneven", [8 * KiB + 1_001, 8 * KiB, 777])
    create_secret(k8s_cluster, ns, *moto_keys(s3_server))

    with S3FaultProxy(s3_server.endpoint_url) as proxy:
        proxy.add_rule(Fail(501, "NotImplemented"), method="HEAD", query={"partNumber": None})
        proxy.add_rule(Fail(501, "NotImplemented"), method="GET", query={"attributes": None})
        apply_migration(
            k8s_cluster, ns, name, proxy.endpoint_url, source, target,
            target_endpoint=s3_server.endpoint_url, copy={"mode": "stream"},
            verify={"mode": "etag"},
        )  # fmt: skip
        done = wait_cut_over(k8s_cluster, ns, name, timeout=240)
        reads = proxy.object_reads(source)

    # Every object arrived; the uneven one in equal parts, so under another ETag.
    copied = await listing(s3_client, target)
    assert copied.keys() == {*expected, uneven.key}
    for key, etag in expected.items():
        assert copied[key] == etag, key
    body = await (await s3_client.get_object(Bucket=target, Key=uneven.key))["Body"].read()
    assert len(body) == 8 * KiB + 1_001 + 8 * KiB + 777
    assert copied[uneven.key] != uneven.etag, "equal parts: the ETag cannot prove this copy"
    assert reads[uneven.key] == 1, "the source read once: its SHA-256 taken as it was copied"

    status = done["status"]
    assert status["verification"]["etagUnproven"] == 1, status["verification"]
    assert status["verification"]["etagUnprovenBy"] == {"sha256": 1}
    degraded = condition(done, "Degraded")
    assert degraded["status"] == "True", degraded
    assert degraded["reason"] == "StoreFeatureMissing"
    assert f"source {proxy.endpoint_url}" in degraded["message"]
    assert "no partSizes" in degraded["message"]
    assert "\n" not in degraded["message"]
