"""Looking at local processes and ports without owning them: a free loopback port,
whether a port accepts connections, whether a pid is alive and runs postgres, and the end
of a log file for an error message, for the embedded PostgreSQL server (`postgres`).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def free_port() -> int:
    # Bind-and-release has a small race; start() retries with another port if bind fails.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_accepts(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        # Exists but belongs to another user (the postgres account when we are not root).
        return True
    return True


def is_postgres(pid: int) -> bool:
    """Whether ``pid`` runs a postgres binary (a stale postmaster.pid may name a reused pid).

    Linux only (``/proc``); elsewhere, or when unreadable, assume it is.
    """
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    program = cmdline.split(b"\0", 1)[0]
    return program.endswith((b"postgres", b"postmaster")) or b"postgres:" in program


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
