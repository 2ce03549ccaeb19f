"""Every S3 server the suite starts, migrated to and from as users do.

`compat_backend` runs each test on moto, MinIO, MinIO over HTTPS with a private CA (given
by the spec's `caBundle`), SeaweedFS, versitygw and Garage. A server lacking an aspect of
S3 (Garage has no object tags, ...) must cost that aspect only: objmig learns it once,
does without it, says so in the `Degraded` condition and the report, and never reports a
copy verified that lost something it was asked to keep.

The matrix (server x copy mode x verify mode) is `test_matrix`; the rest are the ways a
store may lack something, each made real by the server itself or, where no server of the
suite lacks it, by the fault proxy answering as such a server does (s3proxy answers 501 to
HEAD with `partNumber` and NotImplemented to a copy-source condition).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from types_aiobotocore_s3 import S3Client

from objmig.api.conditions import find_condition
from objmig.api.loading import parse_resource
from objmig.api.migration import ObjectMigration
from objmig.engine.local_run import RunResult
from objmig.engine.secrets import CA_BUNDLE_VARIABLES, EnvSecrets, env_name
from objmig.ledger import Ledger, ObjectRow, ObjectState
from objmig.local.s3server import ChildServer
from objmig.storage.compare import without_objmig_keys
from objmig.storage.endpoint import Endpoint
from objmig.storage.sdk import open_client
from objmig.storage.types import normalise_etag
from tests.fixtures.s3 import S3Backend, S3Seeder, Seeded
from tests.integration.engine_support import rows_of, run
from tests.support.s3proxy import Fail, S3FaultProxy

KiB = 1024
MiB = 1024 * KiB
CA_CONFIG_MAP = "s3-ca"


# -- building migrations between two endpoints ---------------------------------------------


def _side(endpoint: Endpoint, bucket: str, secret: str) -> dict[str, Any]:
    side: dict[str, Any] = {
        "endpoint": endpoint.url,
        "addressingStyle": "path",
        "bucket": bucket,
        "credentialsSecretRef": {"name": secret},
    }
    if endpoint.ca_bundle:
        # The private CA as users give it: a ConfigMap key named by the spec.
        side["caBundle"] = {"configMapKeyRef": {"name": CA_CONFIG_MAP, "key": "ca.crt"}}
    return side


def between(
    source: Endpoint, source_bucket: str, target: Endpoint, target_bucket: str, **spec: Any
) -> tuple[ObjectMigration, dict[str, Any]]:
    """A migration from one endpoint's bucket to another's, and what running it needs:
    the Secrets (one per side) and the ConfigMap with the CA of an HTTPS side."""
    body: dict[str, Any] = {
        "source": _side(source, source_bucket, "source-creds"),
        "target": _side(target, target_bucket, "target-creds"),
        "retry": {"attempts": 3, "backoff": {"initial": "50ms", "max": "200ms"}},
        **spec,
    }
    resource = parse_resource(
        {
            "apiVersion": "objmig.dev/v1alpha1",
            "kind": "ObjectMigration",
            "metadata": {"name": "m", "namespace": "test"},
            "spec": body,
        }
    )
    assert isinstance(resource, ObjectMigration)
    environ: dict[str, str] = {}
    for secret, endpoint in (("source-creds", source), ("target-creds", target)):
        assert endpoint.credentials is not None
        environ[env_name(secret, "accessKeyId")] = endpoint.credentials.access_key_id
        environ[env_name(secret, "secretAccessKey")] = endpoint.credentials.secret_access_key
    bundles = {e.ca_bundle for e in (source, target) if e.ca_bundle}
    assert len(bundles) <= 1, "one CA ConfigMap per test"
    config_maps = {CA_CONFIG_MAP: {"ca.crt": bundles.pop()}} if bundles else {}
    return resource, {"secrets": EnvSecrets(environ=environ), "config_maps": config_maps}


async def migrate(
    ledger: Ledger,
    source: Endpoint,
    source_bucket: str,
    target: Endpoint,
    target_bucket: str,
    **spec: Any,
) -> RunResult:
    resource, inputs = between(source, source_bucket, target, target_bucket, **spec)
    return await run(ledger, resource, source, **inputs)


def behind(proxy: S3FaultProxy, endpoint: Endpoint) -> Endpoint:
    """`endpoint` reached through `proxy` (plain HTTP to the proxy, whatever is behind it)."""
    return dataclasses.replace(endpoint, url=proxy.endpoint_url, ca_bundle=None)


def proxy_for(backend: S3Backend) -> S3FaultProxy:
    assert backend.endpoint.url is not None
    return S3FaultProxy(backend.endpoint.url, upstream_ca=backend.endpoint.ca_bundle)


# -- what a copy must keep ------------------------------------------------------------------


async def head(client: S3Client, bucket: str, key: str) -> dict[str, Any]:
    return dict(await client.head_object(Bucket=bucket, Key=key))


async def tags_of(client: S3Client, bucket: str, key: str) -> dict[str, str]:
    answer = await client.get_object_tagging(Bucket=bucket, Key=key)
    return {tag["Key"]: tag["Value"] for tag in answer["TagSet"]}


async def sha256_of(client: S3Client, bucket: str, key: str) -> str:
    answer = await client.get_object(Bucket=bucket, Key=key)
    async with answer["Body"] as body:
        return hashlib.sha256(await body.read()).hexdigest()


async def assert_copied(
    backend: S3Backend, client: S3Client, target: str, seeded: Seeded, row: ObjectRow
) -> None:
    """The target holds the object's bytes, user metadata, content headers and tags."""
    assert row.state is ObjectState.VERIFIED, (seeded.key, row.error_code, row.last_error)
    source, copy = (
        await head(client, seeded.bucket, seeded.key),
        await head(client, target, seeded.key),
    )
    assert await sha256_of(client, target, seeded.key) == seeded.sha256, seeded.key
    # objmig's own marker aside (see docs/guide.md on what objmig writes).
    assert without_objmig_keys(copy["Metadata"]) == source["Metadata"], seeded.key
    if backend.keeps_marker_metadata or not seeded.key.endswith("/"):
        assert source["Metadata"] == seeded.metadata, seeded.key
    for header in ("ContentType", "CacheControl", "ContentDisposition"):
        assert copy.get(header) == source.get(header), (seeded.key, header)
    if backend.supports_tags:
        assert await tags_of(client, target, seeded.key) == seeded.tags, seeded.key


