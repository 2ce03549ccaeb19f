"""The group gate of a cleanup: a group's old objects go only when the group's manifest and
every content object it names verify.

A content-addressed layout keeps a group (a package) as its manifest plus content objects
shared with other groups. Deleting a member's source is safe only while the new layout
holds the whole group: its manifest is on the target and lists the member, and every
content object the manifest names is there with the size it lists (and, where the target
keeps one, a SHA-256 equal to its name). Each group is checked once per pass.
"""

from __future__ import annotations

from objmig.engine import manifests
from objmig.engine.audit import read_document
from objmig.engine.context import MigrationContext, Side
from objmig.engine.deletion import Verdict
from objmig.ledger.models import ObjectRow
from objmig.storage.errors import classify
from objmig.storage.types import HeadResult


class GroupGate:
    """Per-object verdicts of the group gate, with each group checked once."""

    def __init__(self, context: MigrationContext, target: Side) -> None:
        self._context = context
        self._target = target
        self._groups: dict[str, tuple[Verdict | None, manifests.Manifest | None]] = {}

    async def verdict(self, row: ObjectRow) -> Verdict | None:
        """Why `row`'s source must stay for its group's sake (None: the group verifies)."""
        group = row.group_key
        if group is None:
            return Verdict(False, "NoGroup", "the object belongs to no group (spec.groups.by)")
        if group not in self._groups:
            self._groups[group] = await self._check(group, row.bucket)
        problem, manifest = self._groups[group]
        if problem is not None:
            return problem
        assert manifest is not None
        listed = manifest.members.get((row.bucket, row.key, row.version_id))
        if listed is None or listed[0] != row.target_key:
            return Verdict(
                False,
                "NotInGroupManifest",
                f"the manifest of group {group!r} does not list this object at {row.target_key}",
            )
        return None

    async def _check(
        self, group: str, bucket: str
    ) -> tuple[Verdict | None, manifests.Manifest | None]:
        key = self._context.manifest_key(group, bucket)
        document = await read_document(self._target, self._context.spec.target.bucket, key)
        if document is None:
            return Verdict(
                False, "GroupManifestMissing", f"no manifest of group {group!r} at {key}"
            ), None
        try:
            manifest = manifests.parse(document)
        except ValueError as error:
            return Verdict(False, "GroupManifestInvalid", f"{key}: {error}"), None
        for content, size in sorted(set(manifest.members.values())):
            head = await self._head(content)
            if head is None:
                return Verdict(
                    False, "GroupContentMissing", f"content {content} of group {group!r} is gone"
                ), None
            sha = head.whole_checksums().get("SHA256")
            named = self._context.spec.content_addressed and content.rsplit("/", 1)[-1]
            if head.size != size or (named and sha is not None and sha != f"sha256:{named}"):
                return Verdict(
                    False,
                    "GroupContentChanged",
                    f"content {content} of group {group!r} no longer matches its manifest",
                ), None
        return None, manifest

    async def _head(self, key: str) -> HeadResult | None:
        try:
            return await self._target.http.head(
                self._context.spec.target.bucket,
                key,
                sse_c=self._context.target_customer_key,
                checksums=True,
            )
        except Exception as exc:
            if classify(exc).kind == "not_found":
                return None
            raise
