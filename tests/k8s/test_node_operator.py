"""objmig on a real node: the image built from the Dockerfile, run by kubelet, containerd, runc.

``helm install`` of charts/objmig with that image on the ``k8s_node`` cluster (a real
kube-scheduler and kubelet; see tests/support/node.py), then what a cluster does to our pods
and what the pod runner cannot show: the chart's security settings as the kernel applies
them, the kubelet's probes, memory limits (OOM kills), container restarts, the Job
controller replacing a deleted pod, and a MigrationCleanup's Job. PostgreSQL and MinIO run
on the host's loopback as for every other test; the node reaches them through relays at
``10.88.0.2:<port>``.

The tests of this module share one release and run in order (a failed one leaves the
operator as it was, and the next ones may fail with it).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from objmig.local.postgres import EmbeddedPostgres
from tests.k8s.test_packaging import helm
from tests.support.cluster import wait_until
from tests.support.node import NodeCluster
from tests.unit.test_packaging_static import CHART

pytestmark = [pytest.mark.k8s, pytest.mark.node, pytest.mark.slow]

OPERATOR = "app.kubernetes.io/component=operator"
# Fast probes, so a test sees the kubelet act in seconds; the chart's defaults are slower.
PROBES = {
    "livenessProbe": {
        "initialDelaySeconds": 5,
        "periodSeconds": 3,
        "timeoutSeconds": 2,
        "failureThreshold": 3,
        "terminationGracePeriodSeconds": 3,
    },
    "readinessProbe": {"periodSeconds": 2, "timeoutSeconds": 3, "failureThreshold": 2},
}


@dataclass
class Release:
    """One helm release of the chart on the node, serving the namespace ``apps``."""

    cluster: NodeCluster
    namespace: str
    apps: str
    name: str
    database_url: str  # as the host reaches it
    postgres_port: int

    def pods(self, selector: str = OPERATOR, namespace: str | None = None) -> list[dict[str, Any]]:
        return list(
            self.cluster.kubectl_json(
                "get", "pods", "-n", namespace or self.namespace, "-l", selector
            )["items"]
        )

    def operator_pod(self) -> dict[str, Any]:
        (pod,) = [p for p in self.pods() if not p["metadata"].get("deletionTimestamp")]
        return pod

    def wait_operator_ready(self, timeout: float = 120) -> dict[str, Any]:
        self.cluster.kubectl(
            "wait", "-n", self.namespace, "-l", OPERATOR, "--for=condition=Ready", "pod",
            f"--timeout={timeout:.0f}s", timeout=timeout + 15,
        )  # fmt: skip
        return self.operator_pod()

    def events(self, pod: str) -> list[dict[str, Any]]:
        return list(
            self.cluster.kubectl_json(
                "get", "events", "-n", self.namespace,
                "--field-selector", f"involvedObject.name={pod}",
            )["items"]
        )  # fmt: skip


def container_status(pod: dict[str, Any], name: str = "operator") -> dict[str, Any]:
    for status in pod.get("status", {}).get("containerStatuses", []):
        if status["name"] == name:
            return dict(status)
    return {}


def ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in pod.get("status", {}).get("conditions", [])
    )


async def _create_database(server: EmbeddedPostgres, name: str, *, drop: bool = False) -> None:
    admin = await asyncpg.connect(server.dsn)
    try:
        # The name is generated here, never user input.
        if drop:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


def install(
    cluster: NodeCluster,
    postgres: EmbeddedPostgres,
    workdir: Path,
    *,
    extra_values: dict[str, Any] | None = None,
) -> Release:
    """Namespaces, a ledger database, ``helm install``; returns once the operator is Ready."""
    assert cluster.images is not None
    token = secrets.token_hex(3)
    namespace, apps, name = f"objmig-{token}", f"apps-{token}", f"objmig-{token}"
    for ns in (namespace, apps):
        cluster.kubectl("create", "namespace", ns)
    database = f"node_{token}"
    asyncio.run(_create_database(postgres, database))
    node_url = postgres.dsn_for(database).replace(
        f"127.0.0.1:{postgres.port}", cluster.expose(postgres.port)
    )
    values = {
        "image": {
            "repository": cluster.images.objmig_repository,
            "tag": cluster.images.objmig_tag,
            "pullPolicy": "IfNotPresent",
        },
        "watchNamespaces": [apps],
        "externalDatabase": {"url": node_url},
        "operator": {"statusInterval": 1, "jobTTLSeconds": 600, **PROBES},
        **(extra_values or {}),
    }
    values_file = workdir / f"values-{token}.yaml"
    values_file.write_text(yaml.safe_dump(values))
    helm(
        cluster, "install", name, str(CHART), "--namespace", namespace, "--values", str(values_file)
    )
    release = Release(cluster, namespace, apps, name, postgres.dsn_for(database), postgres.port)
    return release


def uninstall(release: Release, postgres: EmbeddedPostgres) -> None:
    cluster = release.cluster
    # Migrations first, while the operator still runs their finalizers.
    cluster.kubectl(
        "delete", "objectmigrations,migrationcleanups", "--all", "-n", release.apps,
        "--timeout=60s", check=False, timeout=75,
    )  # fmt: skip
    helm(cluster, "uninstall", release.name, "--namespace", release.namespace, check=False)
    for ns in (release.apps, release.namespace):
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    asyncio.run(_create_database(postgres, release.database_url.rsplit("/", 1)[1], drop=True))


@pytest.fixture(scope="module")
def release(
    k8s_node: NodeCluster,
    postgres_server: EmbeddedPostgres,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Release]:
    started = time.monotonic()
    installed = install(k8s_node, postgres_server, tmp_path_factory.mktemp("release"))
    try:
        installed.wait_operator_ready()
        print(f"helm install to operator Ready: {time.monotonic() - started:.1f}s")
        yield installed
    finally:
        uninstall(installed, postgres_server)


# -- tests ------------------------------------------------------------------------------------


def test_the_operator_pod_runs_as_the_chart_says_as_the_kernel_sees_it(release: Release) -> None:
    cluster = release.cluster
    assert cluster.images is not None
    pod = release.operator_pod()
    status = container_status(pod)
    assert status["image"].endswith(cluster.images.objmig)
    # Nothing pulled: the image was imported into containerd before the node started.
    pulled = [
        e["message"] for e in release.events(pod["metadata"]["name"]) if e["reason"] == "Pulled"
    ]
    assert pulled, "no Pulled event"
    assert all("already present on machine" in message for message in pulled), pulled

    # What runc applied, read from the container's main process on the host.
    pid = cluster.container_host_pid(status["containerID"])
    proc = {
        key: value.strip()
        for key, _, value in (
            line.partition(":") for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        )
    }
    assert proc["Uid"].split() == ["10001"] * 4, proc["Uid"]  # runAsUser, the image's USER
    assert proc["Gid"].split() == ["10001"] * 4, proc["Gid"]
    for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(proc[caps], 16) == 0, f"{caps}={proc[caps]}"  # capabilities: drop ALL
    assert proc["NoNewPrivs"] == "1"  # allowPrivilegeEscalation: false
    assert proc["Seccomp"] == "2"  # a filter: seccompProfile RuntimeDefault
    mounts = {
        fields[4]: fields[5].split(",")
        for fields in (
            line.split() for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
        )
    }
    assert "ro" in mounts["/"], mounts["/"]  # readOnlyRootFilesystem
    assert "rw" in mounts["/tmp"], mounts["/tmp"]  # the chart's emptyDir
    assert "ro" in mounts["/run/secrets/kubernetes.io/serviceaccount"]  # /var/run is /run


def test_readiness_follows_the_ledger_and_liveness_restarts_a_wedged_operator(
    release: Release,
) -> None:
    cluster = release.cluster
    pod = release.operator_pod()
    name = pod["metadata"]["name"]
    restarts = container_status(pod)["restartCount"]

    # The ledger goes away: the kubelet's readiness probe takes the pod out of service...
    ledger = cluster.relay(release.postgres_port)
    ledger.stop()
    try:
        wait_until(
            lambda: not ready(release.operator_pod()), timeout=60, what="the pod to turn unready"
        )
    finally:
        ledger.start()
    failed = [e["message"] for e in release.events(name) if e["reason"] == "Unhealthy"]
    assert any("Readiness probe failed" in m and "503" in m for m in failed), failed
    # ...and back once it answers again; the process was not restarted for it.
    pod = release.wait_operator_ready(timeout=60)
    assert container_status(pod)["restartCount"] == restarts

    # A wedged process (stopped, as if deadlocked) fails the liveness probe and is restarted.
    cluster.signal_container(container_status(pod)["containerID"], "SIGSTOP")
    wait_until(
        lambda: container_status(release.operator_pod())["restartCount"] > restarts,
        timeout=90,
        what="the kubelet to restart the operator",
    )
    failed = [e["message"] for e in release.events(name) if e["reason"] == "Unhealthy"]
    assert any("Liveness probe failed" in m for m in failed), failed
    pod = release.wait_operator_ready(timeout=90)
    last = container_status(pod)["lastState"]["terminated"]
    assert last["exitCode"] == 137, last  # SIGKILL after the probe's grace period