async def corpus(seed: S3Seeder, backend: S3Backend, bucket: str) -> dict[str, Seeded]:
    """Objects that exercise what a copy must keep: metadata and content headers, tags, a
    multipart object of uneven parts, a directory marker, an empty object."""
    tags = {"team": "blue", "tier": "gold"} if backend.supports_tags else None
    part = backend.min_part_size
    objects = [
        await seed.put_object(
            bucket,
            "docs/readme.txt",
            20 * KiB,
            metadata={"owner": "ann", "storage-version": "3"},
            tags=tags,
            ContentType="text/plain; charset=utf-8",
            CacheControl="max-age=60",
            ContentDisposition='attachment; filename="readme.txt"',
        ),
        await seed.put_multipart(
            bucket,
            "data/uneven.bin",
            [part + 100_001, part, 77_777],
            metadata={"kind": "parts"},
            tags=tags,
            ContentType="application/octet-stream",
        ),
        await seed.put_object(
            bucket,
            "dir/",
            b"",
            metadata={"marker": "yes"},
            tags=tags,
            ContentType="application/x-directory",
        ),
        await seed.put_object(bucket, "empty", b""),
    ]
    return {obj.key: obj for obj in objects}


# -- the matrix -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("verify", ["etag", "checksum", "full"])
@pytest.mark.parametrize("copy_mode", ["stream", "serverSide"])
async def test_matrix(
    ledger: Ledger,
    compat_backend: S3Backend,
    compat_seed: S3Seeder,
    compat_client: S3Client,
    copy_mode: str,
    verify: str,
) -> None:
    """Every copy mode with every verify mode keeps bytes, metadata, content headers and
    tags, multipart ETags included (where the store tells part sizes), on every server."""
    source, target = await compat_seed.bucket(), await compat_seed.bucket()
    seeded = await corpus(compat_seed, compat_backend, source)
    endpoint = compat_backend.endpoint

    result = await migrate(
        ledger,
        endpoint,
        source,
        endpoint,
        target,
        copy={"mode": copy_mode, "concurrency": 4},
        verify={"mode": verify},
    )

    rows = await rows_of(ledger)
    assert result.outcome == "cut-over", [(r.key, r.last_error) for r in rows.values()]
    for key, obj in seeded.items():
        await assert_copied(compat_backend, compat_client, target, obj, rows[key])
    uneven = rows["data/uneven.bin"]
    copy = await head(compat_client, target, "data/uneven.bin")
    if compat_backend.tells_part_sizes:
        # Part boundaries kept: the multipart ETag is the source's.
        assert normalise_etag(copy["ETag"]) == seeded["data/uneven.bin"].etag
        assert uneven.degraded is None
        assert uneven.verified_by == ("etag" if verify == "etag" else "sha256")
        assert result.status.verification.etag_unproven == 0
    else:
        assert uneven.degraded == "partSizes"
        assert uneven.verified_by == "sha256"
    if verify != "etag":
        assert {row.verified_by for row in rows.values()} - {"etag"}, "proven by checksums"
    # One line per cell for the matrix in docs/testing-s3-servers.md (pytest -rA shows it).
    proofs = ", ".join(f"{key}={row.verified_by}" for key, row in sorted(rows.items()))
    degraded = find_condition(result.status.conditions, "Degraded")
    assert degraded is not None
    without = ",".join(re.findall(r": no (\w+) \(", degraded.message)) or "-"
    print(f"MATRIX {compat_backend.name} {copy_mode} {verify}: {proofs}; store lacks: {without}")


