"""Proof that the local control plane + pod runner behave like a real cluster for Jobs.

These are the behaviours the objmig operator relies on: Indexed Jobs with per-pod indexes,
podFailurePolicy on exit codes, replacement of deleted pods, env from Secrets/ConfigMaps,
TTL clean-up, and long-running (restartPolicy Always) pods under a Deployment.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import ControlPlane, wait_until

pytestmark = pytest.mark.k8s


def job(name: str, script: str, **spec: Any) -> dict[str, Any]:
    """A batch/v1 Job running ``sh -c script`` with restartPolicy Never."""
    container: dict[str, Any] = {
        "name": "work",
        "image": "busybox",
        "command": ["sh", "-c", script],
    }
    container.update(spec.pop("container", {}))
    template_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    template_spec.update(spec.pop("pod", {}))
    job_spec = {"backoffLimit": 3, "template": {"spec": template_spec}, **spec}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {k: v for k, v in job_spec.items() if v is not None},
    }


def wait_job(cluster: ControlPlane, ns: str, name: str, condition: str, timeout: int = 90) -> Any:
    """Wait for a Job condition and return the Job."""
    cluster.kubectl(
        "wait",
        "-n",
        ns,
        f"--for=condition={condition}",
        f"job/{name}",
        f"--timeout={timeout}s",
        timeout=timeout + 10,
    )
    return cluster.kubectl_json("get", "-n", ns, f"job/{name}")


def job_pods(cluster: ControlPlane, ns: str, name: str) -> list[dict[str, Any]]:
    """The Job's pods still present."""
    pods = cluster.kubectl_json(
        "get", "pods", "-n", ns, "-l", f"batch.kubernetes.io/job-name={name}"
    )
    return list(pods["items"])


def test_apiserver_reports_pinned_version(k8s_cluster: ControlPlane) -> None:
    """The -ldflags version stamping worked (an unstamped build says v0.0.0)."""
    version = k8s_cluster.api_get("/version")
    expected = k8s_cluster.bin_dir.parent.name
    if expected.startswith("v1."):
        assert version["gitVersion"] == expected
    assert version["major"] == "1"
    nodes = k8s_cluster.kubectl_json("get", "nodes")["items"]
    assert [n["metadata"]["name"] for n in nodes] == [k8s_cluster.node_name]


def test_indexed_job_runs_each_index_once(k8s_cluster: ControlPlane, k8s_namespace: str) -> None:
    ns = k8s_namespace
    k8s_cluster.apply_yaml(
        job(
            "indexed",
            'echo "index=$JOB_COMPLETION_INDEX pod=$POD_NAME"',
            completions=3,
            parallelism=3,
            completionMode="Indexed",
            container={
                "env": [
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
                ]
            },
        ),
        namespace=ns,
    )
    done = wait_job(k8s_cluster, ns, "indexed", "Complete")
    assert done["status"]["succeeded"] == 3
    assert done["status"]["completedIndexes"] == "0-2"

    pods = job_pods(k8s_cluster, ns, "indexed")
    seen = {}
    for pod in pods:
        name = pod["metadata"]["name"]
        index = pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
        assert pod["status"]["phase"] == "Succeeded"
        term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        assert (term["exitCode"], term["reason"]) == (0, "Completed")
        assert k8s_cluster.pod_log(ns, name) == f"index={index} pod={name}\n"
        seen[index] = name
    assert sorted(seen) == ["0", "1", "2"]


def test_pod_failure_policy_fail_job_on_exit_code(
    k8s_cluster: ControlPlane, k8s_namespace: str
) -> None:
    ns = k8s_namespace
    k8s_cluster.apply_yaml(
        job(
            "fatal",
            "echo giving up; exit 42",
            backoffLimit=6,
            podFailurePolicy={
                "rules": [
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                    {
                        "action": "FailJob",
                        "onExitCodes": {"containerName": "work", "operator": "In", "values": [42]},
                    },
                ]
            },
        ),
        namespace=ns,
    )
    failed = wait_job(k8s_cluster, ns, "fatal", "Failed")
    cond = next(c for c in failed["status"]["conditions"] if c["type"] == "Failed")
    assert cond["reason"] == "PodFailurePolicy"
    # FailJob: no retries although backoffLimit would allow six.
    assert failed["status"]["failed"] == 1


