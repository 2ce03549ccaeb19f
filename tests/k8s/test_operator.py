"""The operator on a real control plane: Jobs, status, cutover, pause, failure, clean-up.

Each test runs ``objmig operator`` as a process (``objmig_operator``) against the test
cluster, for its own namespace and ledger database; worker pods run as local processes
through the pod runner, against moto (or MinIO) and the test PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from types_aiobotocore_s3 import S3Client

from objmig.ledger import Ledger, ObjectRow, ObjectState
from objmig.local.postgres import EmbeddedPostgres
from objmig.local.s3server import LocalMinio, LocalS3Server
from objmig.storage.sdk import open_client
from objmig.storage.types import normalise_etag
from tests.fixtures.operator import OperatorProcess
from tests.fixtures.s3 import S3Seeder
from tests.support.catalog import catalog_action, catalog_database, catalog_rows, refuse_location
from tests.support.cluster import ControlPlane, wait_until
from tests.support.s3proxy import Fail, Hold, S3FaultProxy
from tests.support.seeded_moto import ObjectGroup, SeededMoto

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

KiB = 1024
SECRET = "s3-creds"
GROUP_PLURAL = "objectmigrations.objmig.dev"


# -- helpers -----------------------------------------------------------------------------------


def apply_object(
    cluster: ControlPlane, namespace: str, kind: str, name: str, field: str, data: dict[str, str]
) -> None:
    cluster.apply_yaml(
        {"apiVersion": "v1", "kind": kind, "metadata": {"name": name}, field: data},
        namespace=namespace,
    )


def apply_secret(cluster: ControlPlane, namespace: str, name: str, data: dict[str, str]) -> None:
    apply_object(cluster, namespace, "Secret", name, "stringData", data)


def apply_config_map(
    cluster: ControlPlane, namespace: str, name: str, data: dict[str, str]
) -> None:
    apply_object(cluster, namespace, "ConfigMap", name, "data", data)


def create_secret(
    cluster: ControlPlane, namespace: str, access_key: str, secret_key: str, name: str = SECRET
) -> None:
    apply_secret(
        cluster, namespace, name, {"accessKeyId": access_key, "secretAccessKey": secret_key}
    )


def apply_migration(
    cluster: ControlPlane,
    namespace: str,
    name: str,
    endpoint: str,
    source: str,
    target: str | None,
    *,
    target_endpoint: str | None = None,
    source_secret: str = SECRET,
    target_secret: str = SECRET,
    annotations: dict[str, str] | None = None,
    source_extra: dict[str, Any] | None = None,
    **spec: Any,
) -> None:
    """Apply an ObjectMigration between two buckets, with fast retries (``target`` None:
    none, as copy.mode none allows)."""
    side = {"addressingStyle": "path", "region": "us-east-1"}
    body: dict[str, Any] = {
        "source": {
            **side,
            "endpoint": endpoint,
            "bucket": source,
            "credentialsSecretRef": {"name": source_secret},
            **(source_extra or {}),
        },
        "target": {
            **side,
            "endpoint": target_endpoint or endpoint,
            "bucket": target,
            "credentialsSecretRef": {"name": target_secret},
        },
        "retry": {"attempts": 2, "backoff": {"initial": "50ms", "max": "200ms"}},
        **spec,
    }
    if target is None:
        del body["target"]
    metadata: dict[str, Any] = {"name": name}
    if annotations:
        metadata["annotations"] = annotations
    cluster.apply_yaml(
        {
            "apiVersion": "objmig.dev/v1alpha1",
            "kind": "ObjectMigration",
            "metadata": metadata,
            "spec": body,
        },
        namespace=namespace,
    )


def get_om(cluster: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    return dict(cluster.kubectl_json("get", GROUP_PLURAL, name, "-n", namespace))


def condition(resource: dict[str, Any], type_: str) -> dict[str, Any]:
    for item in resource.get("status", {}).get("conditions", []):
        if item["type"] == type_:
            return dict(item)
    return {}


def patch_spec(cluster: ControlPlane, namespace: str, name: str, spec: dict[str, Any]) -> None:
    cluster.kubectl(
        "patch", GROUP_PLURAL, name, "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": spec}),
    )  # fmt: skip


def wait_cut_over(
    cluster: ControlPlane, namespace: str, name: str, timeout: int = 180
) -> dict[str, Any]:
    """``kubectl wait --for=condition=CutOver``, as a user would."""
    cluster.kubectl(
        "wait", "--for=condition=CutOver", f"{GROUP_PLURAL}/{name}", "-n", namespace,
        f"--timeout={timeout}s", timeout=timeout + 15,
    )  # fmt: skip
    return get_om(cluster, namespace, name)


def wait_for(
    cluster: ControlPlane,
    namespace: str,
    name: str,
    predicate: Callable[[dict[str, Any]], Any],
    *,
    what: str,
    timeout: float = 120,
    operator: OperatorProcess | None = None,
) -> dict[str, Any]:
    """Poll the resource until ``predicate`` holds; the last status is in the error."""
    seen: dict[str, Any] = {}

    def check() -> Any:
        if operator is not None and not operator.alive():
            raise RuntimeError(f"the operator died:\n{operator.log_tail()}")
        seen.clear()
        seen.update(get_om(cluster, namespace, name))
        return predicate(seen)

    try:
        wait_until(check, timeout=timeout, interval=0.5, what=what)
    except TimeoutError as error:
        status = json.dumps(seen.get("status", {}), indent=1)[-3000:]
        raise AssertionError(f"{error}\nlast status: {status}") from None
    return seen


def wait_status_passes(
    operator: OperatorProcess, namespace: str, name: str, passes: int = 3
) -> None:
    """Wait until the operator has finished ``passes`` more reconcile passes of a migration.

    The positive event a test of "nothing happens" waits for: a pass running now may have
    read the world before the caller's moment, the next one did not, and its status patch
    is written before the one after it begins. After three, the status shows a pass that
    started after now, and an operator that were going to act on what it saw has acted.
    """

    def count() -> float:
        return operator.metric("objmig_reconciles_total", namespace=namespace, migration=name)

    start = count()
    wait_until(
        lambda: count() >= start + passes,
        timeout=60 + 10 * passes,
        what=f"{passes} more reconcile passes of {namespace}/{name}",
    )


def jobs_of(cluster: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    return list(cluster.kubectl_json("get", "jobs", "-n", namespace)["items"])


def pods_of(cluster: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    return list(cluster.kubectl_json("get", "pods", "-n", namespace)["items"])


async def seed_many(
    seed: S3Seeder, bucket: str, keys: Iterable[str], size: int, concurrency: int = 32
) -> dict[str, str]:
    """Put tiny objects concurrently; return key -> ETag."""
    limit = asyncio.Semaphore(concurrency)
    etags: dict[str, str] = {}

    async def put(key: str) -> None:
        async with limit:
            response = await seed.client.put_object(
                Bucket=bucket, Key=key, Body=key.encode().ljust(size, b".")
            )
            etags[key] = normalise_etag(response["ETag"])

    await asyncio.gather(*(put(key) for key in keys))
    return etags


async def listing(client: S3Client, bucket: str) -> dict[str, str]:
    """Every key of a bucket with its ETag."""
    found: dict[str, str] = {}
    paginator = client.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            found[item["Key"]] = normalise_etag(item["ETag"])
    return found


async def ledger_rows(ledger: Ledger, namespace: str, name: str) -> list[ObjectRow]:
    migration_id = await ledger.find_migration(f"{namespace}/{name}")
    assert migration_id is not None, f"no ledger entry for {namespace}/{name}"
    return [row async for row in ledger.iter_rows(migration_id)]


async def assert_all_verified(
    ledger: Ledger, namespace: str, name: str, expected: dict[str, str]
) -> None:
    rows = await ledger_rows(ledger, namespace, name)
    states = Counter(row.state for row in rows)
    assert states == {ObjectState.VERIFIED: len(expected)}, states
    assert {row.key for row in rows} == set(expected)


def moto_keys(server: LocalS3Server) -> tuple[str, str]:
    return server.credentials.access_key_id, server.credentials.secret_access_key


# -- tests -------------------------------------------------------------------------------------


async def test_migration_of_thousands_of_objects_cuts_over_with_identical_etags(
    k8s_cluster: ControlPlane,
    k8s_namespace: str,
    objmig_operator: OperatorProcess,
    s3_server: LocalS3Server,
    s3_seed: S3Seeder,
    s3_client: S3Client,
    ledger: Ledger,
) -> None:
    ns, name = k8s_namespace, "bulk"
    source, target = await s3_seed.bucket(), await s3_seed.bucket()
    expected = await seed_many(s3_seed, source, (f"small/{i:05d}" for i in range(2000)), 64)
    for i in range(3):
        big = await s3_seed.put_multipart(source, f"multi/{i}", [4 * KiB] * (3 + i) + [999])
        expected[big.key] = big.etag
    create_secret(k8s_cluster, ns, *moto_keys(s3_server))
    started = time.monotonic()

    apply_migration(k8s_cluster, ns, name, s3_server.endpoint_url, source, target)
    resource = wait_cut_over(k8s_cluster, ns, name, timeout=240)
    elapsed = time.monotonic() - started

    print(f"migration of {len(expected)} objects cut over in {elapsed:.1f}s")
    status = resource["status"]
    assert status["phase"] == "CutOver"
    assert status["progress"]["objects"]["succeeded"] == len(expected)
    assert status["verification"]["digest"].startswith("sha256:")
    assert await listing(s3_client, target) == expected
    assert all(etag.endswith(f"-{4 + i}") for i, etag in
               enumerate(expected[f"multi/{i}"] for i in range(3)))  # fmt: skip
    await assert_all_verified(ledger, ns, name, expected)


async def test_manual_cutover_waits_for_approval_then_rolls_back_the_config_map(
    k8s_cluster: ControlPlane,
    k8s_namespace: str,
    objmig_operator: OperatorProcess,
    s3_server: LocalS3Server,
    s3_seed: S3Seeder,
    s3_client: S3Client,
) -> None:
    ns, name = k8s_namespace, "manual"
    source, target = await s3_seed.bucket(), await s3_seed.bucket()
    expected = await seed_many(s3_seed, source, (f"k/{i}" for i in range(20)), 100)
    create_secret(k8s_cluster, ns, *moto_keys(s3_server))
    apply_config_map(k8s_cluster, ns, "app", {"BUCKET": source, "UNRELATED": "kept"})
    cutover = {
        "policy": "Manual",
        "configMapRef": {"name": "app", "data": {"BUCKET": target, "ENDPOINT": "new"}},
    }

    apply_migration(k8s_cluster, ns, name, s3_server.endpoint_url, source, target, cutover=cutover)
    waiting = wait_for(
        k8s_cluster, ns, name,
        lambda r: condition(r, "CutoverReady").get("reason") == "AwaitingApproval",
        what="CutoverReady=False AwaitingApproval", operator=objmig_operator,
    )  # fmt: skip

    ready = condition(waiting, "CutoverReady")
    assert ready["status"] == "False"
    assert "spec.cutover.approved" in ready["message"]
    assert waiting["status"]["phase"] == "AwaitingCutover"
    assert condition(waiting, "CutOver")["status"] == "False"
    assert await listing(s3_client, target) == expected
    config = k8s_cluster.kubectl_json("get", "configmap", "app", "-n", ns)
    assert config["data"] == {"BUCKET": source, "UNRELATED": "kept"}, "changed before approval"

    patch_spec(k8s_cluster, ns, name, {"cutover": {"approved": True}})
    done = wait_cut_over(k8s_cluster, ns, name, timeout=60)

    config = k8s_cluster.kubectl_json("get", "configmap", "app", "-n", ns)
    assert config["data"] == {"BUCKET": target, "ENDPOINT": "new", "UNRELATED": "kept"}
    record = done["status"]["cutover"]
    # ENDPOINT was absent: its null marker cannot survive a merge patch, so the status shows
    # only the value that existed; rollback works from the ledger's copy (checked below).
    assert record["previousConfigMapData"] == {"BUCKET": source}
    assert done["status"]["phase"] == "CutOver"

    patch_spec(k8s_cluster, ns, name, {"cutover": {"rollback": True}})
    rolled = wait_for(
        k8s_cluster, ns, name,
        lambda r: condition(r, "CutOver").get("reason") == "RolledBack",
        what="CutOver=False RolledBack", timeout=60, operator=objmig_operator,
    )  # fmt: skip

    assert condition(rolled, "CutOver")["status"] == "False"
    assert rolled["status"]["cutover"]["rolledBackAt"]
    config = k8s_cluster.kubectl_json("get", "configmap", "app", "-n", ns)
    assert config["data"] == {"BUCKET": source, "UNRELATED": "kept"}
    # Still approved, still asked to roll back: it must stay rolled back, not flap.
    wait_status_passes(objmig_operator, ns, name)
    again = get_om(k8s_cluster, ns, name)
    assert condition(again, "CutOver")["reason"] == "RolledBack"
    assert k8s_cluster.kubectl_json("get", "configmap", "app", "-n", ns)["data"] == {
        "BUCKET": source,
        "UNRELATED": "kept",
    }

    # Withdrawing the rollback (still approved) cuts over once more.
    patch_spec(k8s_cluster, ns, name, {"cutover": {"rollback": False}})
    again = wait_cut_over(k8s_cluster, ns, name, timeout=60)
    assert again["status"]["cutover"]["previousConfigMapData"] == {"BUCKET": source}
    config = k8s_cluster.kubectl_json("get", "configmap", "app", "-n", ns)
    assert config["data"] == {"BUCKET": target, "ENDPOINT": "new", "UNRELATED": "kept"}
    assert "failed with an exception" not in objmig_operator.log_text()


async def test_suspend_stops_every_worker_and_resume_finishes(
    k8s_cluster: ControlPlane,
    k8s_namespace: str,
    objmig_operator: OperatorProcess,
    s3_server: LocalS3Server,
    s3_proxy: S3FaultProxy,
    s3_seed: S3Seeder,
    s3_client: S3Client,
    ledger: Ledger,
) -> None:
    ns, name = k8s_namespace, "pausable"
    source, target = await s3_seed.bucket(), await s3_seed.bucket()
    expected = await seed_many(s3_seed, source, (f"k/{i:04d}" for i in range(300)), 100)
    create_secret(k8s_cluster, ns, *moto_keys(s3_server))
    # The reads of the last hundred objects wait at the proxy, so the copy is still running
    # when we suspend, however fast the machine. The copy streams: each object is then one
    # GET (a server-side copy reads the source only through the few batched listings).
    s3_proxy.add_rule(Hold(), method="GET", bucket=source, key="k/02*")

    apply_migration(
        k8s_cluster, ns, name, s3_proxy.endpoint_url, source, target,
        copy={"concurrency": 4, "mode": "stream"},
    )  # fmt: skip
    wait_for(
        k8s_cluster, ns, name,
        lambda r: r.get("status", {}).get("progress", {}).get("objects", {}).get("succeeded"),
        what="copying under way", operator=objmig_operator,
    )  # fmt: skip
    patch_spec(k8s_cluster, ns, name, {"suspend": True})
    paused = wait_for(
        k8s_cluster, ns, name,
        lambda r: condition(r, "Paused").get("status") == "True",
        what="Paused=True", timeout=30, operator=objmig_operator,
    )  # fmt: skip

    assert condition(paused, "Paused")["reason"] == "Suspended"
    assert paused["status"]["phase"] == "Paused"

    def all_stopped() -> bool:
        jobs = jobs_of(k8s_cluster, ns)
        unfinished = [
            j for j in jobs
            if not any(c["type"] in ("Complete", "Failed") and c["status"] == "True"
                       for c in j.get("status", {}).get("conditions", []))
        ]  # fmt: skip
        running = [p for p in pods_of(k8s_cluster, ns) if p["status"].get("phase") in
                   ("Pending", "Running")]  # fmt: skip
        return all(j["spec"].get("suspend") for j in unfinished) and not running

    wait_until(all_stopped, timeout=60, what="every Job suspended and no worker pod running")
    # Results the workers recorded while stopping reach the status with the operator's next
    # status passes: no worker is left to record more, so after those the count is final.
    wait_status_passes(objmig_operator, ns, name)
    progress = get_om(k8s_cluster, ns, name)["status"]["progress"]["objects"]
    assert progress["succeeded"] < len(expected), "finished before the suspension took hold"
    # Passes of the operator while suspended start nothing and copy nothing.
    wait_status_passes(objmig_operator, ns, name)
    assert all_stopped()
    still = get_om(k8s_cluster, ns, name)["status"]["progress"]["objects"]
    assert still["succeeded"] == progress["succeeded"], "objects copied while suspended"

    s3_proxy.clear()
    patch_spec(k8s_cluster, ns, name, {"suspend": False})
    done = wait_cut_over(k8s_cluster, ns, name, timeout=180)

    assert condition(done, "Paused")["status"] == "False"
    # Resuming restarted the same Jobs: the suspension neither completed nor failed indexes.
    # (Round 1 is the re-scan every cutover is preceded by.)
    jobs = jobs_of(k8s_cluster, ns)
    assert sorted(j["metadata"]["name"] for j in jobs) == [
        f"{name}-copy-r0",
        f"{name}-scan-r0",
        f"{name}-scan-r1",
    ]
    assert all(j["status"].get("failed", 0) == 0 for j in jobs), [j["status"] for j in jobs]
    assert await listing(s3_client, target) == expected
    await assert_all_verified(ledger, ns, name, expected)


async def test_failure_budget_pauses_with_the_reason(
    k8s_cluster: ControlPlane,
    k8s_namespace: str,
    objmig_operator: OperatorProcess,
    s3_server: LocalS3Server,
    s3_proxy: S3FaultProxy,
    s3_seed: S3Seeder,
) -> None:
    ns, name = k8s_namespace, "budget"
    source, target = await s3_seed.bucket(), await s3_seed.bucket()
    await seed_many(s3_seed, source, (f"ok/{i}" for i in range(30)), 100)
    await seed_many(s3_seed, source, (f"deny/{i}" for i in range(10)), 100)
    create_secret(k8s_cluster, ns, *moto_keys(s3_server))
    s3_proxy.add_rule(Fail(403, "AccessDenied"), method="PUT", bucket=target, key="deny/*")

    apply_migration(
        k8s_cluster, ns, name, s3_server.endpoint_url, source, target,
        target_endpoint=s3_proxy.endpoint_url, failurePolicy={"maxFailedObjects": 3},
    )  # fmt: skip
    paused = wait_for(
        k8s_cluster, ns, name, lambda r: r.get("status", {}).get("phase") == "Paused",
        what="phase Paused", operator=objmig_operator,
    )  # fmt: skip

    reason = condition(paused, "Paused")
    assert reason["status"] == "True"
    assert reason["reason"] == "FailureBudgetExceeded"
    assert "more than maxFailedObjects (3)" in reason["message"]
    failed = [o for o in paused["status"]["objects"] if o["state"] == "failed"]
    assert failed, paused["status"]["objects"]
    assert all(o["key"].startswith("deny/") and "AccessDenied" in o["lastError"] for o in failed)
    assert condition(paused, "CutOver")["status"] == "False"
    for job in jobs_of(k8s_cluster, ns):
        done = any(c["type"] == "Complete" for c in job["status"].get("conditions", []))
        assert done or job["spec"]["suspend"], job["metadata"]["name"]
    events = k8s_cluster.kubectl_json("get", "events", "-n", ns)["items"]
    assert any(e["reason"] == "FailureBudgetExceeded" for e in events), [
        (e["reason"], e["message"]) for e in events
    ]


@pytest.mark.parametrize("bad_side", ["source", "target"])
async def test_bad_credentials_fail_the_migration_without_a_crash_loop_until_fixed(
    k8s_cluster: ControlPlane,
    k8s_namespace: str,
    objmig_operator: OperatorProcess,
    minio_server: LocalMinio,
    bad_side: str,
) -> None:
    """Either side's bad credentials fail the first Job (the scan, which checks both sides)."""
    ns, name = k8s_namespace, "badcreds"
    keys = minio_server.credentials
    async with open_client(minio_server.endpoint(), max_connections=4) as client:
        seed = S3Seeder(client, None)  # type: ignore[arg-type]
        try:
            source, target = await seed.bucket(), await seed.bucket()
            expected = await seed_many(seed, source, (f"k/{i}" for i in range(5)), 10)
            create_secret(k8s_cluster, ns, keys.access_key_id, keys.secret_access_key)
            create_secret(k8s_cluster, ns, keys.access_key_id, "not-the-key", name="wrong")
            secrets = {"source": "wrong", "target": "wrong"} if bad_side == "source" else {}
            secrets.setdefault("source", SECRET)
            secrets.setdefault("target", "wrong")

            apply_migration(
                k8s_cluster, ns, name, minio_server.endpoint_url, source, target,
                source_secret=secrets["source"], target_secret=secrets["target"],
            )  # fmt: skip
            failed = wait_for(
                k8s_cluster, ns, name, lambda r: r.get("status", {}).get("phase") == "Failed",
                what="phase Failed", operator=objmig_operator,
            )  # fmt: skip

            # A crash loop would show up as more pods or Jobs. A Job that has failed starts
            # no more pods; the operator's passes since it failed started no other Job.
            def scan_job_failed() -> bool:
                job = k8s_cluster.kubectl_json("get", "job", f"{name}-scan-r0", "-n", ns)
                conditions = job.get("status", {}).get("conditions", [])
                return any(c["type"] == "Failed" and c["status"] == "True" for c in conditions)

            wait_until(scan_job_failed, timeout=60, what="the scan Job Failed")
            wait_status_passes(objmig_operator, ns, name)

            message = condition(failed, "Failed")["message"]
            assert "SignatureDoesNotMatch" in message or "InvalidAccessKeyId" in message, message
            assert "not-the-key" not in json.dumps(failed)
            assert [j["metadata"]["name"] for j in jobs_of(k8s_cluster, ns)] == [f"{name}-scan-r0"]
            job = k8s_cluster.kubectl_json("get", "job", f"{name}-scan-r0", "-n", ns)
            job_failed = [c for c in job["status"]["conditions"] if c["type"] == "Failed"]
            assert job_failed, job["status"]
            assert job["status"].get("failedIndexes") == "0"
            # One pod, failed by the podFailurePolicy on exit code 42: no retries.
            (pod,) = pods_of(k8s_cluster, ns)
            assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 42
            events = k8s_cluster.kubectl_json("get", "events", "-n", ns)["items"]
            assert any(
                e["type"] == "Warning" and e["reason"] == condition(failed, "Failed")["reason"]
                for e in events
            ), [(e["reason"], e["message"]) for e in events]

            # Fix the credentials and touch the spec: the migration starts again and finishes.
            create_secret(k8s_cluster, ns, keys.access_key_id, keys.secret_access_key, "wrong")
            patch_spec(k8s_cluster, ns, name, {"retry": {"attempts": 3}})
            wait_cut_over(k8s_cluster, ns, name, timeout=120)
            assert await listing(client, target) == expected
        finally:
            await seed.cleanup()


