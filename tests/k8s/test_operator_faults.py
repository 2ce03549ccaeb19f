"""The operator as a cluster user meets it when things go wrong (issue 24): names as long as
the CRD allows, Jobs the API server refuses, a ledger that goes away, a namespace deleted
mid-copy, limited and dry-run cleanups, and the Events all of it leaves behind.

Each test runs ``objmig operator`` as a process against the test control plane; worker pods
run as local processes (the pod runner) against moto through a fault proxy.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from objmig.controller.jobs import JOB_NAME_LIMIT
from objmig.ledger import Ledger, ObjectState
from objmig.local.postgres import EmbeddedPostgres
from objmig.local.processes import free_port
from objmig.local.s3server import LocalS3Server
from tests.fixtures.operator import OperatorProcess
from tests.fixtures.s3 import S3Seeder
from tests.k8s.test_cleanup_operator import CLEANUPS, get_mcl
from tests.k8s.test_operator import (
    GROUP_PLURAL,
    apply_migration,
    condition,
    create_secret,
    get_om,
    jobs_of,
    ledger_rows,
    listing,
    moto_keys,
    patch_spec,
    pods_of,
    seed_many,
    wait_cut_over,
    wait_for,
    wait_status_passes,
)
from tests.support.cluster import ControlPlane, wait_until
from tests.support.s3proxy import Delay, Deny, Hold, S3FaultProxy

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

#: The longest name the CRD accepts, for both kinds.
LONG_MIGRATION = ("a-migration-named-as-long-as-the-crd-lets-it-be-" * 2)[:62] + "m"
LONG_CLEANUP = ("a-cleanup-named-as-long-as-the-crd-lets-it-be-" * 2)[:62] + "c"


def events_of(cluster: ControlPlane, namespace: str, name: str) -> list[dict[str, Any]]:
    """The Events about one object, oldest first."""
    items = cluster.kubectl_json("get", "events", "-n", namespace)["items"]
    return [e for e in items if e["involvedObject"]["name"] == name]


def event_reasons(cluster: ControlPlane, namespace: str, name: str) -> list[str]:
    return [e["reason"] for e in events_of(cluster, namespace, name)]


async def seeded_buckets(
    cluster: ControlPlane, namespace: str, server: LocalS3Server, seed: S3Seeder, objects: int
) -> tuple[str, str, dict[str, str]]:
    """A source of ``objects`` small objects, an empty target, and the namespace's Secret
    for both; the source's keys and ETags."""
    source, target = await seed.bucket(), await seed.bucket()
    expected = await seed_many(seed, source, (f"k/{i:03d}" for i in range(objects)), 64)
    create_secret(cluster, namespace, *moto_keys(server))
    return source, target, expected


def apply_cleanup(cluster: ControlPlane, namespace: str, name: str, **spec: Any) -> None:
    cluster.apply_yaml(
        {
            "apiVersion": "objmig.dev/v1alpha1",
            "kind": "MigrationCleanup",
            "metadata": {"name": name},
            "spec": spec,
        },
        namespace=namespace,
    )


def wait_cleanup(
    cluster: ControlPlane, namespace: str, name: str, generation: int, timeout: float = 120
) -> dict[str, Any]:
    """Wait until the cleanup's pass for ``generation`` is Complete; its resource."""
    seen: dict[str, Any] = {}

    def complete() -> bool:
        seen.clear()
        seen.update(get_mcl(cluster, namespace, name))
        done = condition(seen, "Complete")
        return done.get("status") == "True" and done.get("observedGeneration") == generation

    try:
        wait_until(complete, timeout=timeout, interval=0.5, what=f"cleanup {name} complete")
    except TimeoutError as error:
        raise AssertionError(f"{error}\n{json.dumps(seen.get('status'), indent=1)}") from None
    return seen


# -- 24.1 and 24.4: the longest names, through several passes of both kinds --------------------


