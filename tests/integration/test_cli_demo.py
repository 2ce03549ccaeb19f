"""``objmig demo`` (the README's first command) end to end, as a real process."""

from __future__ import annotations

import re
import subprocess
import sys


def test_demo_migrates_cuts_over_and_cleans_up_only_once_approved() -> None:
    small = ["--objects", "24", "--multipart", "1", "--archived", "2"]
    done = subprocess.run(
        [sys.executable, "-m", "objmig", "demo", *small],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "default/demo: CutOver | 27/27 objects" in output
    # Without the approval the gates refuse and nothing is deleted; with it, every source.
    refused, approved = output.split("cleanup of the source without an approval:")[1].split(
        "cleanup of the source, approved with the digest:"
    )
    assert "gate Approval: ApprovalMissing" in refused
    assert "deleted 0" in refused
    assert re.search(r"planned 27, deleted 27, skipped 0, failed 0", approved), approved
