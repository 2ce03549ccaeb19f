"""A store behind a private CA, in the operator: refused in one line until the spec names
the CA, then migrated with every request trusting it (worker pods get the bundle from the
ConfigMap through their environment). The source is immutable, so its CA is given from the
start; the target's is added once the refusal was seen."""

from __future__ import annotations

import json

import pytest

from objmig.local.s3server import ChildServer
from objmig.storage.sdk import open_client
from tests.fixtures.operator import OperatorProcess
from tests.fixtures.s3 import S3Seeder
from tests.k8s.test_operator import (
    apply_config_map,
    apply_migration,
    condition,
    create_secret,
    jobs_of,
    listing,
    patch_spec,
    seed_many,
    wait_cut_over,
    wait_for,
)
from tests.support.cluster import ControlPlane

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

CA = {"configMapKeyRef": {"name": "corp-ca", "key": "ca.crt"}}


async def test_an_untrusted_certificate_fails_in_one_line_until_the_spec_names_the_ca(
    k8s_cluster: ControlPlane,
    k8s_namespace: str,
    objmig_operator: OperatorProcess,
    tls_minio_server: ChildServer,
) -> None:
    ns, name = k8s_namespace, "private-ca"
    keys = tls_minio_server.credentials
    url = tls_minio_server.endpoint_url
    # The same server under another name (its certificate has both): two endpoints, so
    # the target has a client (and a trust) of its own.
    target_url = url.replace("127.0.0.1", "localhost")
    async with open_client(tls_minio_server.endpoint(), max_connections=4) as client:
        seed = S3Seeder(client, None)  # type: ignore[arg-type]
        try:
            source, target = await seed.bucket(versioned=True), await seed.bucket()
            expected = await seed_many(seed, source, (f"k/{i}" for i in range(6)), 100)
            create_secret(k8s_cluster, ns, keys.access_key_id, keys.secret_access_key)
            assert tls_minio_server.ca_bundle is not None
            apply_config_map(k8s_cluster, ns, "corp-ca", {"ca.crt": tls_minio_server.ca_bundle})

            # Every version of every key: the version listing goes through the SDK client,
            # the copies through objmig's own; both must trust the CA.
            apply_migration(
                k8s_cluster, ns, name, url, source, target, target_endpoint=target_url,
                source_extra={"caBundle": CA}, selection={"allVersions": True},
            )  # fmt: skip
            failed = wait_for(
                k8s_cluster, ns, name, lambda r: r.get("status", {}).get("phase") == "Failed",
                what="phase Failed", operator=objmig_operator,
            )  # fmt: skip
            problem = condition(failed, "Failed")
            assert problem["reason"] == "S3UntrustedCertificate", problem
            assert "certificate is not trusted" in problem["message"]
            assert "caBundle" in problem["message"]
            assert "\n" not in problem["message"]
            assert len(jobs_of(k8s_cluster, ns)) == 1, "one Job, no crash loop"

            assert "target s3 bucket" in problem["message"]
            patch_spec(k8s_cluster, ns, name, {"target": {"caBundle": CA}})
            done = wait_cut_over(k8s_cluster, ns, name, timeout=240)
            assert await listing(client, target) == expected
            degraded = condition(done, "Degraded")
            assert degraded["status"] == "False", degraded
            assert "BEGIN CERTIFICATE" not in json.dumps(done.get("status", {}))
        finally:
            await seed.cleanup()