def test_deleted_running_pod_is_replaced_and_job_completes(
    k8s_cluster: ControlPlane, k8s_namespace: str, tmp_path: Path
) -> None:
    ns = k8s_namespace
    flag = tmp_path / "second-attempt"
    # First pod: the flag is absent, it blocks until deleted. Its replacement finds the flag.
    k8s_cluster.apply_yaml(
        job(
            "replaced",
            'if [ -e "$FLAG" ]; then echo second; exit 0; fi; echo first; exec sleep 300',
            container={"env": [{"name": "FLAG", "value": str(flag)}]},
            pod={"terminationGracePeriodSeconds": 5},
        ),
        namespace=ns,
    )

    def running_pod() -> str | None:
        for pod in job_pods(k8s_cluster, ns, "replaced"):
            statuses = pod["status"].get("containerStatuses") or [{}]
            if pod["status"].get("phase") == "Running" and statuses[0].get("ready"):
                return str(pod["metadata"]["name"])
        return None

    first = wait_until(running_pod, timeout=60, what="first pod running")
    ready = next(
        c
        for c in k8s_cluster.kubectl_json("get", "pod", "-n", ns, first)["status"]["conditions"]
        if c["type"] == "Ready"
    )
    assert ready["status"] == "True"
    flag.touch()
    k8s_cluster.kubectl("delete", "pod", "-n", ns, first, "--wait=false")

    done = wait_job(k8s_cluster, ns, "replaced", "Complete")

    def first_exit_code() -> str | None:
        text = (k8s_cluster.logs_dir / "pod-runner.log").read_text(errors="replace")
        codes = re.findall(rf"{re.escape(f'{ns}/{first}/work')}: exited (\d+)", text)
        return codes[-1] if codes else None

    # Killed by the SIGTERM (143), not by the SIGKILL at the end of its grace (137).
    code = wait_until(first_exit_code, timeout=60, what="the runner's word on the first pod")
    assert code == "143", "SIGTERM should end the pod well before its grace"
    assert done["status"]["succeeded"] == 1
    assert done["status"]["failed"] == 1  # the deleted pod counted as a failure (exit 143)
    assert k8s_cluster.pod_log(ns, first) == "first\n"
    (second,) = (p["metadata"]["name"] for p in job_pods(k8s_cluster, ns, "replaced"))
    assert second != first
    assert k8s_cluster.pod_log(ns, second) == "second\n"
    # The deleted pod was removed from the API once its finalizer was dropped.
    wait_until(
        lambda: not k8s_cluster.kubectl_ok("get", "pod", "-n", ns, first),
        timeout=30,
        what="deleted pod gone",
    )


def test_backoff_limit_per_index_and_evictions_are_ignored(
    k8s_cluster: ControlPlane, k8s_namespace: str, tmp_path: Path
) -> None:
    """Index 1 exhausts its own retries; an evicted index-0 pod carries DisruptionTarget (kept by
    the runner's status patches), so the Ignore rule does not count it and it is replaced."""
    ns = k8s_namespace
    flag = tmp_path / "evicted-once"
    k8s_cluster.apply_yaml(
        job(
            "perindex",
            'if [ "$JOB_COMPLETION_INDEX" = 1 ]; then exit 3; fi;'
            ' if [ -e "$FLAG" ]; then exit 0; fi; exec sleep 300',
            completions=2,
            parallelism=2,
            completionMode="Indexed",
            backoffLimit=None,
            backoffLimitPerIndex=1,
            maxFailedIndexes=1,
            podFailurePolicy={
                "rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]
            },
            container={"env": [{"name": "FLAG", "value": str(flag)}]},
        ),
        namespace=ns,
    )

    def running_index0() -> str | None:
        for pod in job_pods(k8s_cluster, ns, "perindex"):
            index = pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
            if index == "0" and pod["status"].get("phase") == "Running":
                return str(pod["metadata"]["name"])
        return None

    victim = wait_until(running_index0, timeout=60, what="index 0 running")
    flag.touch()
    eviction = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": victim, "namespace": ns},
    }
    k8s_cluster.kubectl(
        "create",
        "--raw",
        f"/api/v1/namespaces/{ns}/pods/{victim}/eviction",
        "-f",
        "-",
        input=json.dumps(eviction),
    )
    failed = wait_job(k8s_cluster, ns, "perindex", "Failed")
    cond = next(c for c in failed["status"]["conditions"] if c["type"] == "Failed")
    assert cond["reason"] == "FailedIndexes"
    assert failed["status"]["completedIndexes"] == "0"
    assert failed["status"]["failedIndexes"] == "1"
    assert failed["status"]["failed"] == 2  # index 1 twice; the eviction was ignored
    assert k8s_cluster.pod_log(ns, victim) == ""


