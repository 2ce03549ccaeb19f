"""The ``objmig`` command line."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import click

from objmig import __version__
from objmig.api.crd import write_crds
from objmig.api.loading import SpecError, load_resources
from objmig.cli import demo, migrate, operator, retry, worker
from objmig.cli.ledger import db
from objmig.cli.migrate import EXIT_LEDGER_UNAVAILABLE
from objmig.engine.secrets import NotProvided
from objmig.ledger import LedgerUnavailable


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="objmig")
def cli() -> None:
    """Migrate objects between S3-compatible stores, resumably and verified."""


@cli.command()
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("crds"),
    show_default=True,
    help="Directory to write the CRD YAML files into.",
)
def crds(output: Path) -> None:
    """Render the CustomResourceDefinitions from the API models."""
    for path in write_crds(output):
        click.echo(f"wrote {path}")


@cli.command()
@click.option(
    "-f",
    "--filename",
    "paths",
    multiple=True,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML file with ObjectMigration / MigrationCleanup documents.",
)
def validate(paths: tuple[Path, ...]) -> None:
    """Check resources against the schema; exit 1 naming each bad field."""
    for path in paths:
        for resource in load_resources(path):
            click.echo(f"{path}: {resource.kind}/{resource.metadata.name} is valid")


for command in (
    migrate.run,
    migrate.plan,
    migrate.status,
    migrate.report,
    migrate.approve,
    migrate.cleanup,
    retry.retry,
    db,
    demo.demo,
    worker.worker,
    operator.operator,
):
    cli.add_command(command)


def main() -> None:
    """Entry point: turn expected errors into a message and an exit code, not a traceback."""
    # What the imports built (modules, API models, compiled schemas) lives as long as the
    # process: exempt it from the collector, whose full sweeps, and the last one at exit
    # (~60 ms of every command), would otherwise walk all of it again.
    gc.freeze()
    try:
        cli.main(standalone_mode=False)
    except (SpecError, NotProvided) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(1)
    except LedgerUnavailable as error:
        click.echo(
            f"error: {error}. Start it (objmig db status shows the embedded one), or wait "
            "longer with --ledger-wait, and run the same command again: it resumes where "
            "the ledger stands.",
            err=True,
        )
        sys.exit(EXIT_LEDGER_UNAVAILABLE)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
