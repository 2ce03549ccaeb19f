"""``objmig worker``: the entry point of worker Job pods (see :mod:`objmig.pod`)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import click

from objmig.cli.ledger import ledger_wait_option
from objmig.ledger import LedgerWait
from objmig.pod.cleanup_stage import clean
from objmig.pod.migration_stages import work


@click.command()
@click.option("--migration", "name", required=True, help="namespace/name of the migration.")
@click.option(
    "--stage",
    type=click.Choice(["scan", "copy", "audit", "cleanup"]),
    default="copy",
    show_default=True,
)
@click.option(
    "--database-url", envvar="OBJMIG_DATABASE_URL", required=True, help="Ledger PostgreSQL URL."
)
@click.option("--scan-id", type=int, default=None, help="Number of the scan (stage scan).")
@click.option("--cleanup", "cleanup_name", default=None, help="namespace/name (stage cleanup).")
@ledger_wait_option
def worker(
    name: str,
    stage: str,
    database_url: str,
    scan_id: int | None,
    cleanup_name: str | None,
    ledger_wait: LedgerWait,
) -> None:
    """Work on one migration from inside a Job pod (ledger and S3 only)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # In a pod the host name is the pod name, so the default lease owner names the pod.
    owner = os.environ.get("OBJMIG_WORKER_ID")
    if stage == "cleanup":
        if not cleanup_name:
            raise click.UsageError("--stage cleanup needs --cleanup NAMESPACE/NAME")
        sys.exit(asyncio.run(clean(database_url, cleanup_name, wait=ledger_wait)))
    sys.exit(asyncio.run(work(database_url, name, stage, owner, scan_id, wait=ledger_wait)))
