"""The ``objmig`` command line (``objmig.cli.main``).

As the image's ENTRYPOINT, ``objmig`` is PID 1 of its container, and the kernel drops signals
to PID 1 that have no handler: a SIGTERM arriving while the command is still importing and
connecting (before the worker or Kopf installs its own handler) was lost, and the kubelet
waited out the grace period (30 s) and killed it, which counts as a failure (exit 137) where a
stopped worker (exit 143) does not. So, first thing: as PID 1, SIGTERM exits as it would in
any other process, until a command replaces this handler with its own.
"""

import os
import signal
import sys


def _exit_on_sigterm(signum: int, frame: object) -> None:
    sys.exit(128 + signum)


if os.getpid() == 1:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
