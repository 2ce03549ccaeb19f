"""``objmig run | plan | status | report | approve``: the engine without a cluster."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

import click
from rich.console import Console

from objmig.api.conditions import ConditionType, find_condition
from objmig.api.loading import Bundle, load_bundle
from objmig.api.migration import ObjectMigration, ObjectMigrationSpec, SourceSpec, TargetSpec
from objmig.api.migration_cleanup import MigrationCleanup, MigrationCleanupStatus
from objmig.cli.ledger import LedgerPlace, ledger_options
from objmig.cli.progress import (
    ProgressView,
    buckets_table,
    human_bytes,
    status_table,
    summary_line,
)
from objmig.engine.bookkeeping import compute_status
from objmig.engine.deletion_pass import run_cleanup
from objmig.engine.local_run import LocalRun, RunResult
from objmig.engine.secrets import (
    ChainedSecrets,
    EnvSecrets,
    MappingConfigMaps,
    MappingSecrets,
    SecretSource,
    file_config_maps,
    file_secrets,
)
from objmig.ledger import Ledger, ObjectState, ReportFormat, StateCount

#: Exit codes of ``objmig run``, so scripts can tell outcomes apart.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_AWAITING = 2
EXIT_PAUSED = 3
#: The ledger database stayed unreachable for --ledger-wait (EX_TEMPFAIL): run again later.
EXIT_LEDGER_UNAVAILABLE = 75
EXIT_INTERRUPTED = 130

_EXIT_CODES = {
    "cut-over": EXIT_OK,
    "planned": EXIT_OK,
    "rolled-back": EXIT_OK,
    "awaiting-cutover": EXIT_AWAITING,
    "paused": EXIT_PAUSED,
    "failed": EXIT_FAILED,
    "interrupted": EXIT_INTERRUPTED,
}

filename_option = click.option(
    "-f",
    "--filename",
    "path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="ObjectMigration YAML (the same schema the operator reads), with the Secrets and "
    "ConfigMaps it refers to if you like.",
)
secrets_option = click.option(
    "--secrets",
    "secrets_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML of Secret manifests the spec references (else OBJMIG_SECRET_* variables).",
)


config_maps_option = click.option(
    "--config-maps",
    "config_maps_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML of ConfigMap manifests the spec references (selection.manifest.configMapRef, "
    "a caBundle's configMapKeyRef).",
)


def secret_source(secrets_file: Path | None, bundle: Bundle) -> SecretSource:
    """Environment first, then the ``--secrets`` file, then the resource file's own Secrets."""
    sources: list[SecretSource] = [EnvSecrets()]
    if secrets_file is not None:
        sources.append(file_secrets(secrets_file))
    sources.append(MappingSecrets(bundle.secrets))
    return ChainedSecrets(tuple(sources))


def qualified_name(name: str) -> str:
    """``name`` or ``namespace/name`` -> the ledger's ``namespace/name``."""
    return name if "/" in name else f"default/{name}"


