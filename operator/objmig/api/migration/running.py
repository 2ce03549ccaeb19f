"""How the work runs and fails: `spec.workers` (the Job pods), `spec.retry`,
`spec.failurePolicy` and `spec.health`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from objmig.api.base import (
    DNS_SUBDOMAIN,
    ApiModel,
    LabelValue,
    QualifiedName,
    cel_rule,
    cel_validations,
)
from objmig.api.migration.common import MAX_COUNT, MAX_PARALLELISM
from objmig.api.types import (
    Duration,
    DurationBetween,
    Quantity,
    QuantityBetween,
    ResourceQuantity,
    parse_duration,
    parse_quantity,
)

_EXISTS_TAKES_NO_VALUE = "operator Exists takes no value"
_ALL_KEYS_NEED_EXISTS = "an empty key (every taint) needs operator Exists"
_SECONDS_NEED_NO_EXECUTE = "tolerationSeconds applies to effect NoExecute only"


class Toleration(ApiModel):
    """A Kubernetes toleration for worker pods (checked as the API server checks a pod's)."""

    model_config = cel_validations(
        cel_rule(
            "!has(self.operator) || self.operator != 'Exists' || !has(self.value) "
            "|| self.value == ''",
            _EXISTS_TAKES_NO_VALUE,
            field_path=".value",
        ),
        cel_rule(
            "(has(self.key) && self.key != '') || self.operator == 'Exists'",
            _ALL_KEYS_NEED_EXISTS,
            field_path=".operator",
        ),
        cel_rule(
            "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
            _SECONDS_NEED_NO_EXECUTE,
            field_path=".tolerationSeconds",
        ),
    )

    key: QualifiedName | None = Field(
        default=None, description="Taint key (a label key); empty matches all keys."
    )
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Exists or Equal.")
    value: LabelValue | None = Field(default=None, description="Taint value for Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; empty matches all."
    )
    toleration_seconds: int | None = Field(
        default=None,
        ge=0,
        le=31_536_000,
        description="For NoExecute: how long the pod stays bound, in seconds (at most a year).",
    )

    @model_validator(mode="after")
    def _as_a_pod_would_have_it(self) -> Toleration:
        if self.operator == "Exists" and self.value:
            raise ValueError(_EXISTS_TAKES_NO_VALUE)
        if not self.key and self.operator != "Exists":
            raise ValueError(_ALL_KEYS_NEED_EXISTS)
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError(_SECONDS_NEED_NO_EXECUTE)
        return self


_REQUEST_OVER_LIMIT = "a request must not exceed the limit of the same resource"


class ResourceRequirements(ApiModel):
    """CPU and memory for each worker pod."""

    model_config = cel_validations(
        cel_rule(
            "!has(self.requests) || !has(self.limits) || self.limits.all(k, "
            "!(k in self.requests) || quantity(string(self.requests[k]))"
            ".compareTo(quantity(string(self.limits[k]))) <= 0)",
            _REQUEST_OVER_LIMIT,
            field_path=".requests",
        ),
    )

    requests: dict[QualifiedName, ResourceQuantity] = Field(
        default_factory=dict,
        max_length=16,
        description="Minimum resources, e.g. cpu: 500m, memory: 256Mi.",
    )
    limits: dict[QualifiedName, ResourceQuantity] = Field(
        default_factory=dict, max_length=16, description="Maximum resources."
    )

    @model_validator(mode="after")
    def _requests_within_limits(self) -> ResourceRequirements:
        for name, limit in self.limits.items():
            request = self.requests.get(name)
            if request is not None and _resource(request) > _resource(limit):
                raise ValueError(f"{_REQUEST_OVER_LIMIT} ({name})")
        return self


class WorkersSpec(ApiModel):
    """The Job pods that claim and copy objects."""

    parallelism: int = Field(
        default=2, ge=1, le=MAX_PARALLELISM, description="Worker pods run at once."
    )
    image: str | None = Field(
        default=None,
        description="Worker image. Absent: the operator's configured image.",
        min_length=1,
        max_length=1024,
        pattern=r"^\S+$",
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="Resources of each worker. Absent: the operator's default."
    )
    service_account_name: str | None = Field(
        default=None,
        description="ServiceAccount the worker pods run as (needs no RBAC), in the resource's "
        "namespace.",
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
    )
    node_selector: dict[QualifiedName, LabelValue] = Field(
        default_factory=dict,
        max_length=32,
        description="Node labels the worker pods must match.",
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=32, description="Tolerations of the worker pods."
    )


_INITIAL_OVER_MAX = "initial must not exceed max"


class BackoffSpec(ApiModel):
    """Exponential, capped, jittered delay between attempts."""

    # Both have schema defaults, so the API server always sees both here.
    model_config = cel_validations(
        cel_rule(
            "duration(self.initial) <= duration(self.max)", _INITIAL_OVER_MAX, field_path=".initial"
        )
    )

    initial: Annotated[Duration, DurationBetween("1ms", "1h")] = Field(
        default="1s", description="Delay before the second attempt (1ms to 1h)."
    )
    max: Annotated[Duration, DurationBetween("1ms", "24h")] = Field(
        default="5m", description="Longest delay between attempts (1ms to 24h)."
    )
    factor: int = Field(default=2, ge=1, le=10, description="Growth factor per attempt.")
    jitter: bool = Field(default=True, description="Randomise each delay by up to 100%.")

    @model_validator(mode="after")
    def _initial_within_max(self) -> BackoffSpec:
        if parse_duration(self.initial) > parse_duration(self.max):
            raise ValueError(_INITIAL_OVER_MAX)
        return self


class RetrySpec(ApiModel):
    """Retries of retryable errors (throttling, 5xx, resets). 403/404 are never retried."""

    attempts: int = Field(default=5, ge=1, le=100, description="Attempts per object.")
    backoff: BackoffSpec = Field(default_factory=BackoffSpec, description="Delay policy.")
    object_timeout: Annotated[
        Duration, DurationBetween("1s", "168h", "the longest one attempt on one object may take")
    ] = Field(default="1h", description="Longest one attempt on one object may take (1s to 168h).")


class FailurePolicySpec(ApiModel):
    """How many failed objects pause the migration."""

    max_failed_objects: int | None = Field(
        default=None,
        ge=0,
        le=MAX_COUNT,
        description="Pause when more objects than this have failed.",
    )
    max_failure_ratio: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Pause when failed / finished exceeds this (0-1), after minObjects.",
    )
    min_objects: int = Field(
        default=100,
        ge=1,
        le=MAX_COUNT,
        description="Finished objects before maxFailureRatio applies.",
    )


def _resource(value: int | str) -> float:
    """A resource quantity as a number, for comparing a request with its limit."""
    if isinstance(value, int):
        return float(value)
    if value.endswith("m"):
        return float(value[:-1]) / 1000
    return float(parse_quantity(value))


class HealthSpec(ApiModel):
    """When the migration reports itself unhealthy (conditions Degraded and Stalled), short
    of pausing: the failure budget (failurePolicy) pauses, these only warn."""

    degraded_error_rate: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Degraded when more than this share of the finished objects failed, once "
        "failurePolicy.minObjects have finished (default 5%).",
    )
    stalled_after: Annotated[Duration, DurationBetween("1m", "168h")] = Field(
        default="15m",
        description="Stalled when throughput has stayed under minThroughput this long while "
        "objects wait to be copied (objects waiting for an archive restore do not count).",
    )
    min_throughput: Annotated[Quantity, QuantityBetween("0", "100Gi")] = Field(
        default="0",
        description="The throughput floor in bytes per second, e.g. 1Mi. 0: only a "
        "migration that copies nothing at all is stalled.",
    )
