"""The scan and copy stages of a worker Job pod: one stage of one migration.

The operator stores the migration's spec in the ledger and maps every Secret the spec
references into the pod's environment, so a worker needs no Kubernetes API access at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

from objmig.api.conditions import Reason, s3_reason
from objmig.api.migration import ObjectMeta, ObjectMigration, ObjectMigrationSpec
from objmig.engine.audit import run_audit
from objmig.engine.bookkeeping import record_failure, record_store_findings
from objmig.engine.claim_loop import ClaimLoop
from objmig.engine.context import MigrationContext, check_access, check_application
from objmig.engine.pipeline.outcomes import ApplicationError, ConfigurationError
from objmig.engine.scan import run_scan, scan_failure
from objmig.engine.secrets import ConfigMapNotFound, EnvConfigMaps, EnvSecrets, SecretNotFound
from objmig.ledger import Ledger, LedgerUnavailable, LedgerWait
from objmig.pod.exit_codes import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_PERMANENT
from objmig.pod.ledger_access import with_ledger
from objmig.storage.errors import classify

log = logging.getLogger("objmig.worker")
T = TypeVar("T")


async def work(
    database_url: str,
    name: str,
    stage: str,
    owner: str | None,
    scan_id: int | None = None,
    *,
    wait: LedgerWait | None = None,
) -> int:
    """Run one stage of one migration to its end; returns the process exit code."""

    async def stage_of(ledger: Ledger) -> int:
        return await _work(ledger, name, stage, owner, scan_id)

    return await with_ledger(database_url, wait or LedgerWait(), stage_of)


async def _work(
    ledger: Ledger, name: str, stage: str, owner: str | None, scan_id: int | None
) -> int:
    """One stage of one migration, on a connected ledger."""
    migration_id = await ledger.find_migration(name)
    if migration_id is None:
        log.error("no migration %s in the ledger", name)
        return EXIT_PERMANENT
    state = await ledger.get_state(migration_id)
    namespace, _, short = name.partition("/")
    migration = ObjectMigration(
        metadata=ObjectMeta(name=short, namespace=namespace),
        spec=ObjectMigrationSpec.model_validate(state.spec),
    )
    try:
        context = MigrationContext.resolve(migration, EnvSecrets(), EnvConfigMaps())
    except (SecretNotFound, ConfigMapNotFound, ValueError) as error:
        log.error("cannot start: %s", error)
        await record_failure(ledger, migration_id, Reason.CONFIGURATION_ERROR, str(error))
        return EXIT_PERMANENT
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    refused = await check_access(context)
    await record_store_findings(ledger, migration_id, context.features.values())
    if refused is not None:
        code, message = refused
        log.error("%s", message)
        await record_failure(ledger, migration_id, s3_reason(code), message)
        return EXIT_PERMANENT
    try:
        await check_application(context)
        if stage == "audit":
            rounds = (await ledger.get_state(migration_id)).rounds
            audit = run_audit(ledger, migration_id, context, round_=rounds.round, wave=rounds.wave)
            if await _unless_stopped(audit, stop) is None:
                log.info("audit stopped on request; it runs again")
                return EXIT_INTERRUPTED
        elif stage == "scan":
            async with context.clients() as (source, _):
                scan = run_scan(ledger, migration_id, context, source, scan_id=scan_id)
                outcome = await _unless_stopped(scan, stop)
            if outcome is None:
                log.info("scan stopped on request; a later scan starts it again")
                return EXIT_INTERRUPTED
            log.info("scan %d: %s", outcome.scan_id, outcome.result)
        else:
            # Every pod of the Job shares the work: each claims its share of the bytes.
            share = migration.spec.workers.parallelism
            worker = ClaimLoop(ledger, migration_id, context, owner=owner, share=share)
            stats = await worker.run(stop)
            if stop.is_set():
                log.info("worker stopped on request: %s", dict(stats.results))
                return EXIT_INTERRUPTED
            log.info("worker done: %s", dict(stats.results))
    except ConfigurationError as error:
        log.error("%s", error)
        await record_failure(ledger, migration_id, s3_reason(error.error.code), str(error))
        return EXIT_PERMANENT
    except ConfigMapNotFound as error:
        log.error("%s", error)
        await record_failure(ledger, migration_id, Reason.MANIFEST_NOT_FOUND, str(error))
        return EXIT_PERMANENT
    except ApplicationError as error:
        log.error("%s", error)
        await record_failure(ledger, migration_id, error.reason, str(error))
        return EXIT_PERMANENT
    except LedgerUnavailable:
        raise  # the pod exits for another to wait (see `with_ledger`)
    except Exception as exc:
        # The scan does not classify its S3 errors itself: bad credentials or a missing
        # bucket while listing must stop the migration, not crash-loop the pod.
        problem = classify(exc)
        if not problem.is_config_error:
            if stage != "scan":
                raise  # possibly transient: the Job retries the pod
            # The ledger's scan record keeps the cause for the Failed condition,
            # should the Job run out of retries.
            listed = migration.spec.source
            log.error("%s", scan_failure(exc, listed.bucket, listed.prefix))
            return EXIT_FAILED
        where = f" of s3 bucket {migration.spec.source.bucket!r}" if stage == "scan" else ""
        message = f"{stage}{where}: {problem.message}"
        log.error("%s", message)
        await record_failure(ledger, migration_id, s3_reason(problem.code), message)
        return EXIT_PERMANENT
    return 0


async def _unless_stopped(work: Coroutine[Any, Any, T], stop: asyncio.Event) -> T | None:
    """Run ``work`` to its end, or cancel it and return None when ``stop`` is set first."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return None
    return task.result()
