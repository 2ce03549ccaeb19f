"""The cleanup stage of a worker pod: one pass of a MigrationCleanup, ledger and S3 only."""

from __future__ import annotations

import asyncio
import logging
import signal

from objmig.api.conditions import Reason
from objmig.api.migration import ObjectMeta
from objmig.api.migration_cleanup import MigrationCleanup, MigrationCleanupSpec
from objmig.engine.deletion_pass import run_cleanup
from objmig.engine.pipeline.outcomes import ConfigurationError
from objmig.engine.secrets import ConfigMapNotFound, EnvConfigMaps, EnvSecrets, SecretNotFound
from objmig.ledger import Ledger, LedgerWait, Problem
from objmig.pod.exit_codes import EXIT_PERMANENT
from objmig.pod.ledger_access import with_ledger

log = logging.getLogger("objmig.worker")


async def clean(database_url: str, name: str, *, wait: LedgerWait | None = None) -> int:
    """Run one pass of cleanup ``namespace/name`` (its spec is stored in the ledger)."""

    async def pass_of(ledger: Ledger) -> int:
        return await _clean(ledger, name)

    return await with_ledger(database_url, wait or LedgerWait(), pass_of)


async def _clean(ledger: Ledger, name: str) -> int:
    """One pass of a cleanup, on a connected ledger."""
    cleanup_id = await ledger.find_cleanup(name)
    if cleanup_id is None:
        log.error("no cleanup %s in the ledger", name)
        return EXIT_PERMANENT
    state = await ledger.get_cleanup_state(cleanup_id)
    namespace, _, short = name.partition("/")
    cleanup = MigrationCleanup(
        metadata=ObjectMeta(name=short, namespace=namespace, uid=state.uid),
        spec=MigrationCleanupSpec.model_validate(state.spec),
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        status = await run_cleanup(
            ledger, cleanup, EnvSecrets(), config_maps=EnvConfigMaps(), stop=stop
        )
    except (ConfigurationError, SecretNotFound, ConfigMapNotFound, ValueError) as error:
        log.error("%s", error)
        await ledger.update_cleanup_state(
            cleanup_id,
            failed=Problem(reason=Reason.CONFIGURATION_ERROR, message=str(error)),
        )
        return EXIT_PERMANENT
    log.info(
        "cleanup %s: %s, %d deleted, %d skipped, %d failed",
        name,
        status.phase,
        status.counts.deleted,
        status.counts.skipped,
        status.counts.failed,
    )
    return 0
