"""How the work runs and fails: `spec.workers` (the Job pods), `spec.retry` and
`spec.failurePolicy`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from objmig.api.base import ApiModel
from objmig.api.migration.common import MAX_PARALLELISM
from objmig.api.types import Duration, ResourceQuantity


class Toleration(ApiModel):
    """A Kubernetes toleration for worker pods."""

    key: str | None = Field(default=None, description="Taint key; empty matches all keys.")
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Exists or Equal.")
    value: str | None = Field(default=None, description="Taint value for Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; empty matches all."
    )
    toleration_seconds: int | None = Field(
        default=None, description="For NoExecute: how long the pod stays bound."
    )


class ResourceRequirements(ApiModel):
    """CPU and memory for each worker pod."""

    requests: dict[str, ResourceQuantity] = Field(
        default_factory=dict, description="Minimum resources, e.g. cpu: 500m, memory: 256Mi."
    )
    limits: dict[str, ResourceQuantity] = Field(
        default_factory=dict, description="Maximum resources."
    )


class WorkersSpec(ApiModel):
    """The Job pods that claim and copy objects."""

    parallelism: int = Field(
        default=2, ge=1, le=MAX_PARALLELISM, description="Worker pods run at once."
    )
    image: str | None = Field(
        default=None, description="Worker image. Absent: the operator's configured image."
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="Resources of each worker. Absent: the operator's default."
    )
    service_account_name: str | None = Field(
        default=None, description="ServiceAccount the worker pods run as (needs no RBAC)."
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels the worker pods must match."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Tolerations of the worker pods."
    )


class BackoffSpec(ApiModel):
    """Exponential, capped, jittered delay between attempts."""

    initial: Duration = Field(default="1s", description="Delay before the second attempt.")
    max: Duration = Field(default="5m", description="Longest delay between attempts.")
    factor: int = Field(default=2, ge=1, le=10, description="Growth factor per attempt.")
    jitter: bool = Field(default=True, description="Randomise each delay by up to 100%.")


class RetrySpec(ApiModel):
    """Retries of retryable errors (throttling, 5xx, resets). 403/404 are never retried."""

    attempts: int = Field(default=5, ge=1, le=100, description="Attempts per object.")
    backoff: BackoffSpec = Field(default_factory=BackoffSpec, description="Delay policy.")
    object_timeout: Duration = Field(
        default="1h", description="Longest one attempt on one object may take."
    )


class FailurePolicySpec(ApiModel):
    """How many failed objects pause the migration."""

    max_failed_objects: int | None = Field(
        default=None, ge=0, description="Pause when more objects than this have failed."
    )
    max_failure_ratio: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Pause when failed / finished exceeds this (0-1), after minObjects.",
    )
    min_objects: int = Field(
        default=100, ge=1, description="Finished objects before maxFailureRatio applies."
    )
