"""The operator with the new stores: several buckets to a directory the worker pods mount
(a PersistentVolumeClaim), a target filesystem that fills up (TargetSpaceLow in ``kubectl
get`` and Events, then resumed), a cleanup of one bucket, and a content-addressed layout
with group manifests written by the audit Job.

The operator runs as a process against the test control plane; worker pods run through
the pod runner, where a volume is the directory its mountPath names on this machine (the
claim must exist, as for a kubelet). The real node's test of a mounted volume is
``tests/k8s/test_node_operator.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from types_aiobotocore_s3 import S3Client

from objmig.local.s3server import LocalS3Server
from tests.fixtures.operator import OperatorProcess
from tests.fixtures.s3 import S3Seeder
from tests.integration.directory_support import files_of, grow, small_filesystem
from tests.k8s.test_operator import (
    condition,
    create_secret,
    jobs_of,
    listing,
    moto_keys,
    wait_cut_over,
    wait_for,
)
from tests.support.cluster import ControlPlane, wait_until

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

KiB = 1024
MiB = 1024 * KiB


def _apply(
    cluster: ControlPlane, namespace: str, kind: str, name: str, spec: dict[str, Any]
) -> None:
    cluster.apply_yaml(
        {
            "apiVersion": "objmig.dev/v1alpha1",
            "kind": kind,
            "metadata": {"name": name},
            "spec": spec,
        },
        namespace=namespace,
    )


def _claim(cluster: ControlPlane, namespace: str, name: str) -> None:
    cluster.apply_yaml(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
        namespace=namespace,
    )


def _source(server: LocalS3Server, **where: Any) -> dict[str, Any]:
    return {
        "endpoint": server.endpoint_url,
        "addressingStyle": "path",
        "credentialsSecretRef": {"name": "s3-creds"},
        **where,
    }


async def test_buckets_to_a_mounted_directory_pause_when_it_fills_and_one_bucket_is_cleaned(
    k8s_cluster: ControlPlane,
    k8s_namespace: str,
    objmig_operator: OperatorProcess,
    s3_server: LocalS3Server,
    s3_seed: S3Seeder,
    s3_client: S3Client,
    tmp_path: Path,
) -> None:
    ns, name = k8s_namespace, "backup"
    account = f"op{uuid.uuid4().hex[:8]}"
    sha: dict[str, str] = {}
    for bucket, count in (("alpha", 6), ("beta", 4), ("skip", 2)):
        full = f"{account}-{bucket}"
        await s3_seed.client.create_bucket(Bucket=full)
        s3_seed.buckets.append(full)
        for i in range(count):
            obj = await s3_seed.put_object(full, f"d/{i}", 1 * MiB)
            sha[f"{full}/d/{i}"] = obj.sha256
    create_secret(k8s_cluster, ns, *moto_keys(s3_server))
    _claim(k8s_cluster, ns, "backup-volume")
    with small_filesystem(tmp_path / "volume", "8m") as volume:
        _apply(
            k8s_cluster,
            ns,
            "ObjectMigration",
            name,
            {
                "source": _source(
                    s3_server,
                    buckets={"include": [f"{account}-*"], "exclude": [f"{account}-skip"]},
                ),
                "target": {
                    "filesystem": {
                        "path": f"{volume}/{{bucket}}",
                        "claimName": "backup-volume",
                        "minFreeSpace": "2Mi",
                    }
                },
                "copy": {"concurrency": 2},
                "retry": {"attempts": 2, "backoff": {"initial": "50ms", "max": "200ms"}},
            },
        )
        paused = wait_for(
            k8s_cluster, ns, name,
            lambda r: condition(r, "Paused").get("reason") == "TargetSpaceLow",
            what="Paused TargetSpaceLow", timeout=180, operator=objmig_operator,
        )  # fmt: skip
        assert paused["status"]["phase"] == "Paused"
        assert condition(paused, "TargetSpaceLow")["status"] == "True"
        table = k8s_cluster.kubectl("get", "om", name, "-n", ns).stdout
        assert "TargetSpaceLow" in table.splitlines()[1], table
        statvfs = os.statvfs(volume)
        assert statvfs.f_bavail * statvfs.f_frsize >= 2 * MiB  # it stopped before the disk filled
        # The copy Job's pods mount the claim where the spec says, group-writable.
        copy_job = next(j for j in jobs_of(k8s_cluster, ns) if "-copy-" in j["metadata"]["name"])
        pod = copy_job["spec"]["template"]["spec"]
        # (The API server leaves out readOnly: false.)
        [claim] = pod["volumes"]
        assert claim["name"] == "target"
        assert claim["persistentVolumeClaim"]["claimName"] == "backup-volume"
        assert not claim["persistentVolumeClaim"].get("readOnly")
        [mount] = pod["containers"][0]["volumeMounts"]
        assert (mount["name"], mount["mountPath"]) == ("target", str(volume))
        assert not mount.get("readOnly")
        assert pod["securityContext"]["fsGroup"] == 10001

        wait_until(
            lambda: any(
                e.get("reason") == "TargetSpaceLow"
                for e in k8s_cluster.kubectl_json("get", "events", "-n", ns)["items"]
            ),
            timeout=30,
            what="a TargetSpaceLow Event",
        )
        grow(volume, "64m")
        done = wait_cut_over(k8s_cluster, ns, name, timeout=240)
        status = done["status"]
        assert status["health"]["summary"] == "Healthy"
        on_disk = files_of(volume)
        wanted = {k: v for k, v in sha.items() if "-skip/" not in k}
        assert {k: hashlib.sha256(v).hexdigest() for k, v in on_disk.items()} == wanted
        assert status["verification"]["auditedAt"]
        assert any("-audit-" in j["metadata"]["name"] for j in jobs_of(k8s_cluster, ns))
        buckets = {b["name"]: b for b in status["buckets"]}
        assert {n: b["verified"] for n, b in buckets.items()} == {
            f"{account}-alpha": 6,
            f"{account}-beta": 4,
        }

        _apply(
            k8s_cluster,
            ns,
            "MigrationCleanup",
            "alpha-source",
            {
                "migrationRef": {"name": name},
                "bucket": f"{account}-alpha",
                "gracePeriod": "0s",
                "minAge": "0s",
                "approval": {"digest": buckets[f"{account}-alpha"]["digest"]},
            },
        )
        k8s_cluster.kubectl(
            "wait", "--for=condition=Complete", "migrationcleanups/alpha-source", "-n", ns,
            "--timeout=120s", timeout=135,
        )  # fmt: skip
        cleaned = k8s_cluster.kubectl_json("get", "migrationcleanups", "alpha-source", "-n", ns)
        assert cleaned["status"]["counts"]["deleted"] == 6
        assert await listing(s3_client, f"{account}-alpha") == {}
        assert len(await listing(s3_client, f"{account}-beta")) == 4
        assert len(await listing(s3_client, f"{account}-skip")) == 2
        assert set(files_of(volume)) == set(wanted)


async def test_a_content_addressed_layout_with_manifests_through_the_operator(
    k8s_cluster: ControlPlane,
    k8s_namespace: str,
    objmig_operator: OperatorProcess,
    s3_server: LocalS3Server,
    s3_seed: S3Seeder,
    s3_client: S3Client,
) -> None:
    ns, name = k8s_namespace, "cas"
    packages, store = await s3_seed.bucket(), await s3_seed.bucket()
    for g in range(5):
        for j in range(4):
            # Files 0-2 are the same in every package, file 3 its own.
            seed = f"common-{j}" if j < 3 else f"own-{g}"
            await s3_seed.put_object(packages, f"pkg-{g}/f{j}", 3 * KiB, seed=seed)
    create_secret(k8s_cluster, ns, *moto_keys(s3_server))
    _apply(
        k8s_cluster,
        ns,
        "ObjectMigration",
        name,
        {
            "source": _source(s3_server, bucket=packages),
            "target": _source(s3_server, bucket=store, keyTemplate="objects/{sha256:2}/{sha256}"),
            "groups": {"manifestKey": "packages/{group}.json"},
            "workers": {"parallelism": 2},
        },
    )
    done = wait_cut_over(k8s_cluster, ns, name, timeout=240)
    status = done["status"]
    assert status["content"] == {
        "processed": 20,
        "contents": 3 + 5,
        "deduplicated": 20 - 8,
        "bytesSaved": (20 - 8) * 3 * KiB,
    }
    assert status["groups"]["groups"] == status["groups"]["manifestsWritten"] == 5
    stored = await listing(s3_client, store)
    assert sum(key.startswith("objects/") for key in stored) == 8
    manifest = json.loads(
        await (await s3_client.get_object(Bucket=store, Key="packages/pkg-2.json"))["Body"].read()
    )
    assert sorted(m["path"] for m in manifest["members"]) == ["f0", "f1", "f2", "f3"]
    assert any("-audit-" in j["metadata"]["name"] for j in jobs_of(k8s_cluster, ns))