# -- tags -----------------------------------------------------------------------------------


@pytest.mark.parametrize("copy_mode", ["stream", "serverSide"])
async def test_without_preserve_tags_no_tagging_request_or_header_is_sent(
    ledger: Ledger,
    compat_backend: S3Backend,
    compat_seed: S3Seeder,
    compat_client: S3Client,
    copy_mode: str,
) -> None:
    source, target = await compat_seed.bucket(), await compat_seed.bucket()
    seeded = await corpus(compat_seed, compat_backend, source)

    with proxy_for(compat_backend) as proxy:
        endpoint = behind(proxy, compat_backend.endpoint)
        result = await migrate(
            ledger,
            endpoint,
            source,
            endpoint,
            target,
            copy={"mode": copy_mode, "preserveTags": False},
        )
        seen = proxy.seen()

    rows = await rows_of(ledger)
    assert result.outcome == "cut-over", [(r.key, r.last_error) for r in rows.values()]
    assert {row.state for row in rows.values()} == {ObjectState.VERIFIED}
    assert len(rows) == len(seeded)
    tagging = [
        (r.method, r.key, name)
        for r in seen
        for name in [*r.query, *r.headers]
        if name.lower().startswith(("tagging", "x-amz-tagging"))
    ]
    assert tagging == []
    degraded = find_condition(result.status.conditions, "Degraded")
    assert degraded is not None
    assert "no tags" not in degraded.message, "tags were never asked about"


async def test_tags_to_a_store_without_tags_fail_only_the_tagged_objects_naming_the_feature(
    ledger: Ledger,
    compat_backend: S3Backend,
    compat_seed: S3Seeder,
    compat_client: S3Client,
    s3_seed: S3Seeder,
    moto_backend: S3Backend,
) -> None:
    """From a store with tags (moto) to each server: where the target keeps tags they
    arrive; where it has none, objects without tags are copied as usual and those with
    tags fail with TagsNotSupported, which says how to copy them anyway."""
    source, target = await s3_seed.bucket(), await compat_seed.bucket()
    tagged = await s3_seed.put_object(source, "tagged", 4 * KiB, tags={"team": "red"})
    plain = await s3_seed.put_object(source, "plain", 4 * KiB, metadata={"a": "b"})
    # Parts the target accepts too (the copy keeps them).
    part = max(moto_backend.min_part_size, compat_backend.min_part_size)
    parts = await s3_seed.put_multipart(source, "parts", [part, 1000], tags={"team": "red"})

    result = await migrate(ledger, moto_backend.endpoint, source, compat_backend.endpoint, target)

    rows = await rows_of(ledger)
    assert rows["plain"].state is ObjectState.VERIFIED
    assert await sha256_of(compat_client, target, "plain") == plain.sha256
    degraded = find_condition(result.status.conditions, "Degraded")
    assert degraded is not None
    if compat_backend.supports_tags:
        assert result.outcome == "cut-over", [(r.key, r.last_error) for r in rows.values()]
        for obj in (tagged, parts):
            assert rows[obj.key].state is ObjectState.VERIFIED
            assert await tags_of(compat_client, target, obj.key) == {"team": "red"}
        assert degraded.status == "False"
    else:
        for obj in (tagged, parts):
            assert rows[obj.key].state is ObjectState.FAILED
            assert rows[obj.key].error_code == "TagsNotSupported"
            assert "copy.preserveTags: false" in (rows[obj.key].last_error or "")
            assert rows[obj.key].attempts == 1, "no retry can give the store tags"
        assert degraded.status == "True"
        assert degraded.reason == "StoreFeatureMissing"
        assert f"target {compat_backend.endpoint.url}: no tags" in degraded.message