async def test_names_of_63_characters_run_every_pass_of_both_kinds(
    k8s_cluster: ControlPlane,
    k8s_namespace: str,
    objmig_operator: OperatorProcess,
    s3_server: LocalS3Server,
    s3_seed: S3Seeder,
    s3_client: Any,
) -> None:
    ns = k8s_namespace
    source, target, expected = await seeded_buckets(k8s_cluster, ns, s3_server, s3_seed, 6)
    # catchUp: a second round, with Jobs of longer run names (scan-r1).
    apply_migration(
        k8s_cluster, ns, LONG_MIGRATION, s3_server.endpoint_url, source, target,
        cutover={"catchUp": True},
    )  # fmt: skip

    migration = wait_cut_over(k8s_cluster, ns, LONG_MIGRATION)

    assert await listing(s3_client, target) == expected
    names = {j["metadata"]["name"] for j in jobs_of(k8s_cluster, ns)}
    assert len(names) >= 3, names  # scan-r0, copy-r0, scan-r1
    assert all(len(n) <= JOB_NAME_LIMIT for n in names), names
    for pod in pods_of(k8s_cluster, ns):
        assert len(pod["spec"]["hostname"]) <= 63, pod["spec"]["hostname"]
    assert not [e for e in events_of(k8s_cluster, ns, LONG_MIGRATION) if e["type"] == "Warning"]
    digest = migration["status"]["verification"]["digest"]

    # A dry run, then two real passes stopped by a limit: three cleanup Jobs.
    gates = {"gracePeriod": "0s", "minAge": "0s", "approval": {"digest": digest}}
    spec = {"migrationRef": {"name": LONG_MIGRATION}, **gates}
    apply_cleanup(k8s_cluster, ns, LONG_CLEANUP, dryRun=True, **spec)
    dry = wait_cleanup(k8s_cluster, ns, LONG_CLEANUP, 1)
    assert (dry["status"]["counts"]["deleted"], dry["status"]["counts"]["wouldDelete"]) == (0, 6)
    assert dry["status"]["phase"] == "Completed"
    assert len(await listing(s3_client, source)) == 6

    apply_cleanup(k8s_cluster, ns, LONG_CLEANUP, dryRun=False, limit=2, **spec)
    first = wait_cleanup(k8s_cluster, ns, LONG_CLEANUP, 2)
    counts = first["status"]["counts"]
    assert (counts["deleted"], counts.get("leftByLimit")) == (2, 4), counts
    assert first["status"]["phase"] == "Completed"
    assert "stopped at spec.limit" in condition(first, "Complete")["message"]

    apply_cleanup(k8s_cluster, ns, LONG_CLEANUP, dryRun=False, limit=5, **spec)
    second = wait_cleanup(k8s_cluster, ns, LONG_CLEANUP, 3)
    assert second["status"]["counts"]["deleted"] == 5
    assert len(await listing(s3_client, source)) == 1
    cleanup_jobs = [
        j["metadata"]["name"]
        for j in jobs_of(k8s_cluster, ns)
        if "cleanup" in j["metadata"]["name"]
    ]
    assert len(cleanup_jobs) == 3, cleanup_jobs
    assert all(len(n) <= JOB_NAME_LIMIT for n in cleanup_jobs), cleanup_jobs
    printed = k8s_cluster.kubectl("get", CLEANUPS, "-n", ns, "-o", "wide").stdout
    assert "WOULD DELETE" in printed, printed


# -- 24.1 and 24.6: a refused Job is a condition and one Event; so are other standing problems --


async def test_a_refused_job_and_other_standing_problems_say_so_once(
    k8s_cluster: ControlPlane,
    k8s_namespace: str,
    objmig_operator: OperatorProcess,
    s3_server: LocalS3Server,
    s3_seed: S3Seeder,
    s3_client: Any,
) -> None:
    ns, name = k8s_namespace, "refused"
    source, target, expected = await seeded_buckets(k8s_cluster, ns, s3_server, s3_seed, 4)
    # Valid for the CRD, refused by the API server in a pod: "gpu" is no standard resource.
    apply_migration(
        k8s_cluster, ns, name, s3_server.endpoint_url, source, target,
        workers={"resources": {"requests": {"gpu": "1"}}},
    )  # fmt: skip
    # Valid for the CRD, refused by the models: an unknown keyTemplate placeholder.
    k8s_cluster.apply_yaml(
        {
            "apiVersion": "objmig.dev/v1alpha1",
            "kind": "ObjectMigration",
            "metadata": {"name": "invalid"},
            "spec": {
                "source": {"bucket": source},
                "target": {"bucket": target, "keyTemplate": "{nope}/{key}"},
            },
        },
        namespace=ns,
    )
    apply_cleanup(k8s_cluster, ns, "orphan", migrationRef={"name": "never-was"})

    failed = wait_for(
        k8s_cluster, ns, name,
        lambda r: condition(r, "Failed").get("reason") == "JobRejected",
        what="Failed with JobRejected", operator=objmig_operator,
    )  # fmt: skip
    message = condition(failed, "Failed")["message"]
    assert "gpu" in message, message
    assert "content-type" not in message.lower(), "response headers in the message"
    wait_for(
        k8s_cluster, ns, "invalid",
        lambda r: condition(r, "Failed").get("reason") == "InvalidSpec",
        what="InvalidSpec", operator=objmig_operator,
    )  # fmt: skip
    wait_until(
        lambda: (
            condition(get_mcl(k8s_cluster, ns, "orphan"), "GatesPassed").get("reason")
            == "MigrationNotFound"
        ),
        timeout=60,
        what="MigrationNotFound",
    )

    # Ten more passes each: no new Job, no new Event, no new pod.
    wait_status_passes(objmig_operator, ns, name, 10)
    wait_status_passes(objmig_operator, ns, "invalid", 10)
    assert event_reasons(k8s_cluster, ns, name).count("JobRejected") == 1
    assert event_reasons(k8s_cluster, ns, "invalid").count("InvalidSpec") == 1
    assert event_reasons(k8s_cluster, ns, "orphan").count("MigrationNotFound") == 1
    assert not jobs_of(k8s_cluster, ns)
    log = objmig_operator.log_text()
    assert "Traceback" not in log, log[-3000:]
    assert "Timer 'reconcile' succeeded" not in log, "Kopf's per-pass success lines are logged"

    # Fixing the spec is how to try again.
    patch_spec(k8s_cluster, ns, name, {"workers": {"resources": None}})
    wait_cut_over(k8s_cluster, ns, name)
    assert await listing(s3_client, target) == expected


