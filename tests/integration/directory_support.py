"""Helpers for migrations to and from directories: specs, tmpfs mounts, tree checks."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from objmig.api.loading import parse_resource
from objmig.api.migration import ObjectMigration
from objmig.storage.endpoint import Endpoint
from objmig.storage.filesystem.keys import RESERVED_DIR, is_temporary
from tests.integration.engine_support import SECRET

FAST_RETRY = {"attempts": 4, "backoff": {"initial": "50ms", "max": "200ms"}}


def bucket_side(endpoint: Endpoint, bucket: str, **extra: Any) -> dict[str, Any]:
    return {
        "endpoint": endpoint.url,
        "addressingStyle": "path",
        "credentialsSecretRef": {"name": SECRET},
        "bucket": bucket,
        **extra,
    }


def resource(
    name: str, source: dict[str, Any], target: dict[str, Any], **spec: Any
) -> ObjectMigration:
    """An ObjectMigration from the two sides, with fast retries."""
    body: dict[str, Any] = {"source": source, "target": target, "retry": FAST_RETRY, **spec}
    parsed = parse_resource(
        {
            "apiVersion": "objmig.dev/v1alpha1",
            "kind": "ObjectMigration",
            "metadata": {"name": name, "namespace": "test"},
            "spec": body,
        }
    )
    assert isinstance(parsed, ObjectMigration)
    return parsed


def files_of(root: Path) -> dict[str, bytes]:
    """Every file under `root` by key, objmig's own (index, temporaries) left out."""
    found: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if (
            path.is_file()
            and not relative.startswith(RESERVED_DIR + "/")
            and not is_temporary(path.name)
        ):
            found[relative] = path.read_bytes()
    return found


def temporaries_of(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if is_temporary(p.name)]


@contextlib.contextmanager
def small_filesystem(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` (root only; skipped with the reason elsewhere)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def grow(path: Path, size: str) -> None:
    """Make a tmpfs from `small_filesystem` bigger: room freed while a run waits."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)
