"""``objmig`` as PID 1 (the image's ENTRYPOINT in a container) stops on SIGTERM.

The kernel drops a signal to PID 1 that has no handler; before a command installs its own
(Kopf's, the worker's), a pod deleted while objmig started would ignore the SIGTERM and be
killed 30 s later. A PID namespace of our own makes the test process PID 1 here.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare for a PID namespace",
)

SLEEPER = "import sys, time; print('ready', flush=True); time.sleep(60)"


def sigterm_as_pid_1(code: str, timeout: float) -> int | None:
    """Run ``code`` as PID 1 of a new PID namespace, SIGTERM it once it runs; its exit code,
    or None when it still ran ``timeout`` seconds later (then it is killed)."""
    with subprocess.Popen(
        ["unshare", "--pid", "--fork", "--kill-child", sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        os.kill(int(children[0]), signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()  # unshare's --kill-child takes PID 1 with it
            proc.wait()
            return None


def test_a_plain_python_as_pid_1_ignores_sigterm() -> None:
    """What the container runtime gives us: the reason for the handler."""
    # Showing that something does not happen takes a bounded wait.
    assert sigterm_as_pid_1(SLEEPER, timeout=2) is None


def test_objmig_as_pid_1_exits_143_on_sigterm_before_any_command_runs() -> None:
    assert sigterm_as_pid_1(f"import objmig.cli; {SLEEPER}", timeout=30) == 143
