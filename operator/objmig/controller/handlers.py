"""Kopf handlers: thin. Parse, call the service, write what it returns.

Importing this module registers the handlers; ``objmig operator`` imports it and runs Kopf.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable
from typing import Any

import kopf
from kubernetes_asyncio import client
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client.rest import ApiException
from prometheus_client import start_http_server

from objmig.api.conditions import Reason
from objmig.api.migration import GROUP, VERSION, ObjectMigrationStatus
from objmig.api.migration_cleanup import MigrationCleanupStatus
from objmig.api.types import parse_duration
from objmig.controller import metrics
from objmig.controller.cleanup_service import CleanupService
from objmig.controller.config import OperatorConfig
from objmig.controller.health import readiness_checks, serve_from_env
from objmig.controller.kube import Kube
from objmig.controller.leader import lead_from_env
from objmig.controller.migration_service import MigrationService, merge_patch
from objmig.controller.outcome import Outcome, describe_failure, ledger_down
from objmig.engine.bookkeeping import RateMeter
from objmig.ledger import Ledger, LedgerUnavailable, LedgerWait
from objmig.ledger.outage import DEFAULT_WAIT_SECONDS

log = logging.getLogger(__name__)

PLURAL = "objectmigrations"
CLEANUP_PLURAL = "migrationcleanups"
# Read at import: Kopf timers take their interval when they are declared.
STATUS_INTERVAL = float(os.environ.get("OBJMIG_STATUS_INTERVAL", "5"))
ANNOTATION_PREFIX = "objmig.dev"


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Configure Kopf, connect to the ledger (refusing a newer schema) and the cluster."""
    config = OperatorConfig.from_env()
    settings.persistence.finalizer = f"{ANNOTATION_PREFIX}/ledger-cleanup"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATION_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    # Long watches with a client-side timeout a little above the server's, so a silently
    # dropped connection is noticed.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    # Our Events are explicit (kopf.event); Kopf's own log-to-Event mirroring only for problems.
    settings.posting.level = logging.WARNING
    settings.peering.standalone = True

    if "health" not in memo:  # a retried start-up keeps the endpoints it opened
        memo.health = await serve_from_env()
    # At start-up the operator waits as long as a worker would; afterwards a reconcile
    # waits no longer than its interval, and says LedgerUnavailable on the resource instead.
    start_wait = (
        parse_duration(config.ledger_wait).total_seconds()
        if config.ledger_wait
        else DEFAULT_WAIT_SECONDS
    )
    memo.ledger = await Ledger.connect(config.database_url, wait=LedgerWait(timeout=start_wait))
    memo.ledger.wait.timeout = STATUS_INTERVAL
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        kube_config.load_incluster_config()  # type: ignore[no-untyped-call]
    else:
        await kube_config.load_kube_config()
    memo.api = client.ApiClient()
    memo.service = MigrationService(memo.ledger, Kube(memo.api), config)
    memo.cleanups = CleanupService(memo.ledger, Kube(memo.api), config)
    port = int(os.environ.get("OBJMIG_METRICS_PORT", "8080"))
    if port:
        start_http_server(port)
    if memo.health is not None:
        memo.health.checks.update(readiness_checks(memo.ledger, memo.api))
    # Kopf handles no resource before start-up returns: a standby replica waits here.
    memo.leader = await lead_from_env(memo.api)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    """Give the Lease to a standby at once, close the ledger pool and the API client."""
    if memo.get("leader") is not None:
        await memo.leader.release()
    if memo.get("health") is not None:
        await memo.health.stop()
    await memo.ledger.close()
    await memo.api.close()


@kopf.timer(GROUP, VERSION, PLURAL, interval=STATUS_INTERVAL, backoff=STATUS_INTERVAL)
async def reconcile(
    body: kopf.Body,
    memo: Any,
    patch: kopf.Patch,
    namespace: str | None,
    name: str,
    **_: Any,
) -> None:
    """Move the migration forward and write its status, at most once per interval."""
    if not _leading(memo):
        return
    namespace = namespace or "default"
    if "rates" not in memo:
        memo.rates = RateMeter()
    outcome = await _one_pass(
        body, memo, ObjectMigrationStatus, memo.service.reconcile(body, memo.rates)
    )
    if outcome is None:
        return
    if _write(body, patch, outcome):
        metrics.STATUS_PATCHES.labels(namespace, name).inc()
    metrics.RECONCILES.labels(namespace, name).inc()
    if outcome.current is not None and outcome.counts is not None:
        metrics.observe(namespace, name, outcome.counts, outcome.current)


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def deleted(body: kopf.Body, memo: Any, namespace: str | None, name: str, **_: Any) -> None:
    """Jobs go with their owner; the ledger rows go here, unless the report is retained."""
    try:
        await memo.service.forget(body)
    except LedgerUnavailable as error:
        # The finalizer stays until the rows can go: tried again after an interval.
        raise kopf.TemporaryError(str(error), delay=STATUS_INTERVAL) from error
    metrics.forget(namespace or "default", name)