# -- 24.2 and 21.4: a 90-second ledger outage -------------------------------------------------


@pytest.fixture
def own_ledger_server() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL server of this test's own, on a fixed port, to stop and start again."""
    with tempfile.TemporaryDirectory(prefix="objmig-outage-") as directory:
        server = EmbeddedPostgres(Path(directory), port=free_port(), fast=True)
        server.start_blocking()
        try:
            yield server
        finally:
            server.stop_blocking()


async def test_a_ledger_outage_of_ninety_seconds_converges_to_cutover(
    k8s_cluster: ControlPlane,
    k8s_namespace: str,
    objmig_crds: list[str],
    own_ledger_server: EmbeddedPostgres,
    s3_server: LocalS3Server,
    s3_seed: S3Seeder,
    s3_client: Any,
    tmp_path: Path,
) -> None:
    ns, name, objects = k8s_namespace, "outage", 120
    dsn, port = own_ledger_server.dsn, own_ledger_server.port
    # Workers give up after 20 s and exit for the Job to start another pod: through 90 s of
    # outage every index goes through several pods, more than backoffLimitPerIndex (3)
    # allows, which only the podFailurePolicy's Ignore of exit code 75 makes possible.
    operator = OperatorProcess(
        k8s_cluster, dsn, ns, tmp_path / "operator.log", env={"OBJMIG_LEDGER_WAIT": "20s"}
    )
    operator.start()
    source, target, expected = await seeded_buckets(k8s_cluster, ns, s3_server, s3_seed, objects)
    try:
        with S3FaultProxy(s3_server.endpoint_url) as proxy:
            # The last key's write waits for the test (rows are claimed in key order): the
            # copy is still under way when the ledger goes, however fast the rest goes.
            last = Hold()
            proxy.add_rule(last, method="PUT", bucket=target, key=f"k/{objects - 1:03d}")
            apply_migration(
                k8s_cluster, ns, name, proxy.endpoint_url, source, target,
                copy={"concurrency": 2}, workers={"parallelism": 2},
            )  # fmt: skip
            wait_for(
                k8s_cluster, ns, name,
                lambda r: r.get("status", {}).get("progress", {}).get("objects", {})
                .get("succeeded", 0) >= 10,
                what="ten objects verified", operator=operator,
            )  # fmt: skip
            await last.arrived()

            own_ledger_server.stop_blocking()
            stopped = time.monotonic()
            # Its result now has to be recorded while the ledger is away.
            last.release()
            down = wait_for(
                k8s_cluster, ns, name,
                lambda r: condition(r, "LedgerUnavailable").get("status") == "True",
                what="LedgerUnavailable", operator=operator,
            )  # fmt: skip
            message = condition(down, "LedgerUnavailable")["message"]
            assert f"127.0.0.1:{port}" in message, message
            assert down["status"]["phase"] not in ("Failed", "Paused"), down["status"]["phase"]

            def gave_up_and_replaced() -> bool:
                exits = [
                    s["state"]["terminated"]["exitCode"]
                    for pod in pods_of(k8s_cluster, ns)
                    for s in pod["status"].get("containerStatuses", [])
                    if "terminated" in s.get("state", {})
                ]
                return exits.count(75) >= 2

            wait_until(gave_up_and_replaced, timeout=120, interval=1, what="workers exit 75")
            wait_until(
                lambda: time.monotonic() - stopped >= 90, timeout=120, interval=1,
                what="ninety seconds of outage",
            )  # fmt: skip
            own_ledger_server.start_blocking()

            done = wait_cut_over(k8s_cluster, ns, name, timeout=300)
        async with await Ledger.connect(dsn) as ledger:
            rows = await ledger_rows(ledger, ns, name)
    finally:
        if not own_ledger_server.running():
            own_ledger_server.start_blocking()
        # While the operator runs, so that it removes its finalizers.
        k8s_cluster.kubectl(
            "delete", GROUP_PLURAL, "--all", "-n", ns, "--timeout=30s", check=False, timeout=40
        )
        operator.stop()

    assert await listing(s3_client, target) == expected
    assert condition(done, "LedgerUnavailable")["status"] == "False"
    for job in jobs_of(k8s_cluster, ns):
        failed = [c for c in job["status"].get("conditions", []) if c["type"] == "Failed"]
        assert not failed, (job["metadata"]["name"], job["status"])
        assert not job["status"].get("failedIndexes"), job["status"]
    reasons = event_reasons(k8s_cluster, ns, name)
    assert reasons.count("LedgerUnavailable") == 1, reasons
    assert "LedgerAvailable" in reasons, reasons
    assert "WorkerJobFailed" not in reasons, reasons
    assert {row.state for row in rows} == {ObjectState.VERIFIED}
    # The workers said why they left, once each, without a traceback.
    logs = "".join(
        path.read_text(errors="replace") for path in k8s_cluster.pod_logs_dir.glob(f"{ns}_*.log")
    )
    assert "exiting for the Job to start another pod" in logs
    assert "Traceback" not in logs, logs[-3000:]