async def test_a_configmap_worklist_reaches_the_scan_pod_through_the_ledger(
    k8s_cluster: ControlPlane,
    k8s_namespace: str,
    objmig_operator: OperatorProcess,
    s3_server: LocalS3Server,
    s3_seed: S3Seeder,
    s3_client: S3Client,
    ledger: Ledger,
) -> None:
    """`selection.manifest.configMapRef`: while the ConfigMap is missing the migration is
    Failed with ManifestNotFound and no Job exists; once it exists (and the spec is
    touched) exactly its keys are migrated, by worker pods that never talk to the API."""
    ns, name = k8s_namespace, "worklist"
    source, target = await s3_seed.bucket(), await s3_seed.bucket()
    everything = await seed_many(s3_seed, source, (f"k/{i}" for i in range(12)), 50)
    wanted = {key: everything[key] for key in ("k/2", "k/3", "k/11")}
    create_secret(k8s_cluster, ns, *moto_keys(s3_server))
    worklist = {"manifest": {"configMapRef": {"name": "worklist", "key": "keys"}}}

    apply_migration(
        k8s_cluster, ns, name, s3_server.endpoint_url, source, target, selection=worklist
    )
    failed = wait_for(
        k8s_cluster, ns, name, lambda r: condition(r, "Failed").get("status") == "True",
        what="Failed=True", operator=objmig_operator,
    )  # fmt: skip
    assert condition(failed, "Failed")["reason"] == "ManifestNotFound"
    assert "ConfigMap 'worklist' with key 'keys'" in condition(failed, "Failed")["message"]
    assert f"in namespace '{ns}'" in condition(failed, "Failed")["message"]
    assert jobs_of(k8s_cluster, ns) == []

    apply_config_map(
        k8s_cluster, ns, "worklist", {"keys": "\n".join([*wanted, "k/not-there"]) + "\n"}
    )
    patch_spec(k8s_cluster, ns, name, {"retry": {"attempts": 3}})
    resource = wait_cut_over(k8s_cluster, ns, name)
    assert resource["status"]["progress"]["objects"]["succeeded"] == len(wanted)
    assert await listing(s3_client, target) == wanted
    # The worklist's key the bucket lacks is recorded and skipped NotFound, not dropped.
    rows = {row.key: row for row in await ledger_rows(ledger, ns, name)}
    assert set(rows) == {*wanted, "k/not-there"}
    assert rows.pop("k/not-there").skip_reason == "NotFound"
    assert {row.state for row in rows.values()} == {ObjectState.VERIFIED}