async def drive(
    migration: ObjectMigration,
    ledger: Ledger,
    secrets: SecretSource,
    *,
    workers: int,
    config_maps: Mapping[str, Mapping[str, str]] | None = None,
    quiet: bool = False,
) -> RunResult:
    """Run a migration with a progress view; SIGINT / SIGTERM stop it cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    name = f"{migration.metadata.namespace}/{migration.metadata.name}"
    try:
        with ProgressView(name, interval=5.0 if not quiet else 3600) as view:
            runner = LocalRun(
                ledger,
                migration,
                secrets,
                workers=workers,
                config_maps=config_maps,
                on_status=view.update,
            )
            result = await runner.run(stop)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return result


def report_outcome(name: str, result: RunResult) -> None:
    """Print how the run ended and what to do next."""
    console = Console()
    console.print(status_table(name, result.status))
    console.print(summary_line(name, result.status), highlight=False)
    hints = {
        "cut-over": "cut over. `objmig approve NAME` shows the digest a cleanup approval quotes.",
        "awaiting-cutover": "not cut over yet: see CutoverReady above.",
        "paused": "paused: see the reason above; fix it and run the same command again.",
        "failed": "failed: see the Failed condition above.",
        "interrupted": "interrupted: run the same command again to resume.",
        "planned": "dry run finished: see the plan above; nothing was written.",
        "rolled-back": "rolled back: the cutover actions were reverted.",
    }
    hint = hints[result.outcome].replace("NAME", name)
    failed = find_condition(result.status.conditions, ConditionType.FAILED)
    if result.outcome == "failed" and failed is not None and failed.status == "True":
        # The cause in one line, whatever the table's wrapping made of it.
        hint = f"failed: {failed.reason}: {failed.message}"
    console.print(hint, highlight=False, soft_wrap=True)
    if result.status.plan is not None:
        plan = result.status.plan
        console.print(
            f"plan: {plan.objects} objects ({human_bytes(plan.bytes)}); would copy "
            f"{plan.would_copy}, skip {plan.would_skip} identical, restore "
            f"{plan.need_restore}",
            highlight=False,
        )
        if plan.selected_differently:
            console.print(
                f"WARNING: the include/exclude globs select {plan.selected_differently} "
                "objects otherwise than objmig did before they followed rclone's filter "
                "rules (a pattern without a leading / now matches at any depth; anchor it "
                "with a leading / for the old meaning): "
                + ", ".join(plan.selected_differently_examples)
                + " (+ selected now, - not any more)",
                style="bold red",
                highlight=False,
            )


def _run(
    path: Path,
    ledger_place: LedgerPlace,
    secrets_file: Path | None,
    config_maps_file: Path | None,
    workers: int,
    dry_run: bool,
) -> int:
    bundle = load_bundle(path)
    migration: ObjectMigration = bundle.one(ObjectMigration, str(path))
    # A --config-maps file wins over a ConfigMap of the same name in the resource file.
    config_maps = bundle.config_maps | (
        file_config_maps(config_maps_file) if config_maps_file else {}
    )
    # Every input file is read before the ledger is touched: a bad one is refused at once.
    secrets = secret_source(secrets_file, bundle)
    if dry_run:
        migration = migration.model_copy(
            update={"spec": migration.spec.model_copy(update={"dry_run": True})}
        )

    async def main() -> RunResult:
        async with ledger_place.open() as ledger:
            return await drive(
                migration,
                ledger,
                secrets,
                workers=workers,
                config_maps=config_maps,
            )

    result = asyncio.run(main())
    report_outcome(f"{migration.metadata.namespace}/{migration.metadata.name}", result)
    return _EXIT_CODES[result.outcome]


@click.command()
@filename_option
@ledger_options
@secrets_option
@config_maps_option
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="In-process workers (each runs spec.copy.concurrency objects at once).",
)
def run(
    path: Path,
    ledger: LedgerPlace,
    secrets_file: Path | None,
    config_maps_file: Path | None,
    workers: int,
) -> None:
    """Run a migration to its end: scan, copy, verify, cut over. Re-run to resume."""
    sys.exit(_run(path, ledger, secrets_file, config_maps_file, workers, dry_run=False))


@click.command()
@filename_option
@ledger_options
@secrets_option
@config_maps_option
def plan(
    path: Path,
    ledger: LedgerPlace,
    secrets_file: Path | None,
    config_maps_file: Path | None,
) -> None:
    """Dry run: inventory and report what a run would do; write nothing to the target."""
    sys.exit(_run(path, ledger, secrets_file, config_maps_file, 1, dry_run=True))


async def _status_of(ledger: Ledger, name: str) -> tuple[int, ObjectMigrationSpec]:
    migration_id = await ledger.find_migration(name)
    if migration_id is None:
        raise click.ClickException(f"no migration named {name!r} in this ledger")
    state = await ledger.get_state(migration_id)
    return migration_id, ObjectMigrationSpec.model_validate(state.spec)


@click.command()
@click.argument("name", required=False)
@ledger_options
@click.option("--watch", "-w", is_flag=True, help="Refresh every 2 seconds until Ctrl-C.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(name: str | None, ledger: LedgerPlace, watch: bool, as_json: bool) -> None:
    """Show a migration's status (or list migrations when no NAME is given)."""

    async def main() -> None:
        async with ledger.open() as opened:
            if name is None:
                for row in await opened.list_migrations():
                    click.echo(row.name)
                return
            full = qualified_name(name)
            migration_id, spec = await _status_of(opened, full)
            console = Console()
            while True:
                current = await compute_status(opened, migration_id, spec)
                if as_json:
                    click.echo(json.dumps(current.to_wire(), indent=2))
                else:
                    console.print(status_table(full, current))
                    if current.buckets:
                        console.print(buckets_table(current))
                if not watch:
                    return
                await asyncio.sleep(2)

    asyncio.run(main())


