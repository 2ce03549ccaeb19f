"""Helpers for engine tests: build a migration spec and run it against the test services."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import yaml
from types_aiobotocore_s3 import S3Client

from objmig.api.loading import parse_resource
from objmig.api.migration import ObjectMigration
from objmig.api.migration_cleanup import MigrationCleanup
from objmig.engine.local_run import LocalRun, RunResult
from objmig.engine.secrets import EnvSecrets, env_name
from objmig.ledger import Ledger, ObjectRow
from objmig.storage.endpoint import Endpoint

SECRET = "s3-creds"
#: The target's credentials, when it is another store (`migration(target_endpoint=...)`).
TARGET_SECRET = "target-creds"


def secrets_for(endpoint: Endpoint, *, target: Endpoint | None = None, **extra: str) -> EnvSecrets:
    """Secrets as the worker would see them: the S3 credentials under ``SECRET`` (and
    those of another `target` store under ``TARGET_SECRET``)."""
    environ = {**_credentials(SECRET, endpoint), **extra}
    if target is not None:
        environ.update(_credentials(TARGET_SECRET, target))
    return EnvSecrets(environ=environ)


def _credentials(secret: str, endpoint: Endpoint) -> dict[str, str]:
    assert endpoint.credentials is not None
    return {
        env_name(secret, "accessKeyId"): endpoint.credentials.access_key_id,
        env_name(secret, "secretAccessKey"): endpoint.credentials.secret_access_key,
    }


def migration(
    endpoint: Endpoint,
    source: str,
    target: str | None,
    *,
    name: str = "m",
    target_endpoint: Endpoint | None = None,
    source_extra: dict[str, Any] | None = None,
    target_extra: dict[str, Any] | None = None,
    **spec: Any,
) -> ObjectMigration:
    """An ObjectMigration between two buckets of one endpoint (or, with `target_endpoint`,
    of two stores), with fast retries.

    ``target`` None leaves it out of the spec (copy.mode none: the target is the source).
    """
    side = {
        "endpoint": endpoint.url,
        "addressingStyle": "path",
        "credentialsSecretRef": {"name": SECRET},
    }
    target_side = side
    if target_endpoint is not None:
        target_side = {
            "endpoint": target_endpoint.url,
            "addressingStyle": "path",
            "credentialsSecretRef": {"name": TARGET_SECRET},
        }
    body: dict[str, Any] = {
        "source": {**side, "bucket": source, **(source_extra or {})},
        "target": {**target_side, "bucket": target, **(target_extra or {})},
        "retry": {"attempts": 4, "backoff": {"initial": "50ms", "max": "200ms"}},
    }
    if target is None:
        del body["target"]
    for key, value in spec.items():
        body[key] = value
    resource = parse_resource(
        {
            "apiVersion": "objmig.dev/v1alpha1",
            "kind": "ObjectMigration",
            "metadata": {"name": name, "namespace": "test"},
            "spec": body,
        }
    )
    assert isinstance(resource, ObjectMigration)
    return resource


def cleanup_of(digest: str | None, *, name: str = "c", **spec: Any) -> MigrationCleanup:
    """A MigrationCleanup of migration "m" without waiting times, approved with `digest`."""
    body: dict[str, Any] = {"migrationRef": {"name": "m"}, "gracePeriod": "0s", "minAge": "0s"}
    if digest is not None:
        body["approval"] = {"digest": digest}
    body.update(spec)
    resource = parse_resource(
        {
            "apiVersion": "objmig.dev/v1alpha1",
            "kind": "MigrationCleanup",
            "metadata": {"name": name, "namespace": "test"},
            "spec": body,
        }
    )
    assert isinstance(resource, MigrationCleanup)
    return resource


async def run(
    ledger: Ledger, resource: ObjectMigration, endpoint: Endpoint, **kw: Any
) -> RunResult:
    """Run a migration to its end in-process."""
    secrets = kw.pop("secrets", None) or secrets_for(endpoint)
    return await LocalRun(ledger, resource, secrets, status_interval=0.2, **kw).run()


async def rows_of(ledger: Ledger, name: str = "test/m") -> dict[str, ObjectRow]:
    """Every ledger row of a migration, by key."""
    migration_id = await ledger.find_migration(name)
    assert migration_id is not None
    return {row.key: row async for row in ledger.iter_rows(migration_id)}


async def sha256_of(client: S3Client, bucket: str, key: str) -> str:
    """SHA-256 of an object's bytes, read whole (test objects are small)."""
    response = await client.get_object(Bucket=bucket, Key=key)
    async with response["Body"] as body:
        return hashlib.sha256(await body.read()).hexdigest()


async def keys_of(client: S3Client, bucket: str) -> dict[str, str]:
    """Key -> ETag of every object in a bucket."""
    found: dict[str, str] = {}
    paginator = client.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            found[item["Key"]] = item["ETag"].strip('"')
    return found


#: The secret key of the CLI tests' Secret: no output may show it.
CLI_SECRET_KEY = "cli-test-secret-value-3f9a"


def cli_inputs(tmp_path: Path, endpoint: str, source: str, target: str) -> tuple[Path, Path]:
    """A migration file (cli/killed, streamed, checksums) and its Secret's file, as `objmig
    run -f ... --secrets ...` reads them."""
    side = {"endpoint": endpoint, "credentialsSecretRef": {"name": "s3"}}
    spec = {
        "apiVersion": "objmig.dev/v1alpha1",
        "kind": "ObjectMigration",
        "metadata": {"name": "killed", "namespace": "cli"},
        "spec": {
            "source": {**side, "bucket": source},
            "target": {**side, "bucket": target},
            "copy": {"mode": "stream", "concurrency": 4, "partConcurrency": 2},
            "verify": {"mode": "checksum"},
        },
    }
    secrets = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s3"},
        "stringData": {"accessKeyId": "cli-test", "secretAccessKey": CLI_SECRET_KEY},
    }
    spec_path = tmp_path / "migration.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    secrets_path = tmp_path / "secrets.yaml"
    secrets_path.write_text(yaml.safe_dump(secrets))
    return spec_path, secrets_path


def cli_command(spec: Path, secrets: Path, database_url: str) -> list[str]:
    """`objmig run` of `cli_inputs`' files, as a process."""
    return [
        sys.executable,
        "-m",
        "objmig",
        "run",
        "-f",
        str(spec),
        "--secrets",
        str(secrets),
        "--database-url",
        database_url,
    ]