async def test_a_missing_secret_is_reported_instead_of_pods_that_never_start(
    k8s_cluster: ControlPlane,
    k8s_namespace: str,
    objmig_operator: OperatorProcess,
    s3_server: LocalS3Server,
    s3_seed: S3Seeder,
    s3_client: S3Client,
) -> None:
    ns, name = k8s_namespace, "no-secret"
    source, target = await s3_seed.bucket(), await s3_seed.bucket()
    expected = await seed_many(s3_seed, source, (f"k/{i}" for i in range(3)), 20)

    apply_migration(k8s_cluster, ns, name, s3_server.endpoint_url, source, target)
    failed = wait_for(
        k8s_cluster, ns, name, lambda r: condition(r, "Failed").get("status") == "True",
        what="Failed=True", operator=objmig_operator,
    )  # fmt: skip
    assert condition(failed, "Failed")["reason"] == "SecretNotFound"
    assert f"Secret '{SECRET}' with key 'accessKeyId'" in condition(failed, "Failed")["message"]
    assert jobs_of(k8s_cluster, ns) == []

    create_secret(k8s_cluster, ns, *moto_keys(s3_server))
    patch_spec(k8s_cluster, ns, name, {"retry": {"attempts": 3}})
    wait_cut_over(k8s_cluster, ns, name)
    assert await listing(s3_client, target) == expected


