"""Group manifests: what a group of source objects (a package, a release) was made of, as a
content-addressed layout keeps it. Pure: building and reading the document, and whether a
group is complete.

A manifest is JSON (UTF-8, keys sorted, so the same group always gives the same bytes)::

    {"format": "objmig-group-manifest-v1", "group": "pkg-1.2",
     "members": [{"path": "bin/tool", "bucket": "", "key": "pkg-1.2/bin/tool",
                  "versionId": "", "content": "objects/ab/ab12...", "size": 1234,
                  "sha256": "ab12...", "etag": "...", "lastModified": "...",
                  "metadata": {...}, "contentType": "..."}, ...]}

`path` is the member's key relative to the source prefix, and to the group where the group
is a leading part of it (`pkg-1.2/bin/tool` in group `pkg-1.2` is `bin/tool`); `content`
is where its bytes are on the target. Members are the group's selected objects: every row
of the group but those skipped (left alone on purpose, e.g. by a metadata rule). A group
with a member not verified (failed, changed at source, still to do) is incomplete, and gets
no manifest.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from objmig.engine.keys import relative_key
from objmig.ledger.models import ObjectRow, ObjectState

FORMAT = "objmig-group-manifest-v1"
#: States of a member whose copy is proven (deleted: its source was cleaned up since).
_DONE = (ObjectState.VERIFIED, ObjectState.DELETED)


@dataclass(frozen=True)
class GroupVerdict:
    """A group's members, and the ones that keep it from a manifest (empty: complete)."""

    members: tuple[ObjectRow, ...]
    unfinished: tuple[ObjectRow, ...]

    @property
    def complete(self) -> bool:
        return not self.unfinished and bool(self.members)


def judge(rows: Sequence[ObjectRow]) -> GroupVerdict:
    """Which rows of one group are members, and which of those are not done yet."""
    members = tuple(r for r in rows if r.state is not ObjectState.SKIPPED)
    return GroupVerdict(members, tuple(r for r in members if r.state not in _DONE))


def member_path(group: str, key: str, source_prefix: str) -> str:
    """The member's path in its manifest: relative to the source prefix, and to the group
    where the group leads it."""
    relative = relative_key(key, source_prefix)
    head = group.rstrip("/") + "/"
    return (
        relative[len(head) :]
        if relative.startswith(head) and len(relative) > len(head)
        else relative
    )


def build(group: str, members: Sequence[ObjectRow], source_prefix: str) -> bytes:
    """The manifest of a complete group (members in path order): a function of the group
    alone, so a migration run again (or another one of the same objects) writes the same
    bytes, and nothing where they are already."""
    entries = []
    for row in members:
        described = row.source_metadata or {}
        checksum = row.source_checksum or ""
        entries.append(
            {
                "path": member_path(group, row.key, source_prefix),
                "bucket": row.bucket,
                "key": row.key,
                "versionId": row.version_id,
                "content": row.target_key,
                "size": row.size,
                "sha256": checksum.removeprefix("sha256:")
                if checksum.startswith("sha256:")
                else None,
                "etag": row.etag,
                "lastModified": row.last_modified.isoformat() if row.last_modified else None,
                "metadata": described.get("metadata") or {},
                "contentType": described.get("contentType"),
            }
        )
    entries.sort(key=lambda e: (str(e["path"]), str(e["bucket"]), str(e["versionId"])))
    document = {"format": FORMAT, "group": group, "members": entries}
    return (json.dumps(document, sort_keys=True, separators=(",", ":")) + "\n").encode()


@dataclass(frozen=True)
class Manifest:
    """A manifest as read back: its group and, per member (bucket, key, versionId), the
    content key and size it names."""

    group: str
    members: dict[tuple[str, str, str], tuple[str, int]]


def parse(data: bytes) -> Manifest:
    """Read a manifest; ValueError when it is not one."""
    document: Any = json.loads(data)
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError(f"not an objmig group manifest (format {FORMAT})")
    members: dict[tuple[str, str, str], tuple[str, int]] = {}
    for entry in document.get("members") or []:
        identity = (str(entry["bucket"]), str(entry["key"]), str(entry["versionId"]))
        members[identity] = (str(entry["content"]), int(entry["size"]))
    return Manifest(group=str(document["group"]), members=members)