@click.command()
@click.argument("name")
@ledger_options
@click.option(
    "--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True
)
@click.option(
    "--failed",
    "only_failed",
    is_flag=True,
    help="Only the objects counted as failed: failed, and source_changed.",
)
@click.option(
    "--by-bucket",
    is_flag=True,
    help="One line per bucket (objects, bytes, verified, failed, digest) instead of per object.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to a file instead of standard output.",
)
def report(
    name: str,
    ledger: LedgerPlace,
    fmt: str,
    only_failed: bool,
    by_bucket: bool,
    output: Path | None,
) -> None:
    """Stream the full per-object report of a migration (or its per-bucket summary)."""

    report_format: ReportFormat = "csv" if fmt == "csv" else "jsonl"
    if by_bucket:

        async def per_bucket() -> tuple[str, int]:
            async with ledger.open() as opened:
                migration_id, _ = await _status_of(opened, qualified_name(name))
                return await bucket_report(opened, migration_id, report_format)

        text, lines = asyncio.run(per_bucket())
        if output is None:
            sys.stdout.write(text)
        else:
            output.write_text(text)
        click.echo(f"{lines} buckets", err=True)
        return

    async def main() -> int:
        async with ledger.open() as opened:
            migration_id, _ = await _status_of(opened, qualified_name(name))
            if output is None:
                return await opened.export_report(
                    migration_id,
                    sys.stdout.buffer,
                    report_format,
                    only_failed=only_failed,
                )
            with output.open("wb") as handle:
                return await opened.export_report(
                    migration_id,
                    handle,
                    report_format,
                    only_failed=only_failed,
                )

    rows = asyncio.run(main())
    click.echo(f"{rows} objects", err=True)


async def bucket_report(ledger: Ledger, migration_id: int, fmt: ReportFormat) -> tuple[str, int]:
    """Every bucket's objects, bytes, verified, failed and digest, as CSV or JSONL."""
    counts = await ledger.bucket_counts(migration_id)
    state = await ledger.get_state(migration_id)
    digests = state.verification.buckets if state.verification is not None else {}
    lines = []
    for bucket in sorted(counts):
        by_state = counts[bucket]

        def n(*states: ObjectState, by_state: dict[ObjectState, StateCount] = by_state) -> int:
            return sum(by_state.get(s, StateCount()).objects for s in states)

        record = digests.get(bucket)
        lines.append(
            {
                "bucket": bucket,
                "objects": sum(c.objects for c in by_state.values()),
                "bytes": sum(c.bytes for c in by_state.values()),
                "verified": n(ObjectState.VERIFIED, ObjectState.DELETED),
                "failed": n(ObjectState.FAILED, ObjectState.SOURCE_CHANGED),
                "digest": record.digest if record is not None else "",
            }
        )
    if fmt == "jsonl":
        return "".join(json.dumps(line) + "\n" for line in lines), len(lines)
    header = "bucket,objects,bytes,verified,failed,digest\n"
    body = "".join(
        f"{line['bucket']},{line['objects']},{line['bytes']},{line['verified']},"
        f"{line['failed']},{line['digest']}\n"
        for line in lines
    )
    return header + body, len(lines)


