"""``objmig retry``: give failed objects another chance (the operator's annotation does the
same, see ``objmig.controller.migration_service``)."""

from __future__ import annotations

import asyncio
import sys

import click

from objmig.cli.ledger import LedgerPlace, ledger_options
from objmig.cli.migrate import qualified_name
from objmig.engine.bookkeeping import retry_failed
from objmig.ledger import Problem, RetryRecord


@click.command()
@click.argument("name")
@click.option(
    "--key",
    "keys",
    multiple=True,
    help="Retry only this object (repeatable; every version of the key). Default: every "
    "failed object.",
)
@click.option("--reason", default="", help="Why, for the record in the ledger.")
@ledger_options
def retry(name: str, keys: tuple[str, ...], reason: str, ledger: LedgerPlace) -> None:
    """Return failed objects to pending with fresh attempts; the next run copies them.

    NAME is the migration (``namespace/name``, or ``name`` in ``default``). Objects whose
    source changed are not retried here: a catch-up re-scan takes those up.
    """
    full = qualified_name(name)

    async def main() -> RetryRecord | Problem:
        async with ledger.open() as opened:
            migration_id = await opened.find_migration(full)
            if migration_id is None:
                raise click.ClickException(f"no migration named {full!r} in this ledger")
            return await retry_failed(opened, migration_id, keys=keys or None, reason=reason)

    outcome = asyncio.run(main())
    if isinstance(outcome, Problem):
        click.echo(f"error: {full}: {outcome.message}", err=True)
        sys.exit(1)
    if not outcome.objects:
        click.echo(f"{full}: no failed object" + (" among those keys" if keys else "") + ".")
        return
    click.echo(
        f"{full}: {outcome.objects} failed objects are pending again, with fresh attempts. "
        "Run the migration again (objmig run -f ...) to copy them."
    )
