"""MigrationCleanup reconciled by the operator on a real control plane.

The per-object rules (source changed since verify, versioned sources, dry run, limit,
leftovers) are proven in-process in tests/integration/test_cleanup.py; here the same engine
runs as a cleanup Job, behind gates the operator reports as conditions.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from types_aiobotocore_s3 import S3Client

from objmig.ledger import Ledger, ObjectState
from objmig.local.s3server import LocalS3Server
from tests.fixtures.operator import OperatorProcess
from tests.fixtures.s3 import S3Seeder
from tests.k8s.test_operator import (
    apply_migration,
    condition,
    create_secret,
    get_om,
    ledger_rows,
    listing,
    moto_keys,
    patch_spec,
    wait_cut_over,
)
from tests.support.cluster import ControlPlane, wait_until

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

CLEANUPS = "migrationcleanups.objmig.dev"


def apply_cleanup(cluster: ControlPlane, namespace: str, name: str, **spec: Any) -> None:
    cluster.apply_yaml(
        {
            "apiVersion": "objmig.dev/v1alpha1",
            "kind": "MigrationCleanup",
            "metadata": {"name": name},
            "spec": {"migrationRef": {"name": "m"}, **spec},
        },
        namespace=namespace,
    )


def get_mcl(cluster: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    return dict(cluster.kubectl_json("get", CLEANUPS, name, "-n", namespace))


async def _cut_over(
    cluster: ControlPlane,
    namespace: str,
    server: LocalS3Server,
    seed: S3Seeder,
    count: int,
) -> tuple[str, str, str]:
    source = await seed.bucket()
    target = await seed.bucket()
    for i in range(count):
        await seed.put_object(source, f"data/{i:03d}", 512)
    await seed.put_object(source, "keep/me", 512)
    create_secret(cluster, namespace, *moto_keys(server))
    apply_migration(
        cluster,
        namespace,
        "m",
        server.endpoint_url,
        source,
        target,
        selection={"include": ["data/**"]},
    )
    migration = wait_cut_over(cluster, namespace, "m")
    digest = migration["status"]["verification"]["digest"]
    assert digest.startswith("sha256:")
    return source, target, digest


async def test_cleanup_reports_gates_then_deletes_exactly_the_migrated_objects(
    k8s_cluster: ControlPlane,
    k8s_namespace: str,
    objmig_operator: OperatorProcess,
    s3_server: LocalS3Server,
    s3_seed: S3Seeder,
    s3_client: S3Client,
    ledger: Ledger,
) -> None:
    source, target, digest = await _cut_over(k8s_cluster, k8s_namespace, s3_server, s3_seed, 20)
    wrong = "sha256:" + "0" * 64
    apply_cleanup(
        k8s_cluster, k8s_namespace, "c", gracePeriod="0s", minAge="0s", approval={"digest": wrong}
    )

    blocked = wait_until(
        lambda: (
            condition(get_mcl(k8s_cluster, k8s_namespace, "c"), "GatesPassed").get("reason")
            == "ApprovalDigestMismatch"
        ),
        timeout=60,
        what="the cleanup to report the digest mismatch",
    )
    assert blocked
    mcl = get_mcl(k8s_cluster, k8s_namespace, "c")
    assert mcl["status"]["phase"] == "Blocked"
    assert wrong in condition(mcl, "GatesPassed")["message"]
    assert len(await listing(s3_client, source)) == 21
    jobs = k8s_cluster.kubectl_json("get", "jobs", "-n", k8s_namespace)["items"]
    assert not [j for j in jobs if "cleanup" in j["metadata"]["name"]]

    k8s_cluster.kubectl(
        "patch", CLEANUPS, "c", "-n", k8s_namespace, "--type=merge",
        "-p", json.dumps({"spec": {"approval": {"digest": digest}}}),
    )  # fmt: skip
    k8s_cluster.kubectl(
        "wait", "--for=condition=Complete", f"{CLEANUPS}/c", "-n", k8s_namespace,
        "--timeout=120s", timeout=135,
    )  # fmt: skip

    mcl = get_mcl(k8s_cluster, k8s_namespace, "c")
    assert mcl["status"]["phase"] == "Completed"
    assert mcl["status"]["counts"]["deleted"] == 20
    assert condition(mcl, "GatesPassed")["status"] == "True"
    assert set(await listing(s3_client, source)) == {"keep/me"}
    assert len(await listing(s3_client, target)) == 20
    rows = await ledger_rows(ledger, k8s_namespace, "m")
    assert {r.state for r in rows} == {ObjectState.DELETED}

    # Rollback is refused now, and the migration says why.
    patch_spec(k8s_cluster, k8s_namespace, "m", {"cutover": {"rollback": True}})
    wait_until(
        lambda: (
            "rollback"
            in (
                get_om(k8s_cluster, k8s_namespace, "m")["status"]["cutover"].get("rollbackBlocked")
                or ""
            )
        ),
        timeout=60,
        what="the migration to say rollback is blocked",
    )
    assert condition(get_om(k8s_cluster, k8s_namespace, "m"), "CutOver")["status"] == "True"


async def test_cleanup_waits_for_the_grace_period_and_says_until_when(
    k8s_cluster: ControlPlane,
    k8s_namespace: str,
    objmig_operator: OperatorProcess,
    s3_server: LocalS3Server,
    s3_seed: S3Seeder,
    s3_client: S3Client,
) -> None:
    source, _, digest = await _cut_over(k8s_cluster, k8s_namespace, s3_server, s3_seed, 3)
    apply_cleanup(k8s_cluster, k8s_namespace, "c", gracePeriod="72h", approval={"digest": digest})

    wait_until(
        lambda: (
            condition(get_mcl(k8s_cluster, k8s_namespace, "c"), "GatesPassed").get("reason")
            == "GracePeriodNotElapsed"
        ),
        timeout=60,
        what="the grace period gate",
    )
    gate = condition(get_mcl(k8s_cluster, k8s_namespace, "c"), "GatesPassed")
    assert "of gracePeriod 72h left" in gate["message"]
    assert "deletions start at" in gate["message"]
    assert len(await listing(s3_client, source)) == 4
    events = k8s_cluster.kubectl_json("get", "events", "-n", k8s_namespace)["items"]
    assert any(e.get("reason") == "Blocked" for e in events)


async def test_a_dry_run_cleanup_made_real_runs_again_and_deletes(
    k8s_cluster: ControlPlane,
    k8s_namespace: str,
    objmig_operator: OperatorProcess,
    s3_server: LocalS3Server,
    s3_seed: S3Seeder,
    s3_client: S3Client,
) -> None:
    source, _, digest = await _cut_over(k8s_cluster, k8s_namespace, s3_server, s3_seed, 4)
    approved = {"gracePeriod": "0s", "minAge": "0s", "approval": {"digest": digest}}
    apply_cleanup(k8s_cluster, k8s_namespace, "c", dryRun=True, **approved)
    k8s_cluster.kubectl(
        "wait", "--for=condition=Complete", f"{CLEANUPS}/c", "-n", k8s_namespace,
        "--timeout=120s", timeout=135,
    )  # fmt: skip
    assert len(await listing(s3_client, source)) == 5

    k8s_cluster.kubectl(
        "patch", CLEANUPS, "c", "-n", k8s_namespace, "--type=merge",
        "-p", json.dumps({"spec": {"dryRun": False}}),
    )  # fmt: skip

    def real_pass_done() -> bool:
        mcl = get_mcl(k8s_cluster, k8s_namespace, "c")
        status = mcl.get("status", {})
        return (
            status.get("observedGeneration") == mcl["metadata"]["generation"]
            and status.get("phase") == "Completed"
        )

    wait_until(real_pass_done, timeout=120, what="the real pass to complete")
    assert set(await listing(s3_client, source)) == {"keep/me"}
    jobs = k8s_cluster.kubectl_json("get", "jobs", "-n", k8s_namespace)["items"]
    assert {"c-cleanup", "c-cleanup-p1"} <= {j["metadata"]["name"] for j in jobs}


async def test_a_cleanup_limited_to_some_objects_completes_and_says_what_it_left(
    k8s_cluster: ControlPlane,
    k8s_namespace: str,
    objmig_operator: OperatorProcess,
    s3_server: LocalS3Server,
    s3_seed: S3Seeder,
    s3_client: S3Client,
) -> None:
    """spec.limit ends a pass early: the cleanup is Complete, not Deleting for ever, and the
    status counts the objects the limit left for a later cleanup."""
    source, _, digest = await _cut_over(k8s_cluster, k8s_namespace, s3_server, s3_seed, 12)
    apply_cleanup(
        k8s_cluster,
        k8s_namespace,
        "limited",
        gracePeriod="0s",
        minAge="0s",
        limit=5,
        approval={"digest": digest},
    )
    k8s_cluster.kubectl(
        "wait", "--for=condition=Complete", f"{CLEANUPS}/limited", "-n", k8s_namespace,
        "--timeout=120s", timeout=135,
    )  # fmt: skip

    mcl = get_mcl(k8s_cluster, k8s_namespace, "limited")
    assert mcl["status"]["phase"] == "Completed"
    assert mcl["status"]["counts"]["deleted"] == 5
    assert mcl["status"]["counts"]["leftByLimit"] == 7
    remaining = set(await listing(s3_client, source))
    assert len(remaining) == 8, remaining
    assert "keep/me" in remaining
