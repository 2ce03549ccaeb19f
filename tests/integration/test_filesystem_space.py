"""Free space on a target directory that several writers share (pods mounting one volume):
each takes its room under the tree's lock and for real, so together they never leave less
than minFreeSpace free."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.integration.directory_support import small_filesystem

MiB = 1024 * 1024

# One writer: claims 1 MiB temporaries until it is refused, then leaves them where they
# are (a writer that stops mid-copy leaves its temporary; that room stays taken).
_WRITER = """
import json, sys
from objmig.storage.filesystem import FileTree
from objmig.storage.filesystem.write import SpaceKeeper, TargetSpaceLowError

tree = FileTree(sys.argv[1])
tree.open(writable=True)
keeper = SpaceKeeper(tree, int(sys.argv[2]))
claimed = 0
while True:
    try:
        keeper.claim(f"{sys.argv[3]}/{claimed}", 1024 * 1024)
    except TargetSpaceLowError as refused:
        print(json.dumps({"claimed": claimed, "needed": refused.needed}))
        break
    claimed += 1
"""


def test_writers_sharing_a_filesystem_leave_min_free_space_between_them(tmp_path: Path) -> None:
    minimum = 2 * MiB
    with small_filesystem(tmp_path / "volume", "12m") as volume:
        writers = [
            subprocess.Popen(
                [sys.executable, "-c", _WRITER, str(volume), str(minimum), f"w{n}"],
                stdout=subprocess.PIPE,
                text=True,
            )
            for n in range(4)
        ]
        reports = [json.loads(w.communicate(timeout=120)[0]) for w in writers]
        assert [w.returncode for w in writers] == [0, 0, 0, 0]
        info = os.statvfs(volume)
        free = info.f_bavail * info.f_frsize
        # Nobody went below the minimum, and nobody stopped while a claim would still fit.
        assert free >= minimum
        assert free - reports[0]["needed"] < minimum
        claimed = sum(r["claimed"] for r in reports)
        assert 1 <= claimed <= 10
        temporaries = [p for p in volume.rglob("*") if p.is_file() and ".objmig" not in p.parts]
        assert len(temporaries) == claimed
        assert all(p.stat().st_size == MiB for p in temporaries)
