"""The application's own migrations through the operator on a real control plane: a
storage-version rewrite, a backfill into the application's database (and its rollback),
a per-object hook, and the bad inputs each refused with a condition naming the field.

Worker pods run as local processes through the pod runner, against moto, the test
PostgreSQL (the ledger, and the application's database beside it) and, for hooks, an
aiohttp endpoint on loopback served from a thread of its own.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

from objmig.ledger import Ledger, ObjectState
from objmig.local.postgres import EmbeddedPostgres
from objmig.local.s3server import LocalS3Server
from tests.fixtures.operator import OperatorProcess
from tests.fixtures.s3 import S3Seeder
from tests.k8s.test_operator import (
    apply_config_map,
    apply_migration,
    apply_secret,
    condition,
    create_secret,
    ledger_rows,
    moto_keys,
    patch_spec,
    wait_cut_over,
    wait_for,
)
from tests.support.appdb import FILES_QUERY, backfill_action, files_database, files_of
from tests.support.cluster import ControlPlane
from tests.support.hook_endpoint import Reply, ThreadedHookEndpoint

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

KiB = 1024
SQL_WORKLIST = {"sql": {"dsnSecretRef": {"name": "app-db", "key": "dsn"}, "query": FILES_QUERY}}


def events_of(cluster: ControlPlane, namespace: str, reason: str) -> list[dict[str, Any]]:
    items = cluster.kubectl_json("get", "events", "-n", namespace)["items"]
    return [e for e in items if e.get("reason") == reason]


async def test_a_storage_version_rewrite_through_the_operator(
    k8s_cluster: ControlPlane,
    k8s_namespace: str,
    objmig_operator: OperatorProcess,
    s3_server: LocalS3Server,
    s3_seed: S3Seeder,
) -> None:
    ns, name = k8s_namespace, "stamp"
    bucket = await s3_seed.bucket()
    old = [
        await s3_seed.put_object(bucket, "a", 16 * KiB, metadata={"storage-version": "2"}),
        await s3_seed.put_multipart(
            bucket, "parts", [4 * KiB, 4 * KiB, 1000], metadata={"storage-version": "1"}
        ),
        # Written before versions existed: no storage-version, which counts as 0.
        await s3_seed.put_object(bucket, "before-versions", 4 * KiB),
    ]
    await s3_seed.put_object(bucket, "c", 4 * KiB, metadata={"storage-version": "3"})
    untouched = await s3_seed.client.head_object(Bucket=bucket, Key="c")
    create_secret(k8s_cluster, ns, *moto_keys(s3_server))

    side = {
        "endpoint": s3_server.endpoint_url, "bucket": bucket, "addressingStyle": "path",
        "region": "us-east-1", "credentialsSecretRef": {"name": "s3-creds"},
    }  # fmt: skip
    spec = {
        "source": side,
        "target": {
            **side,
            "encryption": {"mode": "SSE-S3"},
            "metadata": {"set": {"storage-version": "3"}},
        },
        "selection": {
            "metadata": [
                {"key": "storage-version", "operator": "Lt", "values": ["3"], "default": "0"}
            ]
        },
        "copy": {"mode": "serverSide", "overwrite": "always"},
    }
    k8s_cluster.apply_yaml(
        {
            "apiVersion": "objmig.dev/v1alpha1",
            "kind": "ObjectMigration",
            "metadata": {"name": name},
            "spec": spec,
        },
        namespace=ns,
    )
    done = wait_cut_over(k8s_cluster, ns, name)

    objects = done["status"]["progress"]["objects"]
    assert (objects["succeeded"], objects["skipped"]) == (3, 1)
    for obj in old:
        head = await s3_seed.client.head_object(Bucket=bucket, Key=obj.key)
        assert head["Metadata"]["storage-version"] == "3"
        assert head["ServerSideEncryption"] == "AES256"
        assert head["ETag"].strip('"') == obj.etag
    after = await s3_seed.client.head_object(Bucket=bucket, Key="c")
    assert after["LastModified"] == untouched["LastModified"]


async def test_a_backfill_through_the_operator_then_its_rollback(
    k8s_cluster: ControlPlane,
    k8s_namespace: str,
    objmig_operator: OperatorProcess,
    postgres_server: EmbeddedPostgres,
    s3_server: LocalS3Server,
    s3_seed: S3Seeder,
    ledger: Ledger,
) -> None:
    ns, name = k8s_namespace, "backfill"
    bucket = await s3_seed.bucket()
    keys = [f"files/{i:02d}" for i in range(24)]
    missing = {keys[5], keys[17]}
    sizes = {}
    for index, key in enumerate(keys):
        if key not in missing:
            sizes[key] = (await s3_seed.put_object(bucket, key, 50 + index)).size
    create_secret(k8s_cluster, ns, *moto_keys(s3_server))
    async with files_database(postgres_server, keys) as dsn:
        apply_secret(k8s_cluster, ns, "app-db", {"dsn": dsn})
        spec = {
            "copy": {"mode": "none"},
            "selection": {"manifest": SQL_WORKLIST},
            "backfill": backfill_action(batchSize=5),
        }
        # No target: a run that writes nothing looks at the source where it is.
        apply_migration(k8s_cluster, ns, name, s3_server.endpoint_url, bucket, None, **spec)
        done = wait_cut_over(k8s_cluster, ns, name)

        objects = done["status"]["progress"]["objects"]
        assert (objects["total"], objects["processed"], objects["remaining"]) == (24, 24, 0)
        assert (objects["succeeded"], objects["skipped"]) == (22, 2)
        assert done["status"]["progress"]["percent"] == 100
        assert done["status"]["steps"]["missing"] == 2
        assert done["status"]["steps"]["backfillWritten"] == 22
        files = await files_of(dsn)
        for key in keys:
            expected = None if key in missing else sizes[key]
            assert files[key]["size"] == expected, key
            assert files[key]["writes"] == (0 if key in missing else 1), key
        # One Event, when the first missing object is found: not one per reconcile.
        (missing_event,) = events_of(k8s_cluster, ns, "ObjectsMissing")
        assert missing_event.get("count", 1) == 1
        rows = await ledger_rows(ledger, ns, name)
        assert {r.key for r in rows if r.state is ObjectState.SKIPPED} == missing

        patch_spec(k8s_cluster, ns, name, {"cutover": {"rollback": True}})
        rolled = wait_for(
            k8s_cluster, ns, name,
            lambda r: condition(r, "CutOver").get("reason") == "RolledBack",
            what="CutOver=False RolledBack", operator=objmig_operator,
        )  # fmt: skip
        assert "22 rows put back" in " ".join(rolled["status"]["cutover"]["actions"])
        files = await files_of(dsn)
        assert all(row["hash"] is None and row["size"] is None for row in files.values())


async def test_a_per_object_hook_through_the_operator(
    k8s_cluster: ControlPlane,
    k8s_namespace: str,
    objmig_operator: OperatorProcess,
    s3_server: LocalS3Server,
    s3_seed: S3Seeder,
) -> None:
    ns, name = k8s_namespace, "hooked"
    bucket = await s3_seed.bucket()
    keys = [f"uploads/{i}" for i in range(8)]
    for key in keys:
        await s3_seed.put_object(bucket, key, 128)
    create_secret(k8s_cluster, ns, *moto_keys(s3_server))
    apply_secret(k8s_cluster, ns, "hook", {"token": "t0ken"})

    def answer(key: str, call: int) -> Reply:
        if key == keys[1] and call == 1:
            return 429, "slow down", {"Retry-After": "1"}
        if key == keys[2]:
            return 409, "already claimed by another space"
        return 200, "ok"

    with ThreadedHookEndpoint(answer) as hook:
        apply_migration(
            k8s_cluster, ns, name, s3_server.endpoint_url, bucket, bucket,
            copy={"mode": "none"},
            selection={"limit": 6},
            failurePolicy={"maxFailedObjects": 1},
            retry={"attempts": 2, "backoff": {"initial": "50ms", "max": "5s"}},
            hooks={"perObject": {"url": hook.url,
                                 "bearerTokenSecretRef": {"name": "hook", "key": "token"}}},
        )  # fmt: skip
        done = wait_cut_over(k8s_cluster, ns, name)

        assert dict(hook.calls) == {**dict.fromkeys(keys[:6], 1), keys[1]: 2}
        # The 429's Retry-After was honoured (the backoff alone is 50 ms).
        assert hook.times[keys[1]][1] - hook.times[keys[1]][0] >= 1.0
        assert {h["authorization"] for h in hook.headers} == {"Bearer t0ken"}
        steps = done["status"]["steps"]
        assert (steps["hooksDone"], steps["hooksPending"]) == (5, 0)
        failed = [o for o in done["status"]["objects"] if o["state"] == "failed"]
        assert [(o["key"], o["lastError"]) for o in failed] == [
            (keys[2], "hook: Hook409: HTTP 409: already claimed by another space")
        ]


async def test_a_copy_from_a_worklist_with_missing_keys_through_the_operator(
    k8s_cluster: ControlPlane,
    k8s_namespace: str,
    objmig_operator: OperatorProcess,
    s3_server: LocalS3Server,
    s3_seed: S3Seeder,
) -> None:
    ns, name = k8s_namespace, "worklist"
    source, target = await s3_seed.bucket(), await s3_seed.bucket()
    keys = [f"photos/{i}.jpg" for i in range(6)]
    missing = {keys[1], keys[4]}
    for key in keys:
        if key not in missing:
            await s3_seed.put_object(source, key, 256)
    create_secret(k8s_cluster, ns, *moto_keys(s3_server))
    apply_config_map(k8s_cluster, ns, "worklist", {"keys": "\n".join(keys)})
    apply_migration(
        k8s_cluster, ns, name, s3_server.endpoint_url, source, target,
        copy={"mode": "stream"},
        selection={"manifest": {"configMapRef": {"name": "worklist", "key": "keys"}}},
    )  # fmt: skip
    done = wait_cut_over(k8s_cluster, ns, name)

    objects = done["status"]["progress"]["objects"]
    assert (objects["succeeded"], objects["skipped"], objects["failed"]) == (4, 2, 0)
    assert done["status"]["steps"]["missing"] == 2
    (event,) = events_of(k8s_cluster, ns, "ObjectsMissing")
    assert event.get("count", 1) == 1
    listing = await s3_seed.client.list_objects_v2(Bucket=target)
    assert {o["Key"] for o in listing.get("Contents", [])} == set(keys) - missing


async def test_bad_application_inputs_are_conditions_naming_the_field(
    k8s_cluster: ControlPlane,
    k8s_namespace: str,
    objmig_operator: OperatorProcess,
    postgres_server: EmbeddedPostgres,
    s3_server: LocalS3Server,
    s3_seed: S3Seeder,
) -> None:
    ns = k8s_namespace
    bucket = await s3_seed.bucket()
    await s3_seed.put_object(bucket, "files/00", 10)
    create_secret(k8s_cluster, ns, *moto_keys(s3_server))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    async with files_database(postgres_server, ["files/00"]) as dsn:
        apply_secret(k8s_cluster, ns, "app-db", {"dsn": dsn})
        look = {"copy": {"mode": "none"}}
        cases: dict[str, tuple[dict[str, Any], str, str]] = {
            "no-column": (
                {**look, "backfill": backfill_action(
                    match="key", keyColumn="location_key", columns={"hash": "hsh"})},
                "BackfillInvalid",
                "spec.backfill.columns.hash: column 'hsh' does not exist",
            ),
            "bad-query": (
                {**look, "selection": {"manifest": {"sql": {
                    "dsnSecretRef": {"name": "app-db", "key": "dsn"},
                    "query": "SELECT nope AS key FROM files"}}}},
                "WorklistQueryFailed",
                "spec.selection.manifest.sql.query: the application's database refused it",
            ),
            "no-secret": (
                {**look, "backfill": backfill_action(
                    dsnSecretRef={"name": "app-db-missing", "key": "dsn"}, match="key",
                    keyColumn="location_key")},
                "SecretNotFound",
                "Secret 'app-db-missing' with key 'dsn' (spec.backfill.dsnSecretRef) not found",
            ),
            "hook-refused": (
                {**look, "hooks": {"perObject": {
                    "url": f"http://127.0.0.1:{closed_port}/objects"}}},
                "HookUnreachable",
                f"spec.hooks.perObject.url: cannot connect to 127.0.0.1:{closed_port}",
            ),
        }  # fmt: skip
        for name, (spec, _, _) in cases.items():
            apply_migration(k8s_cluster, ns, name, s3_server.endpoint_url, bucket, bucket, **spec)
        for name, (_, reason, message) in cases.items():
            failed = wait_for(
                k8s_cluster, ns, name, lambda r: condition(r, "Failed").get("status") == "True",
                what=f"{name}: Failed=True", operator=objmig_operator,
            )  # fmt: skip
            assert condition(failed, "Failed")["reason"] == reason, name
            assert message in condition(failed, "Failed")["message"], name
            assert failed["status"]["progress"]["objects"]["succeeded"] == 0, name
        files = await files_of(dsn)
        assert files["files/00"]["writes"] == 0
