"""Conditions in the shape of Kubernetes ``metav1.Condition``, and the rule for updating them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Literal

from pydantic import Field

from objmig.api.base import ApiModel

ConditionStatus = Literal["True", "False", "Unknown"]
REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


class Condition(ApiModel):
    """One aspect of the resource's state, as ``kubectl wait --for=condition=X`` reads it."""

    type: str = Field(
        description="Type of condition in CamelCase, e.g. CutOver.",
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        description="A CamelCase word saying why the condition has its status.",
        min_length=1,
        max_length=1024,
        pattern=REASON_PATTERN,
    )
    message: str = Field(
        default="", description="Human-readable detail about the transition.", max_length=32768
    )
    last_transition_time: datetime = Field(
        description="When the status last changed (not when the message last changed)."
    )
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="The .metadata.generation the condition was computed from.",
    )


def set_condition(
    conditions: Sequence[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    *,
    now: datetime,
    observed_generation: int | None = None,
) -> list[Condition]:
    """Return ``conditions`` with ``type_`` set, keeping its transition time if status held.

    Kubernetes clients rely on ``lastTransitionTime`` to tell how long a state has lasted, so
    it only moves when ``status`` flips; reason and message may change freely.
    """
    previous = find_condition(conditions, type_)
    transition = (
        previous.last_transition_time if previous is not None and previous.status == status else now
    )
    updated = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=transition,
        observed_generation=observed_generation,
    )
    # Replace in place: a stable order keeps status patches minimal and diffs readable.
    if previous is None:
        return [*conditions, updated]
    return [updated if c.type == type_ else c for c in conditions]


def set_conditions(
    conditions: Sequence[Condition],
    updates: Iterable[tuple[str, ConditionStatus, str, str]],
    *,
    now: datetime,
    observed_generation: int | None = None,
) -> list[Condition]:
    """Apply several ``(type, status, reason, message)`` updates with :func:`set_condition`."""
    result = list(conditions)
    for type_, status, reason, message in updates:
        result = set_condition(
            result, type_, status, reason, message, now=now, observed_generation=observed_generation
        )
    return result


def find_condition(conditions: Sequence[Condition], type_: str) -> Condition | None:
    """The condition of the given type, if present."""
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: Sequence[Condition], type_: str) -> bool:
    """Whether the condition of the given type is present with status True."""
    condition = find_condition(conditions, type_)
    return condition is not None and condition.status == "True"
