"""Where the CLI keeps its ledger: an existing server, or an embedded one in a state directory."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import click

from objmig.ledger import Ledger
from objmig.local.postgres import EmbeddedPostgres


def default_state_dir() -> Path:
    """``$OBJMIG_STATE_DIR``, else ``$XDG_STATE_HOME/objmig``, else ``~/.local/state/objmig``."""
    explicit = os.environ.get("OBJMIG_STATE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "objmig"


database_url_option = click.option(
    "--database-url",
    envvar="OBJMIG_DATABASE_URL",
    help="PostgreSQL URL of the ledger. Default: an embedded server in --state-dir.",
)
state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=default_state_dir,
    show_default="$XDG_STATE_HOME/objmig",
    help="Directory of the embedded ledger database.",
)


@asynccontextmanager
async def open_ledger(database_url: str | None, state_dir: Path) -> AsyncIterator[Ledger]:
    """Connect to the ledger, starting (or reusing) the embedded server when no URL is given.

    The embedded server is left running on exit: a later command (or a re-run after a
    crash) reuses it at once; ``objmig db stop`` stops it, ``objmig db status`` shows it.
    """
    if database_url is None:
        server = EmbeddedPostgres(state_dir / "postgres")
        await server.start()
        database_url = server.dsn
    ledger = await Ledger.connect(database_url)
    try:
        yield ledger
    finally:
        await ledger.close()


@click.group()
def db() -> None:
    """The embedded ledger database that `objmig run` starts in --state-dir."""


@db.command("status")
@state_dir_option
def db_status(state_dir: Path) -> None:
    """Say whether the embedded server runs, and where."""
    server = EmbeddedPostgres(state_dir / "postgres")
    running = server.attach()
    if running is None:
        click.echo(f"not running (data in {server.data_dir})")
        return
    click.echo(f"running: pid {running.pid}, {server.dsn}, data in {server.data_dir}")


@db.command("stop")
@state_dir_option
def db_stop(state_dir: Path) -> None:
    """Stop the embedded server; the next command that needs the ledger starts it again."""
    server = EmbeddedPostgres(state_dir / "postgres")
    if server.running() is None:
        click.echo("not running")
        return
    server.stop_blocking()
    click.echo(f"stopped (data kept in {server.data_dir})")