# -- part sizes -----------------------------------------------------------------------------


async def test_a_store_that_tells_no_part_sizes_costs_the_etag_proof_not_the_copy(
    ledger: Ledger,
    compat_backend: S3Backend,
    compat_seed: S3Seeder,
    compat_client: S3Client,
) -> None:
    """As s3proxy answers: 501 to HEAD ?partNumber and to GetObjectAttributes. An object of
    uneven parts is copied in equal ones (its ETag changes), proven by the SHA-256 taken as
    the copy read it, said in the row (verifiedBy, degraded) and the status, and the source
    is read once."""
    source, target = await compat_seed.bucket(), await compat_seed.bucket()
    part = compat_backend.min_part_size
    uneven = await compat_seed.put_multipart(source, "uneven", [part + 100_001, part, 77_777])
    # Parts of a popular size (aws-cli's 8 MiB), which the guess tries first.
    even = await compat_seed.put_multipart(source, "even", [8 * MiB, 8 * MiB, 1_000])

    with proxy_for(compat_backend) as proxy:
        proxy.add_rule(Fail(501, "NotImplemented"), method="HEAD", query={"partNumber": None})
        proxy.add_rule(Fail(501, "NotImplemented"), method="GET", query={"attributes": None})
        result = await migrate(
            ledger,
            behind(proxy, compat_backend.endpoint),
            source,
            compat_backend.endpoint,
            target,
            copy={"concurrency": 1},
            verify={"mode": "etag"},
        )
        reads = proxy.object_reads(source)
        part_heads = [r for r in proxy.seen("HEAD") if "partNumber" in r.query]

    rows = await rows_of(ledger)
    assert result.outcome == "cut-over", [(r.key, r.last_error) for r in rows.values()]
    for obj in (uneven, even):
        row = rows[obj.key]
        assert row.state is ObjectState.VERIFIED
        assert await sha256_of(compat_client, target, obj.key) == obj.sha256
        assert row.degraded == "partSizes"
        if row.verified_by == "sha256":
            assert row.source_checksum == f"sha256:{obj.sha256}"
        else:
            # Equal parts of a popular size: the guess was right and the ETag proves it.
            assert row.verified_by == "etag"
    assert rows["uneven"].verified_by == "sha256"
    # What `objmig report` prints says it per object.
    mid = await ledger.find_migration("test/m")
    assert mid is not None
    report = io.BytesIO()
    await ledger.export_report(mid, report, fmt="jsonl")
    lines = {entry["key"]: entry for entry in map(json.loads, report.getvalue().splitlines())}
    assert lines["uneven"]["verified_by"] == "sha256"
    assert lines["uneven"]["degraded"] == "partSizes"
    assert reads == {"uneven": 1, "even": 1}, "each source read once"
    assert len(part_heads) == 1, "asked once, then known"
    verification = result.status.verification
    assert verification.etag_unproven == sum(r.verified_by == "sha256" for r in rows.values())
    assert verification.etag_unproven_by == {"sha256": verification.etag_unproven}
    degraded = find_condition(result.status.conditions, "Degraded")
    assert degraded is not None
    assert degraded.status == "True"
    assert "source " in degraded.message
    assert "no partSizes" in degraded.message


# -- copy-source conditionals -----------------------------------------------------------------