@kopf.timer(GROUP, VERSION, CLEANUP_PLURAL, interval=STATUS_INTERVAL, backoff=STATUS_INTERVAL)
async def reconcile_cleanup(
    body: kopf.Body,
    memo: Any,
    patch: kopf.Patch,
    namespace: str | None,
    name: str,
    **_: Any,
) -> None:
    """Report the cleanup's gates, run its deletion Job once they hold, show the outcome."""
    if not _leading(memo):
        return
    outcome = await _one_pass(body, memo, MigrationCleanupStatus, memo.cleanups.reconcile(body))
    if outcome is None:
        return
    _write(body, patch, outcome)
    status = outcome.status if outcome.status is not None else dict(body.get("status") or {})
    conditions = status.get("conditions") or []
    passed = any(c.get("type") == "GatesPassed" and c.get("status") == "True" for c in conditions)
    metrics.CLEANUP_GATES_PASSED.labels(namespace or "default", name).set(1 if passed else 0)
    metrics.CLEANUP_DELETED.labels(namespace or "default", name).set(
        (status.get("counts") or {}).get("deleted", 0)
    )


@kopf.on.delete(GROUP, VERSION, CLEANUP_PLURAL)
async def cleanup_deleted(
    body: kopf.Body, memo: Any, namespace: str | None, name: str, **_: Any
) -> None:
    """Its Job goes with its owner; its per-object outcomes go here."""
    try:
        await memo.cleanups.forget(body)
    except LedgerUnavailable as error:
        raise kopf.TemporaryError(str(error), delay=STATUS_INTERVAL) from error
    metrics.forget_cleanup(namespace or "default", name)


def _leading(memo: Any) -> bool:
    """False only in the seconds between a missed Lease renewal and the exit that follows."""
    return memo.get("leader") is None or bool(memo.leader.leading())


async def _one_pass(
    body: kopf.Body,
    memo: Any,
    model: type[ObjectMigrationStatus] | type[MigrationCleanupStatus],
    reconcile: Awaitable[Outcome],
) -> Outcome | None:
    """A service's pass, or what to show when it could not be made: with the ledger away,
    the status as it was plus LedgerUnavailable; on any other failure nothing (None), and
    the failure said once (see `_failed`). The timer comes again after its interval."""
    try:
        outcome = await reconcile
    except LedgerUnavailable as error:
        return ledger_down(dict(body.get("status") or {}), model, error, STATUS_INTERVAL)
    except Exception as error:
        _failed(body, memo, error)
        return None
    memo.last_failure = None
    return outcome


def _failed(body: kopf.Body, memo: Any, error: Exception) -> None:
    """Say why a pass failed: one Warning Event and one log line (with the traceback)
    while the cause stays the same."""
    message = describe_failure(error)
    if memo.get("last_failure") == message:
        return
    memo.last_failure = message
    kopf.event(body, type="Warning", reason=Reason.RECONCILE_ERROR, message=message)
    log.warning(
        "%s/%s: reconcile failed: %s",
        body.metadata.namespace,
        body.metadata.name,
        message,
        exc_info=not isinstance(error, ApiException),
    )


def _write(body: kopf.Body, patch: kopf.Patch, outcome: Outcome) -> bool:
    """Post the outcome's Events and stage its status; True when the status changed."""
    for event in outcome.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    if outcome.status is None:
        return False
    # A merge patch keeps keys it does not mention, at every depth: null the ones that went
    # away (a stale progress.eta would otherwise stay, and look like a change every tick).
    changes = merge_patch(dict(body.get("status") or {}), outcome.status)
    patch.status.update(changes)
    return bool(changes)