async def test_a_dry_run_then_the_real_run_copies_every_planned_object(
    k8s_cluster: ControlPlane,
    k8s_namespace: str,
    objmig_operator: OperatorProcess,
    s3_server: LocalS3Server,
    s3_seed: S3Seeder,
    s3_client: S3Client,
    ledger: Ledger,
) -> None:
    """The plan's rows end as skipped (PlanCopy): turning dryRun off must put them back to
    work, not count them as done (the migration stayed at NothingVerified for good)."""
    ns, name = k8s_namespace, "plan-then-run"
    source, target = await s3_seed.bucket(), await s3_seed.bucket()
    expected = await seed_many(s3_seed, source, (f"k/{i}" for i in range(8)), 40)
    create_secret(k8s_cluster, ns, *moto_keys(s3_server))

    apply_migration(k8s_cluster, ns, name, s3_server.endpoint_url, source, target, dryRun=True)
    planned = wait_for(
        k8s_cluster, ns, name,
        lambda r: (r.get("status", {}).get("plan") or {}).get("wouldCopy") == len(expected),
        what="a plan of every object", operator=objmig_operator,
    )  # fmt: skip
    assert condition(planned, "CutOver").get("status") != "True"
    assert await listing(s3_client, target) == {}

    patch_spec(k8s_cluster, ns, name, {"dryRun": False})
    wait_cut_over(k8s_cluster, ns, name)
    assert await listing(s3_client, target) == expected
    await assert_all_verified(ledger, ns, name, expected)


