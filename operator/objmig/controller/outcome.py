"""What a reconcile of either resource produces (the status to write, the Events to post),
and the parts of it the operator owns itself rather than the ledger: whether the ledger
could be reached, and the failures the API server answers with."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio.client.rest import ApiException

from objmig.api.conditions import Condition, ConditionType, Reason, find_condition, set_condition
from objmig.api.migration import ObjectMigrationStatus
from objmig.api.migration_cleanup import MigrationCleanupStatus
from objmig.ledger import Counts, LedgerUnavailable


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post about the resource."""

    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass
class Outcome:
    """What a reconcile produced: the status to write (None: unchanged) and Events."""

    status: dict[str, Any] | None
    events: list[Event] = field(default_factory=list)
    current: ObjectMigrationStatus | None = None
    counts: Counts | None = None


def ledger_unavailable(
    conditions: Sequence[Condition], error: LedgerUnavailable, retry_seconds: float
) -> tuple[list[Condition], list[Event]]:
    """The conditions with ``LedgerUnavailable`` set, and an Event when it just became so.

    The rest of the status stays as it was: only the ledger knows the numbers.
    """
    message = (
        f"{error}; worker pods wait for it and the operator tries again every {retry_seconds:g} s"
    )
    before = find_condition(conditions, ConditionType.LEDGER_UNAVAILABLE)
    updated = set_condition(
        conditions,
        ConditionType.LEDGER_UNAVAILABLE,
        "True",
        Reason.LEDGER_UNAVAILABLE,
        message,
        now=datetime.now(UTC),
    )
    if before is not None and before.status == "True":
        return updated, []
    return updated, [Event("Warning", Reason.LEDGER_UNAVAILABLE, message)]


def ledger_down(
    status: Mapping[str, Any],
    model: type[ObjectMigrationStatus] | type[MigrationCleanupStatus],
    error: LedgerUnavailable,
    retry_seconds: float,
) -> Outcome:
    """What a pass shows while the ledger is away: ``status`` as it was, with the
    ``LedgerUnavailable`` condition (and an Event when that is news)."""
    try:
        previous = model.model_validate(dict(status))
    except ValueError:
        previous = model()  # a status this operator cannot read is rebuilt later
    current = previous.model_copy(deep=True)
    current.conditions, events = ledger_unavailable(current.conditions, error, retry_seconds)
    return Outcome(current.to_wire(), events)


def ledger_reachable(conditions: Sequence[Condition]) -> tuple[list[Condition], list[Event]]:
    """The conditions with a ``LedgerUnavailable`` of an outage set back to False, and an
    Event saying so; unchanged when there was no outage."""
    before = find_condition(conditions, ConditionType.LEDGER_UNAVAILABLE)
    if before is None or before.status != "True":
        return list(conditions), []
    message = "the ledger database answers again"
    updated = set_condition(
        conditions,
        ConditionType.LEDGER_UNAVAILABLE,
        "False",
        Reason.LEDGER_AVAILABLE,
        message,
        now=datetime.now(UTC),
    )
    return updated, [Event("Normal", Reason.LEDGER_AVAILABLE, message)]


def describe_failure(error: BaseException) -> str:
    """One line for an Event or a condition: the API server's own message for a refusal
    (its exception text carries every response header), else the error's type and text."""
    if isinstance(error, ApiException):
        return f"the Kubernetes API answered {error.status} {error.reason}: {api_message(error)}"
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def api_message(error: ApiException) -> str:
    """The ``message`` of the API server's Status answer."""
    try:
        return str(json.loads(error.body or b"")["message"])
    except (TypeError, ValueError, KeyError):
        return str(error.reason)
