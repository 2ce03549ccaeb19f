"""Worker Jobs: their names and manifests (pure functions of the migration and the config).

Names are deterministic (:func:`job_name`), so an operator that restarts finds the Jobs it
created instead of creating them twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

from objmig.api.migration import API_VERSION, MAX_PARALLELISM, ObjectMigration, ObjectMigrationSpec
from objmig.api.migration_cleanup import MigrationCleanup
from objmig.controller.config import OperatorConfig
from objmig.engine.context import split_target_path
from objmig.engine.lifecycle import RunObservation
from objmig.engine.secrets import (
    SESSION_TOKEN,
    config_map_env_name,
    env_name,
    referenced_config_maps,
    referenced_secrets,
)
from objmig.pod.exit_codes import EXIT_INTERRUPTED, EXIT_LEDGER_UNAVAILABLE, EXIT_PERMANENT

Stage = Literal["scan", "copy", "audit", "cleanup"]
#: The image's user and group (Dockerfile): volumes are made writable for this group.
WORKER_GID = 10001
MIGRATION_LABEL = "objmig.dev/migration"
CLEANUP_LABEL = "objmig.dev/cleanup"
STAGE_LABEL = "objmig.dev/stage"
WORKER_CONTAINER = "worker"


# An Indexed Job names each pod's hostname ``<job>-<index>``, and a hostname is a DNS label
# (63 characters): a Job name must leave room for the largest index its parallelism allows.
JOB_NAME_LIMIT = 63 - len(f"-{MAX_PARALLELISM - 1}")


def job_name(resource: str, run: str) -> str:
    """The deterministic name of one of a resource's Jobs: ``<resource>-<run>``.

    ``run`` names the stage and its attempt (:func:`stage_run`, :func:`cleanup_run`), so a
    retry gets a fresh Job instead of finding the failed one again, and a restarted operator
    finds the Jobs it made. A resource name too long for that keeps a prefix and gains a hash
    of the whole name: every name the CRD accepts gets distinct, valid Job names through any
    number of runs.
    """
    if len(resource) + 1 + len(run) <= JOB_NAME_LIMIT:
        return f"{resource}-{run}"
    digest = hashlib.sha256(resource.encode()).hexdigest()[:8]
    prefix = resource[: JOB_NAME_LIMIT - len(run) - len(digest) - 2]
    return f"{prefix}-{digest}-{run}"


def stage_run(stage: Stage, round_: int, wave: int = 0) -> str:
    """A migration stage's run: the catch-up round, and the wave within it (a spec change
    after a failure counts the wave on)."""
    return f"{stage}-r{round_}" + (f"-w{wave}" if wave else "")


def cleanup_run(pass_: int) -> str:
    """A cleanup's run: each pass (a changed spec starts one) gets a Job of its own."""
    return "cleanup" + (f"-p{pass_}" if pass_ else "")


@dataclass(frozen=True)
class JobWant:
    """The Job a migration needs now."""

    name: str
    stage: Stage
    parallelism: int
    suspend: bool
    scan_id: int | None = None


@dataclass(frozen=True)
class JobObservation:
    """The parts of a Job's status the operator needs."""

    name: str
    active: int = 0
    succeeded: int = 0
    failed: int = 0
    complete: bool = False
    failed_reason: str | None = None  # the Failed condition's reason, when the Job failed
    failed_message: str = ""
    suspended: bool = False
    parallelism: int = 0

    @property
    def finished(self) -> bool:
        """Complete or failed: no pod will run for it any more."""
        return self.complete or self.failed_reason is not None

    def run(self) -> RunObservation:
        """The Job as the lifecycle sees a stage's run."""
        if self.failed_reason is not None:
            return RunObservation(failed_message=f"Job {self.name}: {self.failed_message}")
        return RunObservation(complete=self.complete)