async def test_a_cutover_that_cannot_finish_says_so_and_finishes_once_fixed(
    k8s_cluster: ControlPlane,
    k8s_namespace: str,
    objmig_operator: OperatorProcess,
    s3_server: LocalS3Server,
    s3_seed: S3Seeder,
) -> None:
    """The ConfigMap to patch at cutover does not exist: a Failed condition with the reason,
    not a reconcile failing every few seconds; once it exists and the spec is touched, the
    cutover completes."""
    ns, name = k8s_namespace, "cutover-fails"
    source, target = await s3_seed.bucket(), await s3_seed.bucket()
    await seed_many(s3_seed, source, (f"k/{i}" for i in range(3)), 20)
    create_secret(k8s_cluster, ns, *moto_keys(s3_server))
    action = {"configMapRef": {"name": "app-config", "data": {"S3_BUCKET": target}}}

    apply_migration(k8s_cluster, ns, name, s3_server.endpoint_url, source, target, cutover=action)
    failed = wait_for(
        k8s_cluster, ns, name, lambda r: condition(r, "Failed").get("status") == "True",
        what="Failed=True", operator=objmig_operator,
    )  # fmt: skip
    assert condition(failed, "Failed")["reason"] == "CutoverFailed"
    message = condition(failed, "Failed")["message"]
    assert f"ConfigMap {ns}/app-config (spec.cutover.configMapRef) does not exist" in message
    assert "edit the spec to finish it" in message
    assert "HTTP response headers" not in message
    assert condition(failed, "CutOver").get("status") != "True"

    apply_config_map(k8s_cluster, ns, "app-config", {})
    patch_spec(k8s_cluster, ns, name, {"retry": {"attempts": 3}})
    wait_cut_over(k8s_cluster, ns, name)
    data = k8s_cluster.kubectl_json("get", "configmap", "app-config", "-n", ns)["data"]
    assert data == {"S3_BUCKET": target}