# -- 24.3: deleting a namespace during a copy -------------------------------------------------


async def test_a_namespace_deleted_during_a_copy_goes_and_takes_its_ledger_rows(
    k8s_cluster: ControlPlane,
    k8s_namespace: str,
    objmig_operator: OperatorProcess,
    s3_server: LocalS3Server,
    s3_seed: S3Seeder,
    ledger: Ledger,
) -> None:
    ns = k8s_namespace
    source, target, _ = await seeded_buckets(k8s_cluster, ns, s3_server, s3_seed, 200)
    with S3FaultProxy(s3_server.endpoint_url) as proxy:
        proxy.add_rule(Delay(0.5), method="PUT", bucket=target)
        for name, annotations in (
            ("dropped", None),
            ("kept", {"objmig.dev/retain-report": "true"}),
        ):
            apply_migration(
                k8s_cluster, ns, name, proxy.endpoint_url, source, target,
                annotations=annotations, copy={"concurrency": 2},
                workers={"parallelism": 2},
            )  # fmt: skip

        def copying(name: str) -> bool:
            status = get_om(k8s_cluster, ns, name).get("status", {})
            return status.get("phase") == "Copying" and any(
                p["status"].get("phase") == "Running"
                for p in pods_of(k8s_cluster, ns)
                if p["metadata"]["labels"].get("objmig.dev/migration") == name
            )

        wait_until(lambda: copying("dropped") and copying("kept"), timeout=120, what="copying")

        deleted = k8s_cluster.kubectl(
            "delete", "namespace", ns, "--timeout=180s", check=False, timeout=200
        )

    assert deleted.returncode == 0, deleted.stderr
    gone = k8s_cluster.kubectl("get", "namespace", ns, check=False)
    assert gone.returncode != 0, gone.stdout
    assert await ledger.find_migration(f"{ns}/dropped") is None
    kept = await ledger.find_migration(f"{ns}/kept")
    assert kept is not None
    assert await ledger_rows(ledger, ns, "kept")


# -- 23.2: the retry annotation -------------------------------------------------------------


async def test_failed_objects_are_retried_by_annotation_and_cut_over(
    k8s_cluster: ControlPlane,
    k8s_namespace: str,
    objmig_operator: OperatorProcess,
    s3_server: LocalS3Server,
    s3_seed: S3Seeder,
    s3_client: Any,
) -> None:
    ns, name = k8s_namespace, "retried"
    source, target, expected = await seeded_buckets(k8s_cluster, ns, s3_server, s3_seed, 5)
    with S3FaultProxy(s3_server.endpoint_url) as proxy:
        denied = proxy.add_rule(Deny(), bucket=source, key="k/003")
        apply_migration(k8s_cluster, ns, name, proxy.endpoint_url, source, target)
        wait_for(
            k8s_cluster, ns, name,
            lambda r: condition(r, "CutoverReady").get("reason") == "ObjectsFailed",
            what="CutoverReady ObjectsFailed", operator=objmig_operator,
        )  # fmt: skip
        proxy.remove_rule(denied)

        k8s_cluster.kubectl("annotate", GROUP_PLURAL, name, "-n", ns, "objmig.dev/retry-failed=1")
        done = wait_cut_over(k8s_cluster, ns, name)

    assert await listing(s3_client, target) == expected
    assert done["status"]["progress"]["objects"]["failed"] == 0
    retried = [e for e in events_of(k8s_cluster, ns, name) if e["reason"] == "RetryRequested"]
    assert len(retried) == 1, retried
    assert "1 failed objects pending again" in retried[0]["message"]
