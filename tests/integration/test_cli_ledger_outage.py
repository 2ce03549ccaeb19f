"""``objmig run`` when its ledger goes away (issues 21.4, 23.7): it waits and converges, and
when the ledger stays away it says which database, without its password, and exits 75."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from objmig.ledger import Ledger, ObjectState
from objmig.local.postgres import EmbeddedPostgres
from objmig.local.processes import free_port
from objmig.local.s3server import LocalS3Server
from tests.fixtures.s3 import S3Seeder
from tests.integration.engine_support import keys_of
from tests.support.s3proxy import Hold, S3FaultProxy

pytestmark = pytest.mark.slow


def _inputs(tmp_path: Path, server: LocalS3Server, endpoint: str, source: str, target: str) -> Path:
    side = {"endpoint": endpoint, "credentialsSecretRef": {"name": "s3"}}
    documents = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s3"},
            "stringData": {
                "accessKeyId": server.credentials.access_key_id,
                "secretAccessKey": server.credentials.secret_access_key,
            },
        },
        {
            "apiVersion": "objmig.dev/v1alpha1",
            "kind": "ObjectMigration",
            "metadata": {"name": "outage", "namespace": "cli"},
            "spec": {
                "source": {**side, "bucket": source},
                "target": {**side, "bucket": target},
                "copy": {"mode": "stream", "concurrency": 2},
            },
        },
    ]
    path = tmp_path / "migration.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    return path


async def _objmig(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "objmig",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def _seeded(seed: S3Seeder, objects: int) -> tuple[str, str]:
    source, target = await seed.bucket(), await seed.bucket()
    for i in range(objects):
        await seed.put_object(source, f"k/{i:03d}", 256)
    return source, target


@pytest.fixture
def own_server(postgres_dir: Path) -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL server of the test's own, on a fixed port, to stop and start."""
    server = EmbeddedPostgres(postgres_dir, port=free_port(), fast=True)
    server.start_blocking()
    try:
        yield server
    finally:
        server.stop_blocking()


def _hold_the_last_write(proxy: S3FaultProxy, target: str, key: str) -> Hold:
    """Keep the write of the last key the run claims (rows are claimed in key order) until
    the test releases it: the run cannot end before the ledger goes, however fast it copies
    the rest."""
    hold = Hold()
    proxy.add_rule(hold, method="PUT", bucket=target, key=key)
    return hold


async def _verified(dsn: str, at_least: int, deadline: float) -> None:
    """Wait until the run has verified ``at_least`` objects (read on a connection of ours)."""
    async with await Ledger.connect(dsn) as ledger:
        while time.monotonic() < deadline:
            migration_id = await ledger.find_migration("cli/outage")
            if migration_id is not None:
                counts = await ledger.counts(migration_id)
                if counts.state(ObjectState.VERIFIED).objects >= at_least:
                    return
            await asyncio.sleep(0.1)
    raise AssertionError(f"{at_least} objects were not verified in time")


async def test_run_waits_through_a_ledger_outage_of_twenty_seconds_and_converges(
    own_server: EmbeddedPostgres,
    s3_server: LocalS3Server,
    s3_seed: S3Seeder,
    s3_client: object,
    tmp_path: Path,
) -> None:
    source, target = await _seeded(s3_seed, 80)
    with S3FaultProxy(s3_server.endpoint_url) as proxy:
        last = _hold_the_last_write(proxy, target, "k/079")
        spec = _inputs(tmp_path, s3_server, proxy.endpoint_url, source, target)
        run = await _objmig("run", "-f", str(spec), "--database-url", own_server.dsn)
        try:
            await _verified(own_server.dsn, 10, time.monotonic() + 120)
            await last.arrived()
            own_server.stop_blocking()
            stopped = time.monotonic()
            # Its result now has to be recorded while the ledger is away.
            last.release()
            assert run.stdout is not None
            told = b""
            while b"is unreachable" not in told:
                told += await asyncio.wait_for(run.stdout.readline(), timeout=60)
            assert run.returncode is None, "objmig run ended instead of waiting"
            # The outage lasts twenty seconds, whatever the run does meanwhile.
            await asyncio.sleep(max(0.0, 20 - (time.monotonic() - stopped)))
            assert run.returncode is None, "objmig run ended instead of waiting"
            own_server.start_blocking()
            rest, _ = await asyncio.wait_for(run.communicate(), timeout=300)
        finally:
            if run.returncode is None:
                run.kill()
    output = (told + rest).decode()
    assert run.returncode == 0, output
    assert "answers again" in output, output
    assert "Traceback" not in output, output
    assert len(await keys_of(s3_client, target)) == 80  # type: ignore[arg-type]


async def test_run_gives_up_on_a_dead_ledger_with_exit_75_naming_it_without_the_password(
    s3_server: LocalS3Server, s3_seed: S3Seeder, tmp_path: Path
) -> None:
    source, target = await _seeded(s3_seed, 0)
    spec = _inputs(tmp_path, s3_server, s3_server.endpoint_url, source, target)
    port = free_port()  # nothing listens there
    dsn = f"postgresql://objmig:hunter2-secret@127.0.0.1:{port}/ledger?sslmode=disable"

    run = await _objmig("run", "-f", str(spec), "--database-url", dsn, "--ledger-wait", "2s")
    output, _ = await asyncio.wait_for(run.communicate(), timeout=60)

    text = output.decode()
    assert run.returncode == 75, text
    assert f"postgresql://objmig@127.0.0.1:{port}/ledger" in text, text
    assert "hunter2-secret" not in text
    assert "run the same command again" in text, text
    assert "Traceback" not in text, text


async def test_run_starts_its_embedded_ledger_again_when_it_is_stopped_mid_run(
    s3_server: LocalS3Server,
    s3_seed: S3Seeder,
    s3_client: object,
    tmp_path: Path,
    postgres_dir: Path,
) -> None:
    source, target = await _seeded(s3_seed, 60)
    state = postgres_dir
    embedded = EmbeddedPostgres(state / "postgres")
    with S3FaultProxy(s3_server.endpoint_url) as proxy:
        last = _hold_the_last_write(proxy, target, "k/059")
        spec = _inputs(tmp_path, s3_server, proxy.endpoint_url, source, target)
        run = await _objmig("run", "-f", str(spec), "--state-dir", str(state))
        try:
            deadline = time.monotonic() + 120
            while embedded.attach() is None:
                assert time.monotonic() < deadline, "the embedded ledger never started"
                await asyncio.sleep(0.1)
            await _verified(embedded.dsn, 10, deadline)
            await last.arrived()
            embedded.stop_blocking()  # as `objmig db stop` would, or a crash
            last.release()
            output, _ = await asyncio.wait_for(run.communicate(), timeout=300)
        finally:
            if run.returncode is None:
                run.kill()
            embedded.stop_blocking()
    text = output.decode()
    assert run.returncode == 0, text
    assert "answers again" in text, text
    assert len(await keys_of(s3_client, target)) == 60  # type: ignore[arg-type]