async def test_a_half_done_cutover_rolls_back_and_a_re_cutover_brings_later_writes_along(
    k8s_cluster: ControlPlane,
    k8s_namespace: str,
    objmig_operator: OperatorProcess,
    postgres_server: EmbeddedPostgres,
    s3_server: LocalS3Server,
    s3_seed: S3Seeder,
    s3_client: S3Client,
) -> None:
    """The application's catalog refuses one row: the cutover stops half-way, some rows
    swapped. Rollback points them back at the source; asked again, the cutover first
    re-scans, so what was written to the source while rolled back reaches the target
    before the applications are switched."""
    ns, name = k8s_namespace, "half-done"
    source, target = await s3_seed.bucket(), await s3_seed.bucket()
    expected = await seed_many(s3_seed, source, (f"k/{i}" for i in range(6)), 50)
    create_secret(k8s_cluster, ns, *moto_keys(s3_server))
    apply_config_map(k8s_cluster, ns, "app-config", {"S3_BUCKET": source})
    async with catalog_database(postgres_server, list(expected), source) as app_dsn:
        app = await asyncpg.connect(app_dsn)
        await refuse_location(app, f"s3://{target}/k/5")
        apply_secret(k8s_cluster, ns, "app-db", {"dsn": app_dsn})
        cutover = {
            "catalog": catalog_action(batchSize=2),
            "configMapRef": {"name": "app-config", "data": {"S3_BUCKET": target}},
        }

        apply_migration(
            k8s_cluster, ns, name, s3_server.endpoint_url, source, target, cutover=cutover
        )
        failed = wait_for(
            k8s_cluster, ns, name, lambda r: condition(r, "Failed").get("status") == "True",
            what="Failed=True", operator=objmig_operator,
        )  # fmt: skip
        assert condition(failed, "Failed")["reason"] == "CutoverFailed"
        assert "the application refuses k/5" in condition(failed, "Failed")["message"]
        assert condition(failed, "CutOver").get("status") != "True"
        swapped = {k for k, loc in (await catalog_rows(app_dsn)).items() if target in loc}
        assert swapped == {"k/0", "k/1", "k/2", "k/3"}

        patch_spec(k8s_cluster, ns, name, {"cutover": {"rollback": True}})
        rolled = wait_for(
            k8s_cluster, ns, name,
            lambda r: condition(r, "CutOver").get("reason") == "RolledBack",
            what="CutOver=False RolledBack", timeout=60, operator=objmig_operator,
        )  # fmt: skip
        assert condition(rolled, "Failed")["status"] == "False"
        assert await catalog_rows(app_dsn) == {k: f"s3://{source}/{k}" for k in expected}
        data = k8s_cluster.kubectl_json("get", "configmap", "app-config", "-n", ns)["data"]
        assert data == {"S3_BUCKET": source}

        written = await s3_seed.put_object(source, "k/written-while-rolled-back", 70)
        await app.execute("DROP TRIGGER refuse ON assets")
        await app.close()
        patch_spec(k8s_cluster, ns, name, {"cutover": {"rollback": False}})
        done = wait_cut_over(k8s_cluster, ns, name, timeout=120)

        assert (await listing(s3_client, target))[written.key] == written.etag
        assert done["status"]["progress"]["objects"]["succeeded"] == len(expected) + 1
        assert await catalog_rows(app_dsn) == {k: f"s3://{target}/{k}" for k in expected}
        data = k8s_cluster.kubectl_json("get", "configmap", "app-config", "-n", ns)["data"]
        assert data == {"S3_BUCKET": target}
        assert done["status"]["cutover"]["previousConfigMapData"] == {"S3_BUCKET": source}
        scans = sorted(j["metadata"]["name"] for j in jobs_of(k8s_cluster, ns) if "-scan-" in
                       j["metadata"]["name"])  # fmt: skip
        # The first cutover's final check (r1), the re-scan the rollback owes (r2), the
        # second cutover's final check (r3).
        assert scans == [f"{name}-scan-r{r}" for r in range(4)]


