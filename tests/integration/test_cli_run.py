"""``objmig run`` as a user runs it: a real process, killed with SIGKILL, then run again."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml
from types_aiobotocore_s3 import S3Client

from objmig.ledger import Ledger, ObjectState
from objmig.local.s3server import LocalS3Server, free_port
from tests.fixtures.s3 import S3Seeder
from tests.integration.engine_support import (
    CLI_SECRET_KEY,
    cli_command,
    cli_inputs,
    keys_of,
    sha256_of,
)
from tests.support.s3proxy import Hold, S3FaultProxy

KiB = 1024


async def test_kill_9_mid_copy_then_rerun_finishes_with_every_object_verified(
    ledger: Ledger,
    database_url: str,
    s3_proxy: S3FaultProxy,
    s3_seed: S3Seeder,
    s3_client: S3Client,
    tmp_path: Path,
) -> None:
    source = await s3_seed.bucket()
    target = await s3_seed.bucket()
    seeded = [await s3_seed.put_object(source, f"obj/{i:04d}", 24 * KiB) for i in range(240)]
    seeded += [
        await s3_seed.put_multipart(source, f"big/{i}", [64 * KiB] * 6 + [5 * KiB])
        for i in range(4)
    ]
    spec, secrets = cli_inputs(tmp_path, s3_proxy.endpoint_url, source, target)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # The last objects' reads wait at the proxy until the first run is killed: it is still
    # copying when the kill comes, however fast it goes.
    s3_proxy.add_rule(Hold(), method="GET", bucket=source, key="obj/023*")

    first = await asyncio.create_subprocess_exec(
        *cli_command(spec, secrets, database_url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    try:
        async with asyncio.timeout(120):
            while True:
                await asyncio.sleep(0.05)
                migration_id = await ledger.find_migration("cli/killed")
                if migration_id is not None:
                    counts = await ledger.counts(migration_id)
                    if counts.state(ObjectState.VERIFIED).objects >= 20:
                        break
        assert first.returncode is None, "objmig run finished before it could be killed"
        first.send_signal(signal.SIGKILL)
        first_output, _ = await asyncio.wait_for(first.communicate(), timeout=60)
    finally:
        if first.returncode is None:
            first.kill()
    assert first.returncode == -signal.SIGKILL
    s3_proxy.clear()
    migration_id = await ledger.find_migration("cli/killed")
    assert migration_id is not None
    counts = await ledger.counts(migration_id)
    assert counts.state(ObjectState.VERIFIED).objects < len(seeded)

    second = await asyncio.create_subprocess_exec(
        *cli_command(spec, secrets, database_url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    second_output, _ = await asyncio.wait_for(second.communicate(), timeout=300)

    output = second_output.decode()
    assert second.returncode == 0, output
    assert CLI_SECRET_KEY not in output
    counts = await ledger.counts(migration_id)
    assert counts.state(ObjectState.VERIFIED).objects == len(seeded)
    copied = await keys_of(s3_client, target)
    for obj in seeded:
        assert copied[obj.key] == obj.etag, obj.key
    for obj in seeded[::20] + seeded[-4:]:
        assert await sha256_of(s3_client, target, obj.key) == obj.sha256
    assert CLI_SECRET_KEY.encode() not in first_output
    # The objects the kill caught in flight count that attempt too.
    interrupted = [row async for row in ledger.iter_rows(migration_id) if row.attempts >= 2]
    assert interrupted, "the attempts the kill interrupted were not counted"


def test_cli_status_report_and_approve_after_a_run(tmp_path: Path, postgres_dir: Path) -> None:
    """The read-only commands against an embedded ledger, as a user runs them."""
    state = postgres_dir
    with LocalS3Server() as server:
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=server.endpoint_url,
            aws_access_key_id="cli-test",
            aws_secret_access_key=CLI_SECRET_KEY,
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket="cli-src")
        s3.create_bucket(Bucket="cli-dst")
        for i in range(12):
            s3.put_object(Bucket="cli-src", Key=f"k{i}", Body=b"x" * (i + 1))
        spec, secrets = cli_inputs(tmp_path, server.endpoint_url, "cli-src", "cli-dst")
        base = [sys.executable, "-m", "objmig"]
        state_args = ["--state-dir", str(state)]
        try:
            run = subprocess.run(
                [*base, "run", "-f", str(spec), "--secrets", str(secrets), *state_args],
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert run.returncode == 0, run.stdout + run.stderr
            assert "CutOver" in run.stdout

            status = subprocess.run(
                [*base, "status", "cli/killed", "--json", *state_args],
                capture_output=True,
                text=True,
                check=True,
            )
            document = yaml.safe_load(status.stdout)
            assert document["phase"] == "CutOver"
            assert document["progress"]["objects"]["succeeded"] == 12

            report = subprocess.run(
                [*base, "report", "cli/killed", "--format", "csv", *state_args],
                capture_output=True,
                text=True,
                check=True,
            )
            lines = report.stdout.strip().splitlines()
            assert len(lines) == 13  # header + one row per object
            assert "verified" in lines[1]

            approve = subprocess.run(
                [*base, "approve", "cli/killed", *state_args],
                capture_output=True,
                text=True,
                check=True,
            )
            assert "digest: sha256:" in approve.stdout
            digest = approve.stdout.split("digest: ")[1].split()[0]
            assert digest == document["verification"]["digest"]
            for output in (run.stdout, run.stderr, status.stdout, report.stdout, approve.stdout):
                assert CLI_SECRET_KEY not in output

            # The embedded ledger outlives each command until `objmig db stop`.
            from objmig.local.postgres import EmbeddedPostgres

            db_status = [*base, "db", "status", *state_args]
            shown = subprocess.run(db_status, capture_output=True, text=True, check=True)
            assert shown.stdout.startswith("running: pid "), shown.stdout
            stop = [*base, "db", "stop", *state_args]
            stopped = subprocess.run(stop, capture_output=True, text=True, check=True)
            assert stopped.stdout.startswith("stopped"), stopped.stdout
            assert EmbeddedPostgres(state / "postgres").running() is None
            shown = subprocess.run(db_status, capture_output=True, text=True, check=True)
            assert shown.stdout.startswith("not running"), shown.stdout
        finally:
            from objmig.local.postgres import EmbeddedPostgres

            EmbeddedPostgres(state / "postgres").stop_blocking()


async def test_a_plain_run_never_loads_the_aws_sdk(
    ledger: Ledger,
    database_url: str,
    s3_server: LocalS3Server,
    s3_seed: S3Seeder,
    s3_client: S3Client,
    tmp_path: Path,
) -> None:
    """An unversioned bucket, explicit credentials, tagged single- and multipart objects,
    both copy modes: every call goes through the lean client, and the SDK (a third of a
    second of start-up per process) is never imported. `-X importtime` lists every module
    the real process imported."""
    source = await s3_seed.bucket()
    tags = {"team": "storage"}
    seeded = [await s3_seed.put_object(source, f"small/{i}", 3 * KiB, tags=tags) for i in range(10)]
    seeded.append(
        await s3_seed.put_multipart(source, "big", [64 * KiB, 64 * KiB, 7 * KiB], tags=tags)
    )
    for mode in ("stream", "serverSide"):
        target = await s3_seed.bucket()
        spec, secrets = cli_inputs(tmp_path, s3_server.endpoint_url, source, target)
        document = yaml.safe_load(spec.read_text())
        document["metadata"]["name"] = f"no-sdk-{mode.lower()}"
        document["spec"]["copy"]["mode"] = mode
        spec.write_text(yaml.safe_dump(document))
        run = await asyncio.create_subprocess_exec(
            sys.executable,
            "-X",
            "importtime",
            *cli_command(spec, secrets, database_url)[1:],
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(run.communicate(), timeout=300)
        assert run.returncode == 0, stdout.decode() + stderr.decode()
        imported = {
            line.split("|")[-1].strip()
            for line in stderr.decode().splitlines()
            if line.startswith("import time:")
        }
        assert "asyncpg" in imported  # the listing works: the ledger's driver is in it
        sdk = sorted(
            name
            for name in imported
            if name.split(".")[0] in ("botocore", "aiobotocore", "aioboto3", "boto3", "aiohttp")
        )
        assert sdk == [], f"{mode}: {sdk[:5]}"
        migration_id = await ledger.find_migration(f"cli/no-sdk-{mode.lower()}")
        assert migration_id is not None
        counts = await ledger.counts(migration_id)
        assert counts.state(ObjectState.VERIFIED).objects == len(seeded)
        copied = await keys_of(s3_client, target)
        assert {obj.key: obj.etag for obj in seeded} == copied
        tagging = await s3_client.get_object_tagging(Bucket=target, Key="big")
        assert {t["Key"]: t["Value"] for t in tagging["TagSet"]} == tags


async def test_a_configmap_worklist_from_a_file_selects_exactly_its_keys(
    ledger: Ledger,
    database_url: str,
    s3_server: LocalS3Server,
    s3_seed: S3Seeder,
    s3_client: S3Client,
    tmp_path: Path,
) -> None:
    """`selection.manifest.configMapRef` on a laptop: the ConfigMap comes from
    `--config-maps`; without it (or with the wrong key) the run stops before writing
    anything, with a message naming the ConfigMap and no traceback."""
    source, target = await s3_seed.bucket(), await s3_seed.bucket()
    for i in range(8):
        await s3_seed.put_object(source, f"k{i}", KiB)
    spec, secrets = cli_inputs(tmp_path, s3_server.endpoint_url, source, target)
    document = yaml.safe_load(spec.read_text())
    document["metadata"]["name"] = "worklist"
    document["spec"]["selection"] = {
        "manifest": {"configMapRef": {"name": "worklist", "key": "keys"}}
    }
    spec.write_text(yaml.safe_dump(document))
    config_maps = tmp_path / "configmaps.yaml"
    config_maps.write_text(
        yaml.safe_dump_all(
            [
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other"}},
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "worklist"},
                    "data": {"keys": "k1\nk5\nk7\nnot-in-the-bucket\n"},
                },
            ]
        )
    )

    async def objmig(*extra: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            *cli_command(spec, secrets, database_url),
            *extra,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout=300)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    code, out, err = await objmig()
    assert code == 1, out + err
    assert "error: ConfigMap 'worklist' with key 'keys'" in err
    assert "--config-maps" in err
    assert "Traceback" not in out + err
    assert await keys_of(s3_client, target) == {}

    code, out, err = await objmig("--config-maps", str(config_maps))
    assert code == 0, out + err
    assert set(await keys_of(s3_client, target)) == {"k1", "k5", "k7"}
    migration_id = await ledger.find_migration("cli/worklist")
    assert migration_id is not None
    counts = await ledger.counts(migration_id)
    # The worklist's key the bucket lacks is recorded and skipped, not silently dropped.
    assert counts.total.objects == 4
    assert counts.state(ObjectState.VERIFIED).objects == 3
    assert counts.state(ObjectState.SKIPPED).objects == 1


async def test_a_missing_secret_is_an_error_message_not_a_traceback(
    database_url: str, tmp_path: Path
) -> None:
    """The spec names Secret `s3`; neither the environment nor a file supplies it."""
    spec, _ = cli_inputs(tmp_path, "http://127.0.0.1:9", "cli-src", "cli-dst")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBJMIG_SECRET_")}
    command = [sys.executable, "-m", "objmig", "run", "-f", str(spec)]
    process = await asyncio.create_subprocess_exec(
        *command,
        "--database-url",
        database_url,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 1, out.decode() + err.decode()
    assert "error: Secret 's3' has no key 'accessKeyId' here" in err.decode()
    assert "Traceback" not in out.decode() + err.decode()


async def test_a_scan_that_cannot_reach_the_store_fails_with_a_message_not_a_traceback(
    database_url: str, tmp_path: Path
) -> None:
    """Nothing listens on the source's port: the scan fails (issue 25.7), and says so."""
    port = free_port()
    spec, secrets = cli_inputs(tmp_path, f"http://127.0.0.1:{port}", "cli-src", "cli-dst")
    process = await asyncio.create_subprocess_exec(
        *cli_command(spec, secrets, database_url),
        # Wide enough that the status table does not wrap the message.
        env={**os.environ, "COLUMNS": "400"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=180)
    text = out.decode() + err.decode()
    assert process.returncode == 1, text
    assert "Traceback" not in text
    assert "ScanFailed" in text
    assert "listing s3://cli-src/ failed: ConnectionRefusedError" in text
    assert CLI_SECRET_KEY not in text