@click.command()
@click.argument("name")
@ledger_options
@click.option(
    "--bucket",
    default=None,
    help="One bucket of a migration of several: its own digest, for a cleanup of it alone.",
)
def approve(name: str, ledger: LedgerPlace, bucket: str | None) -> None:
    """Show what was verified, and the digest a MigrationCleanup approval must quote."""

    async def main() -> None:
        async with ledger.open() as opened:
            full = qualified_name(name)
            migration_id, spec = await _status_of(opened, full)
            current = await compute_status(opened, migration_id, spec)
            digest = await opened.verification_digest(migration_id)
            console = Console()
            console.print(status_table(full, current))
            if current.buckets:
                console.print(buckets_table(current))
            if bucket is not None:
                if bucket not in digest.buckets:
                    raise click.ClickException(f"no verified object of bucket {bucket!r}")
                digest = digest.buckets[bucket]
            click.echo(
                f"verified: {digest.objects} objects, {human_bytes(digest.bytes)} "
                f"({spec.verify.mode})" + (f" in bucket {bucket}" if bucket else "")
            )
            click.echo(f"source: {_where(spec.source, spec.source.prefix)}")
            click.echo(f"target: {_where(spec.target, spec.target.prefix)}")
            what = f"objects of bucket {bucket}" if bucket else "source objects"
            click.echo(f"\nTo delete the migrated {what}, put this in the cleanup spec:")
            if bucket:
                click.echo(f"  bucket: {bucket}")
            click.echo(f"  approval:\n    digest: sha256:{digest.sha256}")

    asyncio.run(main())


def _where(side: SourceSpec | TargetSpec, prefix: str) -> str:
    """A side of a migration as a location: s3://bucket/prefix, or a directory."""
    if side.filesystem is not None:
        return f"{side.filesystem.path.rstrip('/')}/{prefix}"
    if isinstance(side, SourceSpec) and side.buckets is not None:
        return f"s3://(every bucket matching {', '.join(side.buckets.include)})/{prefix}"
    return f"s3://{side.bucket}/{prefix}"


@click.command()
@click.option(
    "-f",
    "--filename",
    "path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="MigrationCleanup YAML (the same schema the operator reads).",
)
@ledger_options
@secrets_option
@config_maps_option
def cleanup(
    path: Path,
    ledger: LedgerPlace,
    secrets_file: Path | None,
    config_maps_file: Path | None,
) -> None:
    """Delete migrated source objects (or leftovers), only where every gate holds."""
    bundle = load_bundle(path)
    resource: MigrationCleanup = bundle.one(MigrationCleanup, str(path))
    secrets = secret_source(secrets_file, bundle)
    config_maps = MappingConfigMaps(
        bundle.config_maps | (file_config_maps(config_maps_file) if config_maps_file else {})
    )

    async def main() -> MigrationCleanupStatus:
        async with ledger.open() as opened:
            return await run_cleanup(opened, resource, secrets, config_maps=config_maps)

    result = asyncio.run(main())
    report_cleanup(resource, result)
    sys.exit(0 if result.phase == "Completed" else EXIT_AWAITING)


def report_cleanup(resource: MigrationCleanup, result: MigrationCleanupStatus) -> None:
    """Print a cleanup pass: its phase, the gates that held it back, what it deleted."""
    console = Console()
    name = f"{resource.metadata.namespace}/{resource.metadata.name}"
    console.print(f"{name}: {result.phase}", highlight=False)
    for gate in result.unmet_gates:
        console.print(f"  gate {gate.gate}: {gate.reason}: {gate.message}", highlight=False)
    counts = result.counts
    done = (
        f"would delete {counts.would_delete}"
        if resource.spec.dry_run
        else f"deleted {counts.deleted}"
    )
    console.print(
        f"  planned {counts.planned}, {done}, skipped {counts.skipped}, "
        f"failed {counts.failed}, freed {human_bytes(counts.bytes_freed)}"
        + (f", uploads aborted {counts.uploads_aborted}" if counts.uploads_aborted else ""),
        highlight=False,
    )
    if counts.left_by_limit:
        console.print(
            f"  left {counts.left_by_limit} for later: spec.limit reached (raise it to go on)",
            highlight=False,
        )
    for reason, count in sorted(counts.skipped_by_reason.items()):
        console.print(f"  skipped {count}: {reason}", highlight=False)
