"""The operator's Kubernetes I/O beyond its own resources: Jobs, ConfigMaps, Secrets.

Thin wrappers over kubernetes_asyncio; every decision about *what* to do lives elsewhere.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from objmig.api.migration import ConfigMapAction
from objmig.controller.jobs import MIGRATION_LABEL, JobObservation
from objmig.controller.outcome import api_message, describe_failure

T = TypeVar("T")

#: Seconds a namespace's phase is taken as known: every resource of a namespace asks each
#: reconcile, and namespaces rarely start terminating.
NAMESPACE_TTL = 5.0


class KubeRefused(RuntimeError):
    """The API server refused a write. The message is its own, without response headers."""

    def __init__(self, what: str, error: ApiException) -> None:
        self.status = int(error.status or 0)
        message = api_message(error)
        #: Refused because the namespace is being deleted: nothing is to be done about it.
        self.namespace_terminating = "NamespaceTerminating" in str(error.body or "") or (
            "being terminated" in message
        )
        #: Refused by a ResourceQuota, which may have room again later.
        self.over_quota = "exceeded quota" in message
        super().__init__(f"{what}: {describe_failure(error)}")

    @property
    def permanent(self) -> bool:
        """A refusal that the same request would meet again (an invalid Job, a forbidden
        one): only a change of the spec can help. Conflicts, throttling, quotas and server
        errors are worth another try."""
        return (
            400 <= self.status < 500
            and self.status not in (408, 409, 429)
            and not (self.namespace_terminating or self.over_quota)
        )


class Kube:
    """Jobs, ConfigMaps, Secrets and namespaces of one cluster."""

    def __init__(self, api: client.ApiClient) -> None:
        self._batch = client.BatchV1Api(api)
        self._core = client.CoreV1Api(api)
        self._namespaces: dict[str, tuple[float, bool]] = {}

    async def jobs_of(
        self, namespace: str, owner: str, label: str = MIGRATION_LABEL
    ) -> dict[str, JobObservation]:
        """The Jobs of a migration (or, with ``label``, of a cleanup) by name."""
        jobs = await self._batch.list_namespaced_job(namespace, label_selector=f"{label}={owner}")
        return {job.metadata.name: _observe(job) for job in jobs.items}

    async def create_job(self, manifest: dict[str, Any]) -> bool:
        """Create a Job; False when one of that name exists already (a previous attempt).

        Raises:
            KubeRefused: the API server refused the Job.
        """
        # The client serialises plain dicts as they are; building V1Job objects would only
        # round-trip the same manifest through another type.
        body: Any = manifest
        namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        try:
            await self._batch.create_namespaced_job(namespace, body)
        except ApiException as error:
            if error.status == 409:
                return False
            raise KubeRefused(f"creating Job {namespace}/{name}", error) from None
        return True

    async def scale_job(
        self, namespace: str, name: str, parallelism: int, *, suspend: bool
    ) -> None:
        """Set parallelism (and completions, which must stay equal) and suspension."""
        spec = {"parallelism": parallelism, "completions": parallelism, "suspend": suspend}
        await self._patch_job(namespace, name, {"spec": spec})

    async def suspend_job(self, namespace: str, name: str, suspend: bool) -> None:
        """Suspend or resume one Job."""
        await self._patch_job(namespace, name, {"spec": {"suspend": suspend}})

    async def _patch_job(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        try:
            await self._batch.patch_namespaced_job(name, namespace, patch)
        except ApiException as error:
            raise KubeRefused(f"changing Job {namespace}/{name}", error) from None

    async def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job now; its pods follow (garbage collector). Gone already is fine."""
        try:
            await self._batch.delete_namespaced_job(
                name, namespace, propagation_policy="Background"
            )
        except ApiException as error:
            if error.status != 404:
                raise KubeRefused(f"deleting Job {namespace}/{name}", error) from None

    async def namespace_terminating(self, namespace: str) -> bool:
        """Whether the namespace is being deleted (or is gone). False when the operator may
        not read namespaces: it then learns of it from refused creations instead."""
        now = time.monotonic()
        known = self._namespaces.get(namespace)
        if known is not None and now - known[0] < NAMESPACE_TTL:
            return known[1]
        try:
            found = await self._core.read_namespace(namespace)
            terminating = found.metadata.deletion_timestamp is not None or (
                found.status is not None and found.status.phase == "Terminating"
            )
        except ApiException as error:
            if error.status == 404:
                terminating = True
            elif error.status == 403:
                terminating = False
            else:
                raise
        self._namespaces[namespace] = (now, terminating)
        return terminating

    async def secret_has_key(self, namespace: str, name: str, key: str) -> bool | None:
        """Whether a Secret exists with `key`; None when the operator may not read Secrets
        (the chart's rbac.readSecrets: false)."""
        try:
            return await self.read_secret(namespace, name, key) is not None
        except ApiException as error:
            if error.status == 403:
                return None
            raise

    async def read_secret(self, namespace: str, name: str, key: str) -> str | None:
        """One value of a Secret, or None when the Secret or the key is missing."""
        try:
            secret = await self._core.read_namespaced_secret(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        value = (secret.data or {}).get(key)
        return base64.b64decode(value).decode() if value is not None else None

    async def config_map_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """A ConfigMap's data (None when the ConfigMap does not exist)."""
        try:
            found = await self._core.read_namespaced_config_map(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return dict(found.data or {})

    async def patch_config_map(
        self, namespace: str, name: str, data: dict[str, str | None]
    ) -> None:
        """Merge ``data`` into a ConfigMap; a None value removes the key."""
        await self._core.patch_namespaced_config_map(name, namespace, {"data": data})


class ConfigMapActionError(RuntimeError):
    """The cutover's ConfigMap could not be read or written; the message says which and why."""


class KubeConfigMaps:
    """The cutover's ConfigMap action against the real cluster (see ``ConfigMapWriter``).

    The action patches a ConfigMap the application owns and never creates one: a missing
    ConfigMap is an error, found when its previous values are read, before any action.
    """

    def __init__(self, kube: Kube, namespace: str) -> None:
        self._kube = kube
        self._namespace = namespace

    async def read(self, action: ConfigMapAction) -> dict[str, str | None]:
        """The current values of the action's keys (None: the key is absent)."""
        current = await self._call(self._kube.config_map_data(self._namespace, action.name))
        if current is None:
            raise ConfigMapActionError(
                f"ConfigMap {self._namespace}/{action.name} (spec.cutover.configMapRef) does "
                "not exist; the cutover patches it and does not create it"
            )
        return {key: current.get(key) for key in action.data}

    async def apply(self, action: ConfigMapAction) -> None:
        """Set the action's values."""
        await self._call(
            self._kube.patch_config_map(self._namespace, action.name, dict(action.data))
        )

    async def restore(self, action: ConfigMapAction, previous: dict[str, str | None]) -> None:
        """Put the previous values back; keys that were absent are removed again."""
        restore = {key: previous.get(key) for key in action.data}
        if all(value is None for value in restore.values()) and (
            await self._call(self._kube.config_map_data(self._namespace, action.name)) is None
        ):
            return  # keys to remove from a ConfigMap that is gone: nothing is left to undo
        await self._call(self._kube.patch_config_map(self._namespace, action.name, restore))

    async def _call(self, request: Awaitable[T]) -> T:
        # ApiException's text carries every response header; the API's own message is
        # what a condition should show.
        try:
            return await request
        except ApiException as error:
            raise ConfigMapActionError(
                f"ConfigMap {self._namespace}: HTTP {error.status}: {api_message(error)}"
            ) from None


def _observe(job: Any) -> JobObservation:
    status = job.status
    conditions = {c.type: c for c in (status.conditions or []) if c.status == "True"}
    failed = conditions.get("Failed")
    return JobObservation(
        name=job.metadata.name,
        active=status.active or 0,
        succeeded=status.succeeded or 0,
        failed=status.failed or 0,
        complete="Complete" in conditions,
        failed_reason=(failed.reason or "Failed") if failed is not None else None,
        failed_message=(failed.message or "") if failed is not None else "",
        suspended=bool(job.spec.suspend),
        parallelism=job.spec.parallelism or 0,
    )
