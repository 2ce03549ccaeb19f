"""Where the CLI keeps its ledger: an existing server, or an embedded one in a state directory."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from objmig.api.types import parse_duration
from objmig.ledger import Ledger, LedgerWait
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


def _ledger_wait(_ctx: click.Context, _param: click.Parameter, value: str) -> LedgerWait:
    try:
        seconds = parse_duration(value).total_seconds()
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    return LedgerWait(timeout=seconds)


ledger_wait_option = click.option(
    "--ledger-wait",
    envvar="OBJMIG_LEDGER_WAIT",
    default="10m",
    show_default=True,
    callback=_ledger_wait,
    help="How long to wait for an unreachable ledger database (retrying with backoff) "
    "before giving up with exit code 75.",
)
state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=default_state_dir,
    show_default="$XDG_STATE_HOME/objmig",
    help="Directory of the embedded ledger database.",
)


@asynccontextmanager
async def open_ledger(
    database_url: str | None, state_dir: Path, wait: LedgerWait | None = None
) -> AsyncIterator[Ledger]:
    """Connect to the ledger, starting (or reusing) the embedded server when no URL is given.

    The embedded server is left running on exit: a later command (or a re-run after a
    crash) reuses it at once; ``objmig db stop`` stops it, ``objmig db status`` shows it.
    An unreachable ledger is waited for (``wait``); the embedded server, if it went away
    meanwhile (killed, stopped), is started again on its port.
    """
    wait = wait or LedgerWait()
    if database_url is None:
        server = EmbeddedPostgres(state_dir / "postgres")
        await server.start()
        database_url = server.dsn
        wait.on_wait = functools.partial(_revive, state_dir, server.port)
    ledger = await Ledger.connect(database_url, wait=wait)
    try:
        yield ledger
    finally:
        await ledger.close()


async def _revive(state_dir: Path, port: int) -> None:
    """Start the embedded server again where it ran, if it is not running."""
    server = EmbeddedPostgres(state_dir / "postgres", port=port)
    if server.running() is None:
        with contextlib.suppress(Exception):  # the next try reports what is wrong
            await server.start()


@dataclass(frozen=True)
class LedgerPlace:
    """Where a command finds its ledger (``--database-url``, ``--state-dir``) and how long
    it waits for it (``--ledger-wait``)."""

    database_url: str | None
    state_dir: Path
    wait: LedgerWait

    def open(self) -> AbstractAsyncContextManager[Ledger]:
        """Connect (see :func:`open_ledger`)."""
        return open_ledger(self.database_url, self.state_dir, self.wait)


def ledger_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--database-url``, ``--state-dir`` and ``--ledger-wait`` to a command, which
    receives them as one ``ledger: LedgerPlace``."""

    @functools.wraps(command)
    def with_place(
        *args: Any, database_url: str | None, state_dir: Path, ledger_wait: LedgerWait, **kw: Any
    ) -> Any:
        return command(*args, ledger=LedgerPlace(database_url, state_dir, ledger_wait), **kw)

    for option in (ledger_wait_option, state_dir_option, database_url_option):
        with_place = option(with_place)
    return with_place


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
