"""The process inside a worker Job pod: one stage of one migration, ledger and S3 only.

The operator stores the migration's spec in the ledger and maps every Secret the spec
references into the pod's environment, so a worker needs no Kubernetes API access at all.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from objmig.api.migration import ObjectMeta, ObjectMigration, ObjectMigrationSpec
from objmig.engine.context import MigrationContext
from objmig.engine.pipeline import ConfigurationError
from objmig.engine.scan import run_scan
from objmig.engine.secrets import EnvSecrets, SecretNotFound
from objmig.engine.worker import Worker
from objmig.ledger import Ledger

log = logging.getLogger("objmig.worker")

#: Exit code for errors no retry can fix (credentials, missing bucket, missing Secret key).
#: The Job's podFailurePolicy fails the index on it instead of retrying the pod.
EXIT_PERMANENT = 42


async def work(
    database_url: str, name: str, stage: str, owner: str | None, scan_id: int | None = None
) -> int:
    """Run one stage of one migration to its end; returns the process exit code."""
    ledger = await Ledger.connect(database_url, min_size=1, max_size=4)
    try:
        migration_id = await ledger.find_migration(name)
        if migration_id is None:
            log.error("no migration %s in the ledger", name)
            return EXIT_PERMANENT
        state = await ledger.get_state(migration_id)
        namespace, _, short = name.partition("/")
        migration = ObjectMigration(
            metadata=ObjectMeta(name=short, namespace=namespace),
            spec=ObjectMigrationSpec.model_validate(state["spec"]),
        )
        try:
            context = MigrationContext.resolve(migration, EnvSecrets())
        except (SecretNotFound, ValueError) as error:
            log.error("cannot start: %s", error)
            await _record_failure(ledger, migration_id, "ConfigurationError", str(error))
            return EXIT_PERMANENT
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        try:
            if stage == "scan":
                async with context.clients() as (source, _):
                    outcome = await run_scan(ledger, migration_id, context, source, scan_id=scan_id)
                log.info("scan %d: %s", outcome.scan_id, outcome.result)
            else:
                stats = await Worker(ledger, migration_id, context, owner=owner).run(stop)
                log.info("worker done: %s", dict(stats.results))
        except ConfigurationError as error:
            log.error("%s", error)
            await _record_failure(ledger, migration_id, f"S3{error.error.code}", str(error))
            return EXIT_PERMANENT
        return 0
    finally:
        await ledger.close()


async def _record_failure(ledger: Ledger, migration_id: int, reason: str, message: str) -> None:
    """Leave the reason where the operator reads it, for the Failed condition."""
    await ledger.update_state(migration_id, {"failed": {"reason": reason, "message": message}})
