"""``objmig demo``: a whole migration on local servers, so a newcomer sees it work in one command.

It starts an S3 server (moto's server mode) and an embedded PostgreSQL ledger, seeds a source
bucket with a few hundred objects (small ones, multipart ones, Deep Archive ones, some with
metadata and tags), and migrates them to another bucket with SSE and a storage-class change:
restore, copy, verify, cutover. Then it cleans up the source: first without an approval
(the gates refuse), then approved with the verification digest.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click
import yaml

from objmig.api.loading import parse_resource
from objmig.api.migration import ObjectMigration
from objmig.api.migration_cleanup import MigrationCleanup
from objmig.cli.ledger import open_ledger
from objmig.cli.migrate import drive, report_cleanup, report_outcome
from objmig.engine.deletion_pass import run_cleanup
from objmig.engine.secrets import file_secrets
from objmig.local.postgres import EmbeddedPostgres
from objmig.local.s3server import LocalS3Server
from objmig.storage.endpoint import Credentials, Endpoint

# The aiobotocore stubs are a development dependency: import them for type checking only.
if TYPE_CHECKING:
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

SOURCE, TARGET = "demo-source", "demo-target"
DEMO_CREDENTIALS = Credentials("demo-access-key", "demo-secret-key")
MiB = 1024 * 1024


def demo_migration(endpoint: str) -> ObjectMigration:
    """The demo's ObjectMigration, as a user would write it."""
    document = {
        "apiVersion": "objmig.dev/v1alpha1",
        "kind": "ObjectMigration",
        "metadata": {"name": "demo", "namespace": "default"},
        "spec": {
            "source": {
                "endpoint": endpoint,
                "bucket": SOURCE,
                "prefix": "data/",
                "credentialsSecretRef": {"name": "demo-s3"},
            },
            "target": {
                "endpoint": endpoint,
                "bucket": TARGET,
                "prefix": "migrated/",
                "storageClass": "STANDARD_IA",
                "encryption": {"mode": "SSE-S3"},
                "credentialsSecretRef": {"name": "demo-s3"},
            },
            "restore": {"tier": "Bulk", "days": 1, "pollInterval": "1s"},
            "copy": {"mode": "stream", "concurrency": 16},
            "verify": {"mode": "etag"},
            "cutover": {"policy": "Automatic"},
        },
    }
    resource = parse_resource(document, "demo")
    assert isinstance(resource, ObjectMigration)
    return resource


def demo_cleanup(digest: str | None) -> MigrationCleanup:
    """The demo's MigrationCleanup of the source; approved when `digest` is given."""
    spec: dict[str, object] = {
        "migrationRef": {"name": "demo"},
        "what": "source",
        # A real cleanup waits days after the cutover; the demo shows the gates, not the wait.
        "gracePeriod": "0s",
        "minAge": "0s",
    }
    if digest is not None:
        spec["approval"] = {"digest": digest}
    document = {
        "apiVersion": "objmig.dev/v1alpha1",
        "kind": "MigrationCleanup",
        "metadata": {"name": "demo-cleanup", "namespace": "default"},
        "spec": spec,
    }
    resource = parse_resource(document, "demo")
    assert isinstance(resource, MigrationCleanup)
    return resource