async def test_a_killed_pod_and_a_restarted_operator_converge_without_duplicate_jobs(
    k8s_cluster: ControlPlane,
    k8s_namespace: str,
    objmig_operator: OperatorProcess,
    s3_server: LocalS3Server,
    s3_proxy: S3FaultProxy,
    s3_seed: S3Seeder,
    s3_client: S3Client,
    ledger: Ledger,
) -> None:
    ns, name = k8s_namespace, "resilient"
    source, target = await s3_seed.bucket(), await s3_seed.bucket()
    expected = await seed_many(s3_seed, source, (f"k/{i:04d}" for i in range(400)), 300)
    create_secret(k8s_cluster, ns, *moto_keys(s3_server))
    # The HEADs of the last hundred objects (one per object in a server-side copy) wait at
    # the proxy until the operator is back: the pods still have work when one is deleted,
    # however fast the machine, while "succeeded" shows for the others.
    last = s3_proxy.add_rule(Hold(), method="HEAD", bucket=source, key="k/03*")

    apply_migration(
        k8s_cluster, ns, name, s3_proxy.endpoint_url, source, target,
        copy={"concurrency": 4}, workers={"parallelism": 2},
    )  # fmt: skip

    def copy_pods_running() -> list[str]:
        pods = [
            p["metadata"]["name"] for p in pods_of(k8s_cluster, ns)
            if "-copy-" in p["metadata"]["name"] and p["status"].get("phase") == "Running"
        ]  # fmt: skip
        return pods if len(pods) == 2 else []

    pods = wait_until(copy_pods_running, timeout=90, what="two running copy pods")
    wait_for(
        k8s_cluster, ns, name,
        lambda r: r.get("status", {}).get("progress", {}).get("objects", {}).get("succeeded"),
        what="copying under way", operator=objmig_operator,
    )  # fmt: skip
    objmig_operator.kill()
    k8s_cluster.kubectl("delete", "pod", pods[0], "-n", ns, "--wait=true", timeout=60)

    def replaced() -> bool:
        copy_pods = [p for p in pods_of(k8s_cluster, ns) if "-copy-" in p["metadata"]["name"]]
        return len({p["metadata"]["name"] for p in copy_pods} - set(pods)) >= 1

    # The Job replaces the deleted pod (the worker exits "interrupted", not "done").
    wait_until(replaced, timeout=60, what="a replacement for the deleted worker pod")
    objmig_operator.start()
    s3_proxy.remove_rule(last)
    done = wait_cut_over(k8s_cluster, ns, name, timeout=240)

    jobs = jobs_of(k8s_cluster, ns)
    # One Job per stage (round 0, wave 0, and the re-scan before the cutover): neither the
    # restart nor the pod loss made more.
    assert sorted(j["metadata"]["name"] for j in jobs) == [
        f"{name}-copy-r0",
        f"{name}-scan-r0",
        f"{name}-scan-r1",
    ]
    copy_job = next(j for j in jobs if j["metadata"]["name"] == f"{name}-copy-r0")
    assert copy_job["status"].get("failed", 0) == 0, copy_job["status"]
    assert done["status"]["progress"]["objects"]["succeeded"] == len(expected)
    assert await listing(s3_client, target) == expected
    for key in list(expected)[::40]:
        assert await s3_seed.get_bytes(target, key) == await s3_seed.get_bytes(source, key)
    await assert_all_verified(ledger, ns, name, expected)
    assert objmig_operator.starts == 2


async def test_no_secret_value_reaches_logs_events_or_status(
    k8s_cluster: ControlPlane,
    k8s_namespace: str,
    objmig_operator: OperatorProcess,
    s3_server: LocalS3Server,
    s3_proxy: S3FaultProxy,
    s3_seed: S3Seeder,
) -> None:
    ns, name = k8s_namespace, "secretive"
    secret_key = "objmigSecretKey-7f3a9c2e1b"
    token = "objmigSessionToken-5d8e2a4c"
    source, target = await s3_seed.bucket(), await s3_seed.bucket()
    await seed_many(s3_seed, source, (f"k/{i}" for i in range(20)), 100)
    await seed_many(s3_seed, source, (f"deny/{i}" for i in range(3)), 100)
    apply_secret(
        k8s_cluster,
        ns,
        SECRET,
        {"accessKeyId": "objmig-test", "secretAccessKey": secret_key, "sessionToken": token},
    )
    # Some objects fail, so error paths (and their messages) run too.
    s3_proxy.add_rule(Fail(403, "AccessDenied"), method="PUT", bucket=target, key="deny/*")

    apply_migration(
        k8s_cluster, ns, name, s3_server.endpoint_url, source, target,
        target_endpoint=s3_proxy.endpoint_url,
    )  # fmt: skip
    resource = wait_for(
        k8s_cluster, ns, name,
        lambda r: condition(r, "Copied").get("status") == "True",
        what="Copied=True", operator=objmig_operator,
    )  # fmt: skip

    texts = {
        "operator log": objmig_operator.log_text(),
        "status": json.dumps(resource),
        "events": k8s_cluster.kubectl("get", "events", "-n", ns, "-o", "json").stdout,
        "jobs": k8s_cluster.kubectl("get", "jobs", "-n", ns, "-o", "json").stdout,
    }
    pods = [p["metadata"]["name"] for p in pods_of(k8s_cluster, ns)]
    assert any("-copy-" in pod for pod in pods), pods
    for pod in pods:
        texts[f"pod {pod}"] = k8s_cluster.pod_log(ns, pod)
    assert any("deny/" in text for text in texts.values()), "the error path did not run"
    import base64

    for value in (secret_key, token):
        encoded = base64.b64encode(value.encode()).decode()
        for where, text in texts.items():
            assert value not in text, f"secret value in {where}"
            assert encoded not in text, f"base64 of a secret value in {where}"