def worker_env(migration: ObjectMigration, config: OperatorConfig) -> list[dict[str, Any]]:
    """The worker's environment: the ledger URL and every Secret and ConfigMap key the spec
    references."""
    env: list[dict[str, Any]] = []
    if config.database_secret is not None:
        env.append(
            {
                "name": "OBJMIG_DATABASE_URL",
                "valueFrom": {
                    "secretKeyRef": {
                        "name": config.database_secret.name,
                        "key": config.database_secret.key,
                    }
                },
            }
        )
    else:
        env.append({"name": "OBJMIG_DATABASE_URL", "value": config.database_url})
    for secret, key in referenced_secrets(migration.spec):
        env.append(
            {
                "name": env_name(secret, key),
                "valueFrom": {
                    "secretKeyRef": {
                        "name": secret,
                        "key": key,
                        # A session token is optional; everything else must be there.
                        "optional": key == SESSION_TOKEN,
                    }
                },
            }
        )
    for config_map, key in referenced_config_maps(migration.spec):
        env.append(
            {
                "name": config_map_env_name(config_map, key),
                "valueFrom": {"configMapKeyRef": {"name": config_map, "key": key}},
            }
        )
    env.append({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    if config.ledger_wait is not None:
        env.append({"name": "OBJMIG_LEDGER_WAIT", "value": config.ledger_wait})
    return env


def volumes(spec: ObjectMigrationSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The claims a directory source or target names, and where the worker mounts them:
    a source read-only at its path, a target at its root (the path before `{bucket}`)."""
    claims: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    sides = (
        ("source", spec.source.filesystem, True),
        ("target", spec.target.filesystem, False),
    )
    for name, directory, read_only in sides:
        if directory is None or directory.claim_name is None:
            continue
        path = directory.path if read_only else split_target_path(directory.path)[0]
        claims.append(
            {
                "name": name,
                "persistentVolumeClaim": {"claimName": directory.claim_name, "readOnly": read_only},
            }
        )
        mounts.append({"name": name, "mountPath": path, "readOnly": read_only})
    return claims, mounts


def worker_job(migration: ObjectMigration, want: JobWant, config: OperatorConfig) -> dict[str, Any]:
    """The Indexed Job manifest for one stage of a migration."""
    meta = migration.metadata
    command = [
        "objmig",
        "worker",
        "--migration",
        f"{meta.namespace}/{meta.name}",
        "--stage",
        want.stage,
        *(["--scan-id", str(want.scan_id)] if want.scan_id is not None else []),
    ]
    return _job(
        migration,
        want,
        config,
        owner={"kind": "ObjectMigration", "name": meta.name, "uid": meta.uid},
        labels={MIGRATION_LABEL: meta.name, STAGE_LABEL: want.stage},
        command=command,
    )


def cleanup_job(
    cleanup: MigrationCleanup, migration: ObjectMigration, want: JobWant, config: OperatorConfig
) -> dict[str, Any]:
    """The Job that deletes a cleanup's objects, with the migration's credentials."""
    meta = cleanup.metadata
    command = [
        "objmig",
        "worker",
        "--migration",
        f"{migration.metadata.namespace}/{migration.metadata.name}",
        "--stage",
        "cleanup",
        "--cleanup",
        f"{meta.namespace}/{meta.name}",
    ]
    return _job(
        migration.model_copy(
            update={"spec": migration.spec.model_copy(update={"workers": cleanup.spec.workers})}
        ),
        want,
        config,
        owner={"kind": "MigrationCleanup", "name": meta.name, "uid": meta.uid},
        labels={CLEANUP_LABEL: meta.name, STAGE_LABEL: "cleanup"},
        command=command,
    )


def _job(
    migration: ObjectMigration,
    want: JobWant,
    config: OperatorConfig,
    *,
    owner: dict[str, Any],
    labels: dict[str, str],
    command: list[str],
) -> dict[str, Any]:
    meta = migration.metadata
    workers = migration.spec.workers
    labels = {
        "app.kubernetes.io/name": "objmig",
        "app.kubernetes.io/component": "worker",
        "app.kubernetes.io/managed-by": "objmig",
        **labels,
    }
    container: dict[str, Any] = {
        "name": WORKER_CONTAINER,
        "image": workers.image or config.worker_image,
        "command": command,
        "env": worker_env(migration, config),
        "resources": (
            workers.resources.to_wire() if workers.resources else config.worker_resources
        ),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "automountServiceAccountToken": False,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
    }
    claims, mounts = volumes(migration.spec)
    if claims:
        pod_spec["volumes"] = claims
        container["volumeMounts"] = mounts
        # Claims that support it are made group-writable for the image's user.
        pod_spec["securityContext"]["fsGroup"] = WORKER_GID
    service_account = workers.service_account_name or config.worker_service_account
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    if workers.node_selector:
        pod_spec["nodeSelector"] = dict(workers.node_selector)
    if workers.tolerations:
        pod_spec["tolerations"] = [t.to_wire() for t in workers.tolerations]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": want.name,
            "namespace": meta.namespace,
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    **owner,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "completionMode": "Indexed",
            # Equal completions and parallelism make the Job elastic: both can be patched.
            "completions": want.parallelism,
            "parallelism": want.parallelism,
            "backoffLimitPerIndex": config.backoff_limit_per_index,
            "podFailurePolicy": {
                "rules": [
                    {
                        # Bad credentials or a missing bucket: retrying the pod cannot help.
                        "action": "FailIndex",
                        "onExitCodes": {
                            "containerName": WORKER_CONTAINER,
                            "operator": "In",
                            "values": [EXIT_PERMANENT],
                        },
                    },
                    {
                        # Evictions and preemptions are not the worker's fault.
                        "action": "Ignore",
                        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                    },
                    {
                        # Stopped by SIGTERM (pod deleted, Job suspended) after giving its
                        # leases back, or gave up waiting for an unreachable ledger: replace
                        # the pod without using up the index's retries.
                        "action": "Ignore",
                        "onExitCodes": {
                            "containerName": WORKER_CONTAINER,
                            "operator": "In",
                            "values": [EXIT_LEDGER_UNAVAILABLE, EXIT_INTERRUPTED],
                        },
                    },
                ]
            },
            "ttlSecondsAfterFinished": config.job_ttl_seconds,
            "suspend": want.suspend,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
