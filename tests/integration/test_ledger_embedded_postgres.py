"""EmbeddedPostgres: create, start, reuse (also after the starter was killed), stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from objmig.local import pg_binaries, processes
from objmig.local import postgres as embedded
from objmig.local.postgres import EmbeddedPostgres, PostgresNotFoundError


@pytest.fixture
def state_dir(postgres_dir: Path) -> Iterator[Path]:
    try:
        yield postgres_dir / "postgres"
    finally:
        # Never leave a server behind, whatever the test did.
        EmbeddedPostgres(postgres_dir / "postgres").stop_blocking()


async def _query(dsn: str, sql: str) -> object:
    conn = await asyncpg.connect(dsn)
    try:
        if ";" in sql:
            return await conn.execute(sql)
        return await conn.fetchval(sql)
    finally:
        await conn.close()


@pytest.mark.slow
async def test_start_reuse_stop_and_restart_keeps_data(state_dir: Path) -> None:
    server = EmbeddedPostgres(state_dir)
    await server.start()
    assert server.reused is False
    await _query(server.dsn, "CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
    assert int((state_dir / "port").read_text()) == server.port
    assert await _query(server.dsn, "SHOW listen_addresses") == "127.0.0.1"
    assert int(str(await _query(server.dsn, "SHOW max_connections"))) >= 200
    assert await _query(server.dsn, "SHOW fsync") == "on"

    second = EmbeddedPostgres(state_dir)
    await second.start()
    assert second.reused is True
    assert second.port == server.port

    await second.stop()
    assert server.running() is None
    assert not (state_dir / "port").exists()
    await second.stop()  # stopping a stopped server is a no-op

    async with EmbeddedPostgres(state_dir, fast=True) as again:
        assert await _query(again.dsn, "SELECT x FROM kept") == 42
        assert await _query(again.dsn, "SHOW fsync") == "off"
    assert again.running() is None


@pytest.mark.slow
def test_server_outlives_a_killed_starter_and_is_reused(state_dir: Path) -> None:
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pathlib import Path\n"
            "from objmig.local.postgres import EmbeddedPostgres\n"
            "pg = EmbeddedPostgres(Path(sys.argv[1]), fast=True).start_blocking()\n"
            "print(pg.port, flush=True)\n"
            "time.sleep(600)\n",
            str(state_dir),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert starter.stdout is not None
        port = int(starter.stdout.readline())
    finally:
        os.kill(starter.pid, signal.SIGKILL)
        starter.wait()

    with EmbeddedPostgres(state_dir) as server:
        assert server.reused is True
        assert server.port == port
        running = server.running()
        assert running is not None
        assert running.status == "ready"
    assert EmbeddedPostgres(state_dir).running() is None


def test_explicit_port_is_used(state_dir: Path) -> None:
    port = processes.free_port()
    with EmbeddedPostgres(state_dir, port=port, fast=True) as server:
        assert server.port == port
        assert server.dsn == f"postgresql://postgres@127.0.0.1:{port}/postgres"
        assert server.dsn_for("ledger").endswith(f":{port}/ledger")


def test_port_of_a_stopped_server_is_an_error(state_dir: Path) -> None:
    with pytest.raises(embedded.EmbeddedPostgresError, match="not started"):
        _ = EmbeddedPostgres(state_dir).dsn


def test_missing_binaries_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pg_binaries.shutil, "which", lambda _name: None)
    monkeypatch.setattr(pg_binaries.glob, "glob", lambda _pattern: [])

    with pytest.raises(PostgresNotFoundError, match="apt-get install postgresql"):
        embedded.find_postgres_binaries()


def test_binaries_are_found_on_this_machine() -> None:
    binaries = embedded.find_postgres_binaries()

    assert binaries.initdb.exists()
    assert binaries.pg_ctl.exists()
    assert binaries.postgres.exists()


def test_stale_pid_file_naming_another_live_process_is_ignored(state_dir: Path) -> None:
    with EmbeddedPostgres(state_dir, fast=True):
        pass
    # As after a crash and a reboot: the pid now belongs to some other program (us).
    pid_file = state_dir / "pgdata" / "postmaster.pid"
    pid_file.write_text(
        f"{os.getpid()}\n{state_dir / 'pgdata'}\n0\n5432\n\n127.0.0.1\n0 0\nready\n"
    )

    server = EmbeddedPostgres(state_dir, fast=True)
    assert server.running() is None
    with server:
        assert server.reused is False
        running = server.running()
        assert running is not None
        assert running.pid != os.getpid()