async def test_a_refused_copy_source_condition_is_learned_once_and_left_out(
    ledger: Ledger,
    compat_backend: S3Backend,
    compat_seed: S3Seeder,
    compat_client: S3Client,
) -> None:
    """As s3proxy answers a CopyObject with x-amz-copy-source-if-match: NotImplemented, "A
    header you provided implies functionality that is not implemented" (naming none)."""
    source, target = await compat_seed.bucket(), await compat_seed.bucket()
    seeded = [await compat_seed.put_object(source, f"k{i}", 8 * KiB) for i in range(3)]

    with proxy_for(compat_backend) as proxy:
        proxy.add_rule(
            Fail(
                501,
                "NotImplemented",
                "A header you provided implies functionality that is not implemented",
            ),
            header="x-amz-copy-source-if-match",
        )
        endpoint = behind(proxy, compat_backend.endpoint)
        result = await migrate(
            ledger,
            endpoint,
            source,
            endpoint,
            target,
            copy={"mode": "serverSide", "concurrency": 1},
        )
        conditional = [
            r
            for r in proxy.seen("PUT")
            if "x-amz-copy-source-if-match" in {name.lower() for name in r.headers}
        ]

    rows = await rows_of(ledger)
    assert result.outcome == "cut-over", [(r.key, r.last_error) for r in rows.values()]
    for obj in seeded:
        assert rows[obj.key].state is ObjectState.VERIFIED
        assert rows[obj.key].degraded == "copySourceConditionals"
        assert await sha256_of(compat_client, target, obj.key) == obj.sha256
    assert len(conditional) == 1, "refused once, then left out"
    degraded = find_condition(result.status.conditions, "Degraded")
    assert degraded is not None
    assert degraded.status == "True"
    assert "no copySourceConditionals" in degraded.message


# -- a private CA ---------------------------------------------------------------------------


def _cli_inputs(tmp_path: Path, endpoint: Endpoint, source: str, target: str) -> list[str]:
    """`objmig run` of a migration between two buckets of `endpoint`, with no CA named."""
    assert endpoint.credentials is not None
    side = {"endpoint": endpoint.url, "credentialsSecretRef": {"name": "s3"}}
    spec = {
        "apiVersion": "objmig.dev/v1alpha1",
        "kind": "ObjectMigration",
        "metadata": {"name": "private-ca", "namespace": "cli"},
        "spec": {
            "source": {**side, "bucket": source},
            "target": {**side, "bucket": target},
            # Versions are listed by the SDK client, objects copied by objmig's own.
            "selection": {"allVersions": True},
        },
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s3"},
        "stringData": {
            "accessKeyId": endpoint.credentials.access_key_id,
            "secretAccessKey": endpoint.credentials.secret_access_key,
        },
    }
    (tmp_path / "migration.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "secrets.yaml").write_text(yaml.safe_dump(secret))
    return [
        sys.executable, "-m", "objmig", "run", "-f", str(tmp_path / "migration.yaml"),
        "--secrets", str(tmp_path / "secrets.yaml"),
    ]  # fmt: skip


def _objmig(argv: list[str], database_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in CA_BUNDLE_VARIABLES}
    return subprocess.run(
        [*argv, "--database-url", database_url],
        capture_output=True,
        text=True,
        timeout=300,
        env={**environ, **env},
        check=False,
    )


async def test_objmig_run_refuses_an_untrusted_certificate_in_one_line_and_trusts_aws_ca_bundle(
    database_url: str, tls_minio_server: ChildServer, tmp_path: Path
) -> None:
    endpoint = tls_minio_server.endpoint()
    async with open_client(endpoint) as client:
        seed = S3Seeder(client, None)  # type: ignore[arg-type]
        try:
            source, target = await seed.bucket(versioned=True), await seed.bucket()
            first = await seed.put_object(source, "k", 2 * KiB)
            second = await seed.put_object(source, "k", 3 * KiB)
            argv = _cli_inputs(tmp_path, endpoint, source, target)

            refused = _objmig(argv, database_url)
            said = refused.stdout + refused.stderr
            assert refused.returncode == 1, said
            assert "Traceback" not in said
            # The status table wraps what it shows; the last words say it in one line.
            (line,) = [line for line in said.splitlines() if line.startswith("failed:")]
            assert "S3UntrustedCertificate" in line
            assert "certificate is not trusted" in line
            assert "AWS_CA_BUNDLE" in line

            ca_file = tmp_path / "ca.pem"
            assert tls_minio_server.ca_bundle is not None
            ca_file.write_text(tls_minio_server.ca_bundle)
            done = _objmig(argv, database_url, AWS_CA_BUNDLE=str(ca_file))
            assert done.returncode == 0, done.stdout + done.stderr
            got = await seed.get_bytes(target, "k")
            assert hashlib.sha256(got).hexdigest() == second.sha256
            assert first.version_id != second.version_id
        finally:
            await seed.cleanup()