async def seed(endpoint: str, *, small: int, multipart: int, archived: int) -> int:
    """Create the buckets and the source objects; returns how many objects were written."""
    # Here, not at the top: every `objmig` command imports this module, and the SDK is
    # loaded only where it is used (see `objmig.storage.sdk`).
    from objmig.storage.sdk import open_client

    async with open_client(Endpoint(url=endpoint, credentials=DEMO_CREDENTIALS), 32) as s3:
        for bucket in (SOURCE, TARGET):
            await s3.create_bucket(Bucket=bucket)
        semaphore = asyncio.Semaphore(16)

        async def put(index: int) -> None:
            async with semaphore:
                extra: dict[str, object] = {}
                if index % 5 == 0:
                    extra["Metadata"] = {"owner": f"team-{index % 3}", "storage-version": "2"}
                if index % 7 == 0:
                    extra["Tagging"] = f"project=demo&index={index}"
                await s3.put_object(
                    Bucket=SOURCE,
                    Key=f"data/small/{index:04d}.txt",
                    Body=(f"object {index}\n" * (index % 50 + 1)).encode(),
                    ContentType="text/plain",
                    **extra,  # type: ignore[arg-type]
                )

        await asyncio.gather(*(put(i) for i in range(small)))
        for index in range(multipart):
            key = f"data/large/{index:02d}.bin"
            upload = await s3.create_multipart_upload(Bucket=SOURCE, Key=key)
            parts: list[CompletedPartTypeDef] = []
            for number, size in enumerate((5 * MiB, 5 * MiB, 1 * MiB + index), start=1):
                response = await s3.upload_part(
                    Bucket=SOURCE,
                    Key=key,
                    UploadId=upload["UploadId"],
                    PartNumber=number,
                    Body=bytes([index + number]) * size,
                )
                parts.append({"PartNumber": number, "ETag": response["ETag"]})
            await s3.complete_multipart_upload(
                Bucket=SOURCE,
                Key=key,
                UploadId=upload["UploadId"],
                MultipartUpload={"Parts": parts},
            )
        for index in range(archived):
            await s3.put_object(
                Bucket=SOURCE,
                Key=f"data/archive/{index:03d}.log",
                Body=f"archived log {index}\n".encode() * 100,
                StorageClass="DEEP_ARCHIVE",
            )
    return small + multipart + archived


async def _demo(state_dir: Path, small: int, multipart: int, archived: int) -> int:
    with LocalS3Server() as server:
        endpoint = server.endpoint_url
        click.echo(f"S3 server (moto) at {endpoint}")
        started = time.monotonic()
        count = await seed(endpoint, small=small, multipart=multipart, archived=archived)
        click.echo(
            f"seeded s3://{SOURCE}/data/ with {count} objects ({multipart} multipart, "
            f"{archived} in DEEP_ARCHIVE) in {time.monotonic() - started:.1f}s"
        )
        secrets_file = state_dir / "secrets.yaml"
        secrets_file.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "demo-s3"},
                    "stringData": {
                        "accessKeyId": DEMO_CREDENTIALS.access_key_id,
                        "secretAccessKey": DEMO_CREDENTIALS.secret_access_key,
                    },
                }
            )
        )
        migration = demo_migration(endpoint)
        spec_path = state_dir / "migration.yaml"
        spec_path.write_text(yaml.safe_dump(migration.to_wire(), sort_keys=False))
        click.echo(f"migration spec: {spec_path}")
        secrets = file_secrets(secrets_file)
        async with open_ledger(None, state_dir) as ledger:
            started = time.monotonic()
            result = await drive(migration, ledger, secrets, workers=2)
            elapsed = time.monotonic() - started
            report_outcome("default/demo", result)
            click.echo(f"migration finished in {elapsed:.1f}s")
            digest = result.status.verification.digest
            if result.outcome != "cut-over" or digest is None:
                return 1
            click.echo(f"verification digest (a cleanup approval quotes it): {digest}")
            click.echo("\ncleanup of the source without an approval:")
            refused = demo_cleanup(None)
            report_cleanup(refused, await run_cleanup(ledger, refused, secrets))
            click.echo("\ncleanup of the source, approved with the digest:")
            approved = demo_cleanup(digest)
            cleaned = await run_cleanup(ledger, approved, secrets)
            report_cleanup(approved, cleaned)
        return 0 if cleaned.phase == "Completed" else 1


@click.command()
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the demo's ledger here (default: a temporary directory).",
)
@click.option("--objects", default=300, show_default=True, help="Small objects to seed.")
@click.option("--multipart", default=6, show_default=True, help="Multipart objects to seed.")
@click.option("--archived", default=12, show_default=True, help="DEEP_ARCHIVE objects to seed.")
def demo(state_dir: Path | None, objects: int, multipart: int, archived: int) -> None:
    """Start local servers, seed a bucket, and run a full migration and cutover."""
    with tempfile.TemporaryDirectory(prefix="objmig-demo-") as scratch:
        directory = state_dir or Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        try:
            code = asyncio.run(_demo(directory, objects, multipart, archived))
        finally:
            if state_dir is None:
                EmbeddedPostgres(directory / "postgres").stop_blocking()
    raise SystemExit(code)
