"""Finding PostgreSQL's server programs (initdb, pg_ctl, postgres) on this machine, for
the embedded server (`objmig.local.postgres`)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

_INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found: install them "
    "(Debian/Ubuntu: `apt-get install postgresql`; macOS: `brew install postgresql`), "
    "put their directory on PATH, or pass --database-url to use an existing server"
)


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be created, started or stopped."""


class PostgresNotFoundError(EmbeddedPostgresError):
    """No PostgreSQL server binaries were found on this machine."""


@dataclass(frozen=True, slots=True)
class PostgresBinaries:
    """Paths to the server programs we need."""

    bindir: Path

    @property
    def initdb(self) -> Path:
        """The ``initdb`` program."""
        return self.bindir / "initdb"

    @property
    def pg_ctl(self) -> Path:
        """The ``pg_ctl`` program."""
        return self.bindir / "pg_ctl"

    @property
    def postgres(self) -> Path:
        """The ``postgres`` server program."""
        return self.bindir / "postgres"


def _has_server_programs(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres"))


def _version_key(path: str) -> tuple[int, ...]:
    # /usr/lib/postgresql/15/bin -> (15,); non-numeric versions sort first.
    parts = Path(path).parent.name.split(".")
    return tuple(int(p) if p.isdigit() else -1 for p in parts)


def find_postgres_binaries() -> PostgresBinaries:
    """Locate initdb/pg_ctl/postgres.

    Order: ``pg_config --bindir`` (the server the system considers its default), then the
    highest ``/usr/lib/postgresql/*/bin`` (Debian keeps server binaries off PATH), then PATH.

    Raises:
        PostgresNotFoundError: with a message that names what to install.
    """
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            if out:
                candidates.append(Path(out))
    versioned = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    candidates.extend(Path(d) for d in versioned)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    for candidate in candidates:
        if _has_server_programs(candidate):
            return PostgresBinaries(bindir=candidate)
    raise PostgresNotFoundError(_INSTALL_HINT)
