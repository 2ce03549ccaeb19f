"""Archived objects: when they need a restore, asking for one, and reading its progress.

GLACIER (Flexible Retrieval) and DEEP_ARCHIVE objects cannot be read until a RestoreObject
request has made a temporary copy available; S3 reports the progress in the `x-amz-restore`
header of HEAD (`ongoing-request="true"`, then `ongoing-request="false", expiry-date=...`).
GLACIER_IR (Instant Retrieval) is readable like STANDARD. INTELLIGENT_TIERING objects need a
restore only once they have moved to an opt-in archive tier (`x-amz-archive-status`).
"""

from __future__ import annotations

import re
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Literal

from objmig.storage.errors import RestoreNotAllowedError
from objmig.storage.types import RestoreStatus

# The aiobotocore stubs are a development dependency: import them for type checking only.
if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

RestoreTier = Literal["Bulk", "Standard", "Expedited"]

ARCHIVE_STORAGE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
# Intelligent-Tiering's opt-in archive tiers, reported by `x-amz-archive-status`.
ARCHIVE_STATUSES = frozenset({"ARCHIVE_ACCESS", "DEEP_ARCHIVE_ACCESS"})


_ONGOING_RE = re.compile(r'ongoing-request\s*=\s*"?(true|false)"?', re.IGNORECASE)
_EXPIRY_RE = re.compile(r'expiry-date\s*=\s*"([^"]+)"', re.IGNORECASE)


def parse_restore_header(value: str | None) -> RestoreStatus | None:
    """Parse `x-amz-restore`; None when the header is absent, empty or unintelligible."""
    if not value:
        return None
    ongoing = _ONGOING_RE.search(value)
    if ongoing is None:
        return None
    expiry: datetime | None = None
    match = _EXPIRY_RE.search(value)
    if match:
        try:
            expiry = parsedate_to_datetime(match.group(1))
        except (TypeError, ValueError):
            expiry = None
    return RestoreStatus(ongoing=ongoing.group(1).lower() == "true", expiry=expiry)


def needs_restore(
    storage_class: str | None,
    restore: RestoreStatus | None,
    archive_status: str | None = None,
) -> bool:
    """True when the object cannot be read until a restore completes.

    An ongoing restore still needs waiting, so it counts as "needs restore"; the engine
    tells "must request" from "must wait" with `restore_requested`.
    """
    archived = (storage_class or "STANDARD") in ARCHIVE_STORAGE_CLASSES or (
        archive_status in ARCHIVE_STATUSES
    )
    if not archived:
        return False
    return restore is None or restore.ongoing


def restore_requested(restore: RestoreStatus | None) -> bool:
    """True when a restore was already asked for (ongoing or finished)."""
    return restore is not None


def validate_restore(storage_class: str | None, tier: RestoreTier, days: int) -> None:
    """Refuse restore requests S3 would refuse, with a message that says why."""
    if tier == "Expedited" and (storage_class == "DEEP_ARCHIVE"):
        raise RestoreNotAllowedError(
            "Expedited retrieval is not available for DEEP_ARCHIVE objects; "
            "use tier Standard or Bulk"
        )
    if days < 1:
        raise RestoreNotAllowedError(f"restore days must be at least 1, got {days}")


async def request_restore(
    client: S3Client,
    bucket: str,
    key: str,
    version_id: str | None,
    tier: RestoreTier,
    days: int,
    *,
    storage_class: str | None = None,
    archive_status: str | None = None,
) -> bool:
    """Ask S3 to restore an archived object for `days` days at `tier`.

    Returns True when a new restore started, False when one was already in progress or
    done (S3 answers RestoreAlreadyInProgress or 200 instead of 202): both are success,
    so calling this again after a crash is harmless.

    `storage_class` (from the scan or a HEAD) lets us refuse Expedited + DEEP_ARCHIVE
    before calling S3. Intelligent-Tiering archive tiers take no `Days` or `Tier` beyond
    what S3 allows, so for them only the tier is sent.
    """
    validate_restore(storage_class, tier, days)
    request: dict[str, object]
    if archive_status in ARCHIVE_STATUSES:
        # Objects in Intelligent-Tiering archive tiers are moved back to the frequent
        # access tier; S3 rejects `Days` for them.
        request = {"GlacierJobParameters": {"Tier": tier}}
    else:
        request = {"Days": days, "GlacierJobParameters": {"Tier": tier}}
    kwargs: dict[str, object] = {"Bucket": bucket, "Key": key, "RestoreRequest": request}
    if version_id:
        kwargs["VersionId"] = version_id
    try:
        response = await client.restore_object(**kwargs)  # type: ignore[arg-type]
    except client.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "RestoreAlreadyInProgress":
            return False
        raise
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 202))
    # 202 Accepted: a new restore; 200 OK: the object was already restored (S3 then only
    # extends the expiry).
    return status == 202