def test_env_from_secret_and_configmap_reaches_process(
    k8s_cluster: ControlPlane, k8s_namespace: str
) -> None:
    ns = k8s_namespace
    k8s_cluster.kubectl(
        "create", "secret", "generic", "creds", "-n", ns,
        "--from-literal=accessKeyId=AKIA-test", "--from-literal=secretAccessKey=s3cr3t $x",
    )  # fmt: skip
    k8s_cluster.kubectl("create", "configmap", "cfg", "-n", ns, "--from-literal=region=eu-1")
    k8s_cluster.apply_yaml(
        job(
            "env",
            'echo "$AWS_ACCESS_KEY_ID|$AWS_SECRET_ACCESS_KEY|$S_accessKeyId|$REGION|$URL|$NS"',
            container={
                "envFrom": [{"secretRef": {"name": "creds"}, "prefix": "S_"}],
                "env": [
                    {
                        "name": "AWS_ACCESS_KEY_ID",
                        "valueFrom": {"secretKeyRef": {"name": "creds", "key": "accessKeyId"}},
                    },
                    {
                        "name": "AWS_SECRET_ACCESS_KEY",
                        "valueFrom": {"secretKeyRef": {"name": "creds", "key": "secretAccessKey"}},
                    },
                    {
                        "name": "REGION",
                        "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "region"}},
                    },
                    {"name": "URL", "value": "https://s3.$(REGION).example"},
                    {
                        "name": "NS",
                        "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                    },
                    {
                        "name": "MISSING",
                        "valueFrom": {
                            "secretKeyRef": {"name": "nope", "key": "x", "optional": True}
                        },
                    },
                ],
            },
        ),
        namespace=ns,
    )
    wait_job(k8s_cluster, ns, "env", "Complete")
    (pod,) = job_pods(k8s_cluster, ns, "env")
    assert (
        k8s_cluster.pod_log(ns, pod["metadata"]["name"])
        == f"AKIA-test|s3cr3t $x|AKIA-test|eu-1|https://s3.eu-1.example|{ns}\n"
    )


def test_missing_secret_waits_then_runs(k8s_cluster: ControlPlane, k8s_namespace: str) -> None:
    """Like a kubelet: CreateContainerConfigError until the Secret appears, then it runs."""
    ns = k8s_namespace
    k8s_cluster.apply_yaml(
        job(
            "late",
            'echo "$TOKEN"',
            container={
                "env": [
                    {
                        "name": "TOKEN",
                        "valueFrom": {"secretKeyRef": {"name": "late", "key": "token"}},
                    }
                ]
            },
        ),
        namespace=ns,
    )

    def config_error() -> bool:
        pods = job_pods(k8s_cluster, ns, "late")
        statuses = pods[0]["status"].get("containerStatuses") if pods else None
        waiting = statuses[0]["state"].get("waiting", {}) if statuses else {}
        return bool(waiting.get("reason") == "CreateContainerConfigError")

    wait_until(config_error, timeout=30, what="CreateContainerConfigError")
    k8s_cluster.kubectl("create", "secret", "generic", "late", "-n", ns, "--from-literal=token=t0k")
    wait_job(k8s_cluster, ns, "late", "Complete")
    (pod,) = job_pods(k8s_cluster, ns, "late")
    assert k8s_cluster.pod_log(ns, pod["metadata"]["name"]) == "t0k\n"


def test_python_and_objmig_resolve_to_the_test_virtualenv(
    k8s_cluster: ControlPlane, k8s_namespace: str
) -> None:
    ns = k8s_namespace
    k8s_cluster.apply_yaml(
        job(
            "venv",
            'python -c "import sys; print(sys.prefix)"; command -v objmig',
        ),
        namespace=ns,
    )
    wait_job(k8s_cluster, ns, "venv", "Complete")
    (pod,) = job_pods(k8s_cluster, ns, "venv")
    lines = k8s_cluster.pod_log(ns, pod["metadata"]["name"]).splitlines()
    assert lines == [sys.prefix, str(Path(sys.executable).parent / "objmig")]


def test_ttl_after_finished_deletes_job_and_pods(
    k8s_cluster: ControlPlane, k8s_namespace: str
) -> None:
    ns = k8s_namespace
    k8s_cluster.apply_yaml(job("ttl", "true", ttlSecondsAfterFinished=0), namespace=ns)
    wait_until(
        lambda: (
            not k8s_cluster.kubectl_ok("get", "job", "-n", ns, "ttl")
            and not job_pods(k8s_cluster, ns, "ttl")
        ),
        timeout=60,
        what="TTL controller and GC to remove the Job and its pod",
    )


def test_suspended_job_starts_no_pods_until_resumed(
    k8s_cluster: ControlPlane, k8s_namespace: str
) -> None:
    ns = k8s_namespace
    k8s_cluster.apply_yaml(job("sus", "echo resumed", suspend=True), namespace=ns)
    wait_job(k8s_cluster, ns, "sus", "Suspended")
    assert job_pods(k8s_cluster, ns, "sus") == []
    k8s_cluster.kubectl("patch", "job", "-n", ns, "sus", "-p", '{"spec":{"suspend":false}}')
    wait_job(k8s_cluster, ns, "sus", "Complete")


def test_deployment_pod_becomes_ready(k8s_cluster: ControlPlane, k8s_namespace: str) -> None:
    """restartPolicy Always pods (Deployments) run until deleted and report Ready."""
    ns = k8s_namespace
    k8s_cluster.kubectl(
        "create", "deployment", "sleeper", "-n", ns, "--image=busybox", "--", "sleep", "300"
    )
    k8s_cluster.kubectl(
        "rollout", "status", "-n", ns, "deployment/sleeper", "--timeout=60s", timeout=70
    )
    dep = k8s_cluster.kubectl_json("get", "deployment", "-n", ns, "sleeper")
    assert dep["status"]["readyReplicas"] == 1
