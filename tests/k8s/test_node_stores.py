"""A directory target on the real node: worker pods of the objmig image, run by kubelet,
containerd and runc, mount a PersistentVolumeClaim (bound to a hostPath PersistentVolume)
and write every bucket of an account into it, one directory per bucket.

What the pod runner cannot show: the kubelet mounting the claim where the spec says, the
image's user (10001) writing there through the group the pod gets (fsGroup), files that the
host then reads byte for byte, and the audit Job listing the same volume. See
tests/k8s/test_node_operator.py for the release this module installs.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

import pytest
from types_aiobotocore_s3 import S3Client

from objmig.local.s3server import LocalMinio
from tests.fixtures.s3 import S3Seeder
from tests.integration.directory_support import files_of
from tests.k8s.test_node_operator import (
    Release,
    minio_setup,
    on_minio,
    release,  # noqa: F401 - the module's fixture
)
from tests.k8s.test_operator import wait_cut_over

pytestmark = [pytest.mark.k8s, pytest.mark.node, pytest.mark.slow]

KiB = 1024
MiB = 1024 * KiB
WORKER_UID = 10001


def _volume(installed: Release, claim: str, host_dir: Path) -> None:
    """A hostPath PersistentVolume bound to `claim` in the apps namespace, as an
    administrator would make one for a node's disk."""
    name = f"{claim}-{secrets.token_hex(3)}"
    installed.cluster.apply_yaml(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": str(host_dir), "type": "Directory"},
                "claimRef": {"namespace": installed.apps, "name": claim},
            },
        }
    )
    installed.cluster.apply_yaml(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "",
                "volumeName": name,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
        namespace=installed.apps,
    )


@on_minio
async def test_buckets_to_a_claim_the_kubelet_mounts_in_the_worker_pods(
    release: Release,  # noqa: F811 - the fixture imported above
    minio_server: LocalMinio,
    backend_seed: S3Seeder,
    backend_client: S3Client,
    tmp_path: Path,
) -> None:
    cluster, apps = release.cluster, release.apps
    endpoint = minio_setup(release, minio_server)
    account = f"node{secrets.token_hex(3)}"
    sha: dict[str, str] = {}
    for bucket, count in (("alpha", 4), ("beta", 3), ("skip", 2)):
        full = f"{account}-{bucket}"
        await backend_seed.client.create_bucket(Bucket=full)
        backend_seed.buckets.append(full)
        for i in range(count):
            # One multipart object per bucket: parts written by the pod, ETag in the index.
            size = 12 * MiB if i == 0 else 64 * KiB + i
            obj = await backend_seed.put_object(full, f"d/{i}.bin", size)
            sha[f"{full}/d/{i}.bin"] = obj.sha256
    # The volume's directory belongs to root, as a fresh disk does; the pod's group may
    # write it (what fsGroup gives a pod on a volume that supports it; for hostPath the
    # administrator sets it, as here).
    volume = tmp_path / "volume"
    volume.mkdir()
    os.chown(volume, 0, WORKER_UID)
    volume.chmod(0o2775)
    _volume(release, "backup-volume", volume)
    cluster.apply_yaml(
        {
            "apiVersion": "objmig.dev/v1alpha1",
            "kind": "ObjectMigration",
            "metadata": {"name": "backup"},
            "spec": {
                "source": {
                    "endpoint": endpoint,
                    "addressingStyle": "path",
                    "region": "us-east-1",
                    "credentialsSecretRef": {"name": "s3-creds"},
                    "buckets": {"include": [f"{account}-*"], "exclude": [f"{account}-skip"]},
                },
                "target": {
                    "filesystem": {
                        "path": "/backup/{bucket}",
                        "claimName": "backup-volume",
                        "minFreeSpace": "1Mi",
                    }
                },
                "retry": {"attempts": 2, "backoff": {"initial": "50ms", "max": "200ms"}},
            },
        },
        namespace=apps,
    )
    done = wait_cut_over(cluster, apps, "backup", timeout=300)

    on_disk = files_of(volume)
    wanted = {k: v for k, v in sha.items() if "-skip/" not in k}
    assert {k: hashlib.sha256(v).hexdigest() for k, v in on_disk.items()} == wanted
    # Written by the image's user, through the pod's mount, with the objects' mtimes.
    some = volume / f"{account}-alpha" / "d" / "0.bin"
    assert some.stat().st_uid == WORKER_UID
    assert (volume / ".objmig" / "index.jsonl").stat().st_uid == WORKER_UID
    status = done["status"]
    assert {b["name"]: b["verified"] for b in status["buckets"]} == {
        f"{account}-alpha": 4,
        f"{account}-beta": 3,
    }
    assert status["verification"]["auditedAt"]
    # Each stage ran as a pod on the node, with the claim mounted at /backup.
    pods = release.pods("objmig.dev/migration=backup", apps)
    stages = {p["metadata"]["labels"].get("objmig.dev/stage") for p in pods}
    assert {"copy", "audit"} <= stages, stages
    for pod in pods:
        assert pod["spec"]["nodeName"] == cluster.node_name
        [mount] = [m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["name"] == "target"]
        assert mount["mountPath"] == "/backup"
    assert sorted(await _buckets(backend_client, account)) == [
        f"{account}-alpha",
        f"{account}-beta",
        f"{account}-skip",
    ]


async def _buckets(client: S3Client, account: str) -> list[str]:
    """The source buckets are all still there: a backup deletes nothing."""
    answer = await client.list_buckets()
    return [b["Name"] for b in answer.get("Buckets", []) if b["Name"].startswith(account)]