async def test_parallelism_change_reaches_the_running_job_and_deletion_cleans_up(
    k8s_cluster: ControlPlane,
    k8s_namespace: str,
    objmig_operator: OperatorProcess,
    s3_server: LocalS3Server,
    s3_proxy: S3FaultProxy,
    s3_seed: S3Seeder,
    ledger: Ledger,
) -> None:
    ns, name = k8s_namespace, "elastic"
    source, target = await s3_seed.bucket(), await s3_seed.bucket()
    await seed_many(s3_seed, source, (f"k/{i:04d}" for i in range(300)), 100)
    create_secret(k8s_cluster, ns, *moto_keys(s3_server))
    # No object can be copied (each needs a HEAD of its source) until there are three copy
    # pods: the copy is still running when the Job is scaled, however fast the machine.
    s3_proxy.add_rule(Hold(), method="HEAD", bucket=source)

    apply_migration(
        k8s_cluster, ns, name, s3_proxy.endpoint_url, source, target,
        copy={"concurrency": 4}, workers={"parallelism": 1},
    )  # fmt: skip
    copy_job = f"{name}-copy-r0"
    wait_until(
        lambda: k8s_cluster.kubectl_ok("get", "job", copy_job, "-n", ns),
        timeout=90, what="the copy Job",
    )  # fmt: skip
    patch_spec(k8s_cluster, ns, name, {"workers": {"parallelism": 3}})

    def scaled() -> dict[str, Any] | None:
        job = k8s_cluster.kubectl_json("get", "job", copy_job, "-n", ns)
        return job if job["spec"]["parallelism"] == 3 else None

    job = wait_until(scaled, timeout=30, what="the copy Job scaled to 3")
    assert job["spec"]["completions"] == 3
    wait_until(
        lambda: len([p for p in pods_of(k8s_cluster, ns) if "-copy-" in p["metadata"]["name"]])
        >= 3,
        timeout=60, what="three copy pods",
    )  # fmt: skip
    s3_proxy.clear()
    wait_cut_over(k8s_cluster, ns, name, timeout=180)
    assert {j["metadata"]["name"] for j in jobs_of(k8s_cluster, ns)} == {
        f"{name}-scan-r0",
        copy_job,
        f"{name}-scan-r1",  # the re-scan before the cutover
    }

    k8s_cluster.kubectl("delete", GROUP_PLURAL, name, "-n", ns, "--timeout=60s", timeout=70)

    wait_until(lambda: not jobs_of(k8s_cluster, ns), timeout=60, what="Jobs garbage-collected")
    assert await ledger.find_migration(f"{ns}/{name}") is None, "ledger rows left behind"

    # With the annotation the report (the ledger rows) outlives the resource.
    kept = "kept"
    apply_migration(
        k8s_cluster, ns, kept, s3_server.endpoint_url, source, target,
        annotations={"objmig.dev/retain-report": "true"}, selection={"limit": 5},
    )  # fmt: skip
    wait_cut_over(k8s_cluster, ns, kept, timeout=120)
    k8s_cluster.kubectl("delete", GROUP_PLURAL, kept, "-n", ns, "--timeout=60s", timeout=70)
    wait_until(lambda: not jobs_of(k8s_cluster, ns), timeout=60, what="Jobs garbage-collected")
    migration_id = await ledger.find_migration(f"{ns}/{kept}")
    assert migration_id is not None, "the retained report was deleted"
    assert (await ledger.counts(migration_id)).total.objects == 5


STATUS_OBJECTS = 20_000
SELECTED = 1_000  # copied for real; the rest are listed, HEADed once and skipped
LONG_FAILING = 60  # more than the status window, with near-maximal keys


async def test_status_stays_small_and_patches_rate_bounded_at_20000_objects(
    k8s_cluster: ControlPlane,
    k8s_namespace: str,
    objmig_operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    ns, name = k8s_namespace, "large"
    selected = {"x-amz-meta-migrate": "yes"}
    long_key = "deny/" + "k" * 1000 + "/{i:03d}"
    groups = [
        ObjectGroup("src", "skip/tenant-{i:05d}/2024/05/17/object.json",
                    STATUS_OBJECTS - SELECTED - LONG_FAILING),
        ObjectGroup("src", "copy/tenant-{i:05d}/object.json", SELECTED, metadata=selected),
        ObjectGroup("src", long_key, LONG_FAILING, metadata=selected),
        ObjectGroup("dst", "unused", 0),
    ]  # fmt: skip
    with (
        SeededMoto(groups, tmp_path / "moto.log") as moto,
        S3FaultProxy(moto.endpoint_url) as proxy,
    ):
        print(f"seeded {STATUS_OBJECTS} objects in {moto.seed_seconds:.1f}s")
        proxy.add_rule(Fail(403, "AccessDenied"), method="PUT", key="deny/*")
        create_secret(k8s_cluster, ns, "objmig-test", "objmig-test-secret")
        apply_migration(
            k8s_cluster, ns, name, moto.endpoint_url, "src", "dst",
            target_endpoint=proxy.endpoint_url,
            selection={"metadata": [{"key": "migrate", "operator": "In", "values": ["yes"]}]},
            failurePolicy={"maxFailedObjects": 100},
            copy={"concurrency": 32},
            retry={"attempts": 1},
        )  # fmt: skip
        started = time.monotonic()
        sizes: list[int] = []

        def finished() -> bool:
            text = k8s_cluster.kubectl("get", GROUP_PLURAL, name, "-n", ns, "-o", "json").stdout
            sizes.append(len(text.encode()))
            return condition(json.loads(text), "CutOver").get("status") == "True"

        wait_until(finished, timeout=420, interval=2, what="CutOver at 20,000 objects")
        elapsed = time.monotonic() - started

    resource = get_om(k8s_cluster, ns, name)
    created = resource["metadata"]["creationTimestamp"]
    patches = objmig_operator.metric("objmig_status_patches_total", namespace=ns, migration=name)

    # Once nothing changes (the throughput window has drained), no more patches are written:
    # four passes of the operator in a row leave the status alone.
    def idle() -> bool:
        before = objmig_operator.metric("objmig_status_patches_total", namespace=ns, migration=name)
        wait_status_passes(objmig_operator, ns, name, passes=4)
        after = objmig_operator.metric("objmig_status_patches_total", namespace=ns, migration=name)
        return before == after

    settle = time.monotonic()
    wait_until(idle, timeout=60, interval=0, what="status patches to stop after the cutover")
    settled = time.monotonic() - settle
    reconciles = objmig_operator.metric("objmig_reconciles_total", namespace=ns, migration=name)
    bound = elapsed / objmig_operator.status_interval + 5
    print(
        f"20k status: wall {elapsed:.0f}s (created {created}), {patches:.0f} status patches "
        f"(bound {bound:.0f}), {reconciles:.0f} reconciles, CR size max {max(sizes)} B "
        f"over {len(sizes)} samples, final {sizes[-1]} B; patches stopped {settled:.0f}s "
        "after the cutover"
    )
    status = resource["status"]
    progress = status["progress"]["objects"]
    assert progress["total"] == STATUS_OBJECTS
    assert progress["succeeded"] == SELECTED
    assert progress["failed"] == LONG_FAILING
    assert progress["skipped"] == STATUS_OBJECTS - SELECTED - LONG_FAILING
    assert status["objectsTruncated"] is True
    assert max(sizes) < 64 * KiB
    assert patches <= bound
    assert status["objects"], "the window is empty"
    assert all(o["state"] == "failed" for o in status["objects"])
