"""What a copy keeps of its source besides bytes, metadata and tags: Object Lock retention
and legal hold (`copy.preserveObjectLock`), and ACL grants on request
(`copy.preserveAcl`).

They are given to the copy once it is verified, never before: a retention on a copy that
then fails its verification could not be replaced (COMPLIANCE holds even its owner). What
the target cannot keep (a bucket without Object Lock, a store without ACLs, a grantee it
does not know) ends the object verified all the same, with a note in its row
(`not_preserved`, in the report); a transient failure is retried with the attempt.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from objmig.engine.pipeline.sides import Sides
from objmig.ledger.models import ObjectRow
from objmig.storage.errors import classify
from objmig.storage.filesystem import FileStore
from objmig.storage.types import HeadResult

#: S3's permissions on an object, and the PutObjectAcl parameter granting each.
_GRANT_PARAMETERS = {
    "FULL_CONTROL": "GrantFullControl",
    "READ": "GrantRead",
    "READ_ACP": "GrantReadACP",
    "WRITE_ACP": "GrantWriteACP",
}


class Fidelity:
    """Gives verified copies of one migration their source's lock and ACL."""

    def __init__(self, sides: Sides) -> None:
        self._sides = sides
        self._lock_support: asyncio.Task[str | None] | None = None

    async def keep(self, row: ObjectRow, source: HeadResult, target_version_id: str | None) -> None:
        """Give the verified copy of `row` what it should keep; note what it cannot."""
        sides = self._sides
        copy = sides.spec.copy_
        notes = sides.not_kept.setdefault(row.id, [])
        if copy.preserve_object_lock and (source.lock_mode or source.legal_hold):
            notes.extend(await self._keep_lock(row, source, target_version_id))
        if copy.preserve_acl:
            note = await self._keep_acl(row, target_version_id)
            if note is not None:
                notes.append(note)

    async def _keep_lock(
        self, row: ObjectRow, source: HeadResult, version_id: str | None
    ) -> list[str]:
        sides = self._sides
        mode, until = source.lock_mode, source.lock_retain_until
        # A retention that has run out holds nothing any more: nothing to keep.
        retained = bool(mode) and until is not None and until > datetime.now(UTC)
        retention = f"object lock retention ({mode} until {until.isoformat()})" if until else ""
        what = [retention] * retained + ["legal hold"] * source.legal_hold
        if not what:
            return []
        if isinstance(sides.dst, FileStore):
            return [f"{kept}: the target is a directory" for kept in what]
        if self._lock_support is None:
            self._lock_support = asyncio.ensure_future(self._why_no_lock())
        why_not = await asyncio.shield(self._lock_support)
        if why_not is not None:
            return [f"{kept}: {why_not}" for kept in what]
        client = await sides.dst.sdk()
        where: dict[str, Any] = {"Bucket": sides.spec.target.bucket, "Key": sides.target_key(row)}
        if version_id:
            where["VersionId"] = version_id
        notes: list[str] = []
        if retained:
            request: dict[str, Any] = {
                **where,
                "Retention": {"Mode": mode, "RetainUntilDate": until},
            }
            note = await _refused(client.put_object_retention(**request))
            if note is not None:
                notes.append(f"{retention}: {note}")
        if source.legal_hold:
            note = await _refused(client.put_object_legal_hold(**where, LegalHold={"Status": "ON"}))
            if note is not None:
                notes.append(f"legal hold: {note}")
        return notes

    async def _why_no_lock(self) -> str | None:
        """Why the target bucket cannot keep Object Lock settings; None when it can."""
        sides = self._sides
        client = await sides.dst.sdk()
        try:
            answer = await client.get_object_lock_configuration(Bucket=sides.spec.target.bucket)
        except Exception as exc:
            problem = classify(exc)
            if problem.retryable or problem.is_config_error:
                raise
            if problem.code == "ObjectLockConfigurationNotFoundError":
                return "the target bucket has no Object Lock"
            return f"the target bucket's Object Lock is unknown ({problem.message})"
        enabled = answer.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
        return None if enabled == "Enabled" else "the target bucket has no Object Lock"

    async def _keep_acl(self, row: ObjectRow, version_id: str | None) -> str | None:
        """Grant on the copy what the source grants beyond its owner's full control."""
        sides = self._sides
        if isinstance(sides.src, FileStore) or isinstance(sides.dst, FileStore):
            return "ACL: a directory has none"
        source: dict[str, Any] = {"Bucket": sides.source_bucket(row), "Key": row.key}
        if row.version_id:
            source["VersionId"] = row.version_id
        try:
            source_acl = await (await sides.src.sdk()).get_object_acl(**source)
        except Exception as exc:
            problem = classify(exc)
            if problem.retryable or problem.is_config_error:
                raise
            return f"ACL: the source's could not be read ({problem.message})"
        owner = source_acl.get("Owner", {}).get("ID")
        grants = [
            grant
            for grant in source_acl.get("Grants", [])
            if not (
                grant.get("Permission") == "FULL_CONTROL"
                and grant.get("Grantee", {}).get("ID") == owner
            )
        ]
        if not grants:
            return None  # nothing beyond the owner's own
        target_client = await sides.dst.sdk()
        target: dict[str, Any] = {"Bucket": sides.spec.target.bucket, "Key": sides.target_key(row)}
        if version_id:
            target["VersionId"] = version_id
        try:
            target_owner = (await target_client.get_object_acl(**target)).get("Owner", {})
        except Exception as exc:
            problem = classify(exc)
            if problem.retryable or problem.is_config_error:
                raise
            return f"ACL: {problem.message}"
        parameters: dict[str, list[str]] = {}
        if target_owner.get("ID"):
            # Grant headers replace the whole ACL: the copy's owner keeps its full control.
            parameters["GrantFullControl"] = [f'id="{target_owner["ID"]}"']
        skipped = []
        for grant in grants:
            name = _GRANT_PARAMETERS.get(grant.get("Permission", ""))
            grantee = _grantee(grant.get("Grantee", {}))
            if name is None or grantee is None:
                skipped.append(grant.get("Permission", "?"))
                continue
            parameters.setdefault(name, []).append(grantee)
        request: dict[str, Any] = {
            **target,
            **{name: ", ".join(values) for name, values in parameters.items()},
        }
        note = await _refused(target_client.put_object_acl(**request))
        if note is not None:
            return f"ACL: {note}"
        if skipped:
            return f"ACL: grants of {', '.join(sorted(set(skipped)))} left out"
        return None


def _grantee(grantee: Mapping[str, Any]) -> str | None:
    """A grantee as PutObjectAcl's grant headers name it."""
    kind = grantee.get("Type")
    if kind == "CanonicalUser" and grantee.get("ID"):
        return f'id="{grantee["ID"]}"'
    if kind == "Group" and grantee.get("URI"):
        return f'uri="{grantee["URI"]}"'
    if kind == "AmazonCustomerByEmail" and grantee.get("EmailAddress"):
        return f'emailAddress="{grantee["EmailAddress"]}"'
    return None


async def _refused(call: Any) -> str | None:
    """Await an SDK call; the store's refusal in words (None: done). Transient failures
    and configuration errors are raised: the attempt is retried, or the run stops."""
    try:
        await call
    except Exception as exc:
        problem = classify(exc)
        if problem.retryable or problem.is_config_error:
            raise
        return problem.message
    return None
