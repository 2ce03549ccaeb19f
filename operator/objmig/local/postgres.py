"""An embedded PostgreSQL server for the CLI, the demo, the tests and the benchmarks.

`objmig run` keeps its ledger in a PostgreSQL server that lives in a state directory on the
user's machine. This module creates that server (``initdb``) on first use, starts it on a free
loopback port with ``pg_ctl``, and stops it. Three properties matter more than convenience:

* **It survives its parent.** The CLI can be killed with ``kill -9`` while its server runs on;
  the next ``objmig run`` must find that server (``postmaster.pid`` plus our ``port`` file)
  and reuse it rather than fail on a locked data directory. The server is started in its own
  session so that a Ctrl-C in the terminal does not shut it down behind the CLI's back.
* **It works as root.** ``initdb`` and ``postgres`` refuse to run with euid 0 (containers and
  CI often run as root). We then run them as the data directory's owner, or as the
  ``postgres`` OS user, and hand the directories over to that user first.
* **It is local only.** The server listens on 127.0.0.1 with trust authentication for
  loopback connections; nothing else can reach it.

Layout of ``data_dir``::

    data_dir/
      pgdata/          the cluster (PGDATA), created by initdb
      run/             the Unix socket directory (unused by objmig, kept out of /tmp)
      port             the TCP port of the running server
      postgres.log     the server log
      pg_ctl.log       output of initdb / pg_ctl, quoted in errors
      .lock            serialises start/stop between processes
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import pwd
import re
import shlex
import stat
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from objmig.local.pg_binaries import (
    EmbeddedPostgresError,
    PostgresBinaries,
    PostgresNotFoundError,
    find_postgres_binaries,
)
from objmig.local.processes import free_port, is_postgres, pid_alive, port_accepts, tail

__all__ = [
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
    "PostgresBinaries",
    "PostgresNotFoundError",
    "RunningServer",
    "find_postgres_binaries",
]

log = logging.getLogger(__name__)

#: The database superuser created by initdb; fixed so that the DSN does not depend on who ran it.
SUPERUSER = "postgres"
#: The OS account used when we are root and the data directory does not name another owner.
SERVICE_ACCOUNT = "postgres"
#: How long to wait for pg_ctl start/stop; generous because CI machines can be busy.
DEFAULT_TIMEOUT = 120.0
#: Unix socket paths are limited to 107 bytes on Linux; past that we disable the socket.
_MAX_SOCKET_PATH = 100


@dataclass(frozen=True, slots=True)
class RunningServer:
    """What ``postmaster.pid`` says about a live server."""

    pid: int
    port: int
    status: str


def _default_shared_buffers() -> str:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return "256MB"
    mib = min(1024, max(128, total // 16 // 2**20))
    return f"{mib}MB"


@dataclass(frozen=True, slots=True)
class _RunAs:
    """The OS identity initdb/pg_ctl run as (None when we are not root)."""

    uid: int
    gid: int
    name: str

    def subprocess_kwargs(self) -> dict[str, Any]:
        """Arguments that make ``subprocess`` drop root privileges to this account."""
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


class EmbeddedPostgres:
    """A private PostgreSQL server living in ``data_dir``.

    Example::

        async with EmbeddedPostgres(state_dir / "postgres") as pg:
            ledger = await Ledger.connect(pg.dsn)

    ``start`` reuses a server that is already running on the same data directory (for example
    one left behind by a CLI process that was killed), so it is safe to call from every run.
    Exiting the ``async with`` / ``with`` block stops the server, whoever started it.

    Args:
        data_dir: directory holding the cluster, log and port file; created if missing.
        port: TCP port to listen on; ``None`` picks a free one. Ignored when an already
            running server is reused (its port wins).
        fast: turn off fsync, synchronous_commit and full_page_writes. Data can be lost on
            an OS crash: for tests and benchmarks only, never for a real migration.
        shared_buffers: PostgreSQL ``shared_buffers``; default 1/16 of the machine's memory,
            between 128MB and 1GB (a million-object ledger with its indexes is about 1GB;
            the memory is only used as pages are touched).
        max_connections: PostgreSQL ``max_connections`` (at least 200: operator, workers and
            the CLI's in-process workers each hold a pool).
        timeout: seconds to wait for start and stop.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        fast: bool = False,
        shared_buffers: str | None = None,
        max_connections: int = 250,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.pgdata = self.data_dir / "pgdata"
        self.socket_dir = self.data_dir / "run"
        self.port_file = self.data_dir / "port"
        self.log_file = self.data_dir / "postgres.log"
        self.ctl_log_file = self.data_dir / "pg_ctl.log"
        self.fast = fast
        self.shared_buffers = shared_buffers or _default_shared_buffers()
        self.max_connections = max(200, max_connections)
        self.timeout = timeout
        self._requested_port = port
        self._port: int | None = None
        self._binaries: PostgresBinaries | None = None
        #: True when start() found a server already running and adopted it.
        self.reused = False

    # -- public API -------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return "127.0.0.1"

    @property
    def user(self) -> str:
        """The database superuser (trust authentication, no password)."""
        return SUPERUSER

    @property
    def port(self) -> int:
        """The TCP port of the running server.

        Raises:
            EmbeddedPostgresError: when the server has not been started.
        """
        if self._port is None:
            raise EmbeddedPostgresError(f"embedded PostgreSQL in {self.data_dir} is not started")
        return self._port

    @property
    def dsn(self) -> str:
        """A libpq/asyncpg URL for the ``postgres`` database of the running server."""
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        """A libpq/asyncpg URL for ``database`` on the running server."""
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    async def start(self) -> Self:
        """Start (or reuse) the server without blocking the event loop."""
        await asyncio.to_thread(self.start_blocking)
        return self

    async def stop(self) -> None:
        """Stop the server without blocking the event loop; a no-op if it is not running."""
        await asyncio.to_thread(self.stop_blocking)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def __enter__(self) -> Self:
        return self.start_blocking()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_blocking()

    def running(self) -> RunningServer | None:
        """Describe the server running on this data directory, or None if there is none.

        Reads ``postmaster.pid`` (written by the postmaster itself, so it is authoritative)
        and checks that the process is alive; a stale file left by a crash reads as None.
        """
        pid_file = self.pgdata / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
        except (FileNotFoundError, PermissionError):
            return None
        # Lines: pid, data dir, start time, port, socket dir, listen address, shm key, status.
        if len(lines) < 4 or not lines[0].strip().isdigit():
            return None
        pid = int(lines[0].strip())
        if not pid_alive(pid) or not is_postgres(pid):
            return None
        try:
            port = int(lines[3].strip())
        except ValueError:
            port = self._read_port_file() or 0
        status = lines[7].strip() if len(lines) > 7 else "unknown"
        return RunningServer(pid=pid, port=port, status=status)

    def attach(self) -> RunningServer | None:
        """The server running on this data directory, its port remembered for :attr:`dsn`.

        None when none runs; unlike :meth:`start_blocking`, never starts one.
        """
        running = self.running()
        self._port = running.port if running is not None else None
        return running

    def start_blocking(self) -> Self:
        """Create the cluster if needed, then start the server or adopt a running one.

        Returns once the server accepts TCP connections.

        Raises:
            PostgresNotFoundError: no server binaries on this machine.
            EmbeddedPostgresError: initdb or start failed (the message quotes the log).
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            run_as = self._run_as()
            if run_as is not None:
                self._hand_over(run_as)
            existing = self._wait_for_settled_server()
            if existing is not None:
                self._adopt(existing)
                return self
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb(run_as)
            self._start_new(run_as)
        return self

    def stop_blocking(self) -> None:
        """Stop the server running on this data directory (fast shutdown); no-op if none."""
        if not self.data_dir.exists():
            return
        with self._locked():
            if self.running() is None:
                self._port = None
                return
            run_as = self._run_as()
            self._run(
                [
                    str(self.binaries.pg_ctl),
                    "stop",
                    "-D",
                    str(self.pgdata),
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    str(int(self.timeout)),
                ],
                run_as,
                what="pg_ctl stop",
            )
            with contextlib.suppress(FileNotFoundError):
                self.port_file.unlink()
            self._port = None
            log.info("embedded PostgreSQL in %s stopped", self.data_dir)

    # -- internals --------------------------------------------------------------------------

    @property
    def binaries(self) -> PostgresBinaries:
        """The server binaries, located on first use."""
        if self._binaries is None:
            self._binaries = find_postgres_binaries()
        return self._binaries

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # Two CLI processes starting on one state directory must not both run initdb or both
        # start a postmaster; an flock is released by the kernel even after kill -9.
        fd = os.open(self.data_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read_port_file(self) -> int | None:
        try:
            return int(self.port_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def _run_as(self) -> _RunAs | None:
        """Who runs initdb/pg_ctl: None (ourselves) unless we are root."""
        if os.geteuid() != 0:
            return None
        # Keep an existing cluster's owner: postgres insists the data directory be owned by
        # the user running it, and a cluster made by a non-root user must stay theirs.
        with contextlib.suppress(FileNotFoundError):
            owner = self.pgdata.stat().st_uid
            if owner != 0:
                entry = pwd.getpwuid(owner)
                return _RunAs(uid=entry.pw_uid, gid=entry.pw_gid, name=entry.pw_name)
        try:
            entry = pwd.getpwnam(SERVICE_ACCOUNT)
        except KeyError:
            raise EmbeddedPostgresError(
                "running as root, but PostgreSQL refuses to run as root and there is no "
                f"{SERVICE_ACCOUNT!r} OS user to run it as: create one "
                f"(`useradd --system {SERVICE_ACCOUNT}`), run objmig as a non-root user, or "
                "pass --database-url"
            ) from None
        return _RunAs(uid=entry.pw_uid, gid=entry.pw_gid, name=entry.pw_name)

    def _hand_over(self, run_as: _RunAs) -> None:
        """Give the data directory to ``run_as`` and make sure it can reach it."""
        for path in (self.data_dir, self.socket_dir):
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, run_as.uid, run_as.gid)
        for path in (self.log_file, self.ctl_log_file):
            if path.exists():
                os.chown(path, run_as.uid, run_as.gid)
        self._grant_search_on_ancestors(run_as)

    def _grant_search_on_ancestors(self, run_as: _RunAs) -> None:
        """Let ``run_as`` traverse every parent directory of ``data_dir``.

        Root's own directories (``/root``, pytest's temp root) are often mode 0700, which stops
        the postgres account from reaching its data directory. We add only the search bit for
        "other" (``o+x``: enter, not list), and only where it is missing, and say so.
        """
        groups = set(os.getgrouplist(run_as.name, run_as.gid))
        for parent in reversed(self.data_dir.parents):
            st = parent.stat()
            if st.st_uid == run_as.uid:
                ok = bool(st.st_mode & stat.S_IXUSR)
            elif st.st_gid in groups:
                ok = bool(st.st_mode & stat.S_IXGRP)
            else:
                ok = bool(st.st_mode & stat.S_IXOTH)
            if not ok:
                log.warning(
                    "adding o+x (traverse only) to %s so the %s user can reach %s",
                    parent,
                    run_as.name,
                    self.data_dir,
                )
                os.chmod(parent, stat.S_IMODE(st.st_mode) | stat.S_IXOTH)

    def _run(self, args: Sequence[str], run_as: _RunAs | None, *, what: str) -> None:
        """Run a server program, its output appended to pg_ctl.log, raising with its tail."""
        kwargs: dict[str, Any] = run_as.subprocess_kwargs() if run_as else {}
        # A user's PG* variables (PGPORT, PGDATA, ...) must not leak into the server's setup.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env |= {"LC_ALL": "C", "LANG": "C"}
        if run_as is not None:
            env["HOME"] = str(self.data_dir)
            env["USER"] = env["LOGNAME"] = run_as.name
        with open(self.ctl_log_file, "ab") as out:
            if run_as is not None:
                with contextlib.suppress(OSError):
                    os.chown(self.ctl_log_file, run_as.uid, run_as.gid)
            out.write(f"$ {' '.join(args)}\n".encode())
            out.flush()
            # Files, not pipes: the postmaster forked by pg_ctl must not inherit a pipe we
            # wait on. Its own session keeps a terminal's Ctrl-C away from it.
            result = subprocess.run(
                list(args),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                env=env,
                start_new_session=True,
                timeout=self.timeout + 30,
                check=False,
                **kwargs,
            )
        if result.returncode != 0:
            raise EmbeddedPostgresError(
                f"{what} failed (exit {result.returncode}) for {self.data_dir}\n"
                f"--- {self.ctl_log_file.name} ---\n{tail(self.ctl_log_file)}\n"
                f"--- {self.log_file.name} ---\n{tail(self.log_file)}"
            )

    def _initdb(self, run_as: _RunAs | None) -> None:
        if self.pgdata.exists() and any(self.pgdata.iterdir()):
            raise EmbeddedPostgresError(
                f"{self.pgdata} exists but is not a PostgreSQL cluster (no PG_VERSION); "
                "move it away or choose another state directory"
            )
        log.info("initialising embedded PostgreSQL cluster in %s", self.pgdata)
        self._run(
            [
                str(self.binaries.initdb),
                "-D",
                str(self.pgdata),
                "-U",
                SUPERUSER,
                "-E",
                "UTF8",
                # C locale: byte-order text comparison, identical on every machine.
                "--no-locale",
                # Loopback only (listen_addresses below), so trust is safe and needs no secret.
                "--auth-local=trust",
                "--auth-host=trust",
                "--no-sync",
            ],
            run_as,
            what="initdb",
        )

    def _settings(self, port: int) -> list[str]:
        socket_dir = str(self.socket_dir)
        if len(socket_dir) + len("/.s.PGSQL.65535") > _MAX_SOCKET_PATH:
            socket_dir = ""  # objmig connects over TCP; the socket is optional
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(port),
            "unix_socket_directories": socket_dir,
            "max_connections": str(self.max_connections),
            "shared_buffers": self.shared_buffers,
            "work_mem": "16MB",
            "maintenance_work_mem": "256MB",
            # No replicas of an embedded server: minimal WAL makes bulk loads cheaper.
            "wal_level": "minimal",
            "max_wal_senders": "0",
            "max_wal_size": "4GB",
            "checkpoint_timeout": "15min",
        }
        if self.fast:
            settings |= {
                "fsync": "off",
                "synchronous_commit": "off",
                "full_page_writes": "off",
            }
        # pg_ctl hands -o to /bin/sh, hence the shell quoting.
        return [f"-c {name}={shlex.quote(value)}" for name, value in settings.items()]

    def _start_new(self, run_as: _RunAs | None) -> None:
        # running() said no server: a postmaster.pid left now is stale (after a crash or a
        # reboot its pid may even belong to another program, which would make postgres
        # refuse to start when that program runs as the same user).
        with contextlib.suppress(FileNotFoundError):
            (self.pgdata / "postmaster.pid").unlink()
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if run_as is not None:
            os.chown(self.socket_dir, run_as.uid, run_as.gid)
        attempts = 1 if self._requested_port else 3
        for attempt in range(1, attempts + 1):
            port = self._requested_port or free_port()
            try:
                self._run(
                    [
                        str(self.binaries.pg_ctl),
                        "start",
                        "-D",
                        str(self.pgdata),
                        "-l",
                        str(self.log_file),
                        "-w",
                        "-t",
                        str(int(self.timeout)),
                        "-o",
                        " ".join(self._settings(port)),
                    ],
                    run_as,
                    what="pg_ctl start",
                )
            except EmbeddedPostgresError:
                # Another process may have grabbed the port between _free_port and bind.
                bind_failed = re.search(r"could not (bind|create listen)", tail(self.log_file))
                if attempt < attempts and bind_failed:
                    log.warning("port %d was taken; retrying on another port", port)
                    continue
                raise
            self._wait_accepting(port)
            self._port = port
            self.reused = False
            self.port_file.write_text(f"{port}\n")
            log.info(
                "embedded PostgreSQL started on 127.0.0.1:%d (data %s%s)",
                port,
                self.pgdata,
                ", fast/non-durable" if self.fast else "",
            )
            return

    def _wait_for_settled_server(self) -> RunningServer | None:
        """Return a ready running server, waiting out one that is starting or stopping."""
        deadline = time.monotonic() + self.timeout
        while True:
            server = self.running()
            if server is None or server.status == "ready":
                return server
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(
                    f"PostgreSQL in {self.pgdata} (pid {server.pid}) stayed in state "
                    f"{server.status!r} for {self.timeout:.0f}s"
                )
            time.sleep(0.2)

    def _adopt(self, server: RunningServer) -> None:
        if self._requested_port and self._requested_port != server.port:
            log.warning(
                "reusing PostgreSQL already running in %s on port %d (not the requested %d)",
                self.data_dir,
                server.port,
                self._requested_port,
            )
        self._wait_accepting(server.port)
        self._port = server.port
        self.reused = True
        with contextlib.suppress(OSError):
            self.port_file.write_text(f"{server.port}\n")
        log.info("reusing embedded PostgreSQL (pid %d) on 127.0.0.1:%d", server.pid, server.port)

    def _wait_accepting(self, port: int) -> None:
        deadline = time.monotonic() + self.timeout
        while not port_accepts(port):
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(
                    f"PostgreSQL in {self.pgdata} does not accept connections on port {port}\n"
                    f"--- {self.log_file.name} ---\n{tail(self.log_file)}"
                )
            time.sleep(0.1)
