"""Worker Jobs: their names and manifests (pure functions of the migration and the config).

Names are deterministic — ``<migration>-<stage>-r<round>[-w<wave>]`` — so an operator that
restarts finds the Jobs it created instead of creating them twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

from objmig.api.cleanup import MigrationCleanup
from objmig.api.migration import API_VERSION, ObjectMigration
from objmig.controller.config import OperatorConfig
from objmig.engine.secrets import SESSION_TOKEN, env_name, referenced_secrets
from objmig.worker import EXIT_INTERRUPTED, EXIT_PERMANENT

Stage = Literal["scan", "copy", "cleanup"]
MIGRATION_LABEL = "objmig.dev/migration"
CLEANUP_LABEL = "objmig.dev/cleanup"
STAGE_LABEL = "objmig.dev/stage"
WORKER_CONTAINER = "worker"


def job_name(migration: str, stage: Stage, round_: int, wave: int = 0) -> str:
    """A DNS-label-safe, deterministic Job name (at most 63 characters)."""
    suffix = f"-{stage}-r{round_}" + (f"-w{wave}" if wave else "")
    if len(migration) + len(suffix) <= 63:
        return migration + suffix
    digest = hashlib.sha256(migration.encode()).hexdigest()[:8]
    return f"{migration[: 63 - len(suffix) - 9]}-{digest}{suffix}"


@dataclass(frozen=True)
class JobWant:
    """The Job a migration needs now."""

    name: str
    stage: Stage
    parallelism: int
    suspend: bool
    scan_id: int | None = None


def worker_env(migration: ObjectMigration, config: OperatorConfig) -> list[dict[str, Any]]:
    """The worker's environment: the ledger URL and every Secret key the spec references."""
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
    env.append({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    return env


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
                        # leases back: replace the pod without using up the index's retries.
                        "action": "Ignore",
                        "onExitCodes": {
                            "containerName": WORKER_CONTAINER,
                            "operator": "In",
                            "values": [EXIT_INTERRUPTED],
                        },
                    },
                ]
            },
            "ttlSecondsAfterFinished": config.job_ttl_seconds,
            "suspend": want.suspend,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
