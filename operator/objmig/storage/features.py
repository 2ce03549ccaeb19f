"""What a store supports, as learned this run, and what objmig does instead where it does not.

S3-compatible stores implement different parts of S3. An aspect a store lacks must cost that
aspect, not the migration: objmig asks once per run (`probe_tags`: GetObjectTagging of a
key that does not exist answers 404 where tags exist and NotImplemented where they do not),
or learns it from the first answer that says so (a HEAD with `partNumber` that gives no
part size, a CopyObject refusing a conditional header), and from then on takes the other
way for every object, with a warning in the log and a `Finding` the engine records for the
migration's `Degraded` condition and report.

One `StoreFeatures` per store and run, shared by every client of that store (`s3http`
consults it before each optional request). The knowledge only ever narrows: nothing here
turns an aspect back on during a run.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from objmig.storage.errors import S3ResponseError

if TYPE_CHECKING:
    from objmig.storage.s3http import S3HttpClient

log = logging.getLogger(__name__)


class Aspect(StrEnum):
    """A part of S3 some stores lack, which objmig can do without."""

    #: Object tags: GetObjectTagging, `x-amz-tagging`, `x-amz-tagging-directive`.
    TAGS = "tags"
    #: Part sizes of multipart objects: HEAD `?partNumber=n` or GetObjectAttributes.
    PART_SIZES = "partSizes"
    #: Additional checksums (`x-amz-checksum-*`) kept with objects and shown on HEAD.
    CHECKSUMS = "checksums"
    #: `x-amz-copy-source-if-match` on CopyObject and UploadPartCopy.
    COPY_CONDITIONALS = "copySourceConditionals"
    #: CopyObject of a directory marker (a zero-byte key ending in "/").
    MARKER_COPIES = "directoryMarkerCopies"


#: What objmig does without each aspect (the second half of a finding's message).
CONSEQUENCES = {
    Aspect.TAGS: "no tagging request or header is sent to it; objects with tags fail "
    "(TagsNotSupported) unless copy.preserveTags is false",
    Aspect.PART_SIZES: "multipart objects are cut into equal parts, so their ETags may "
    "differ and are proven by SHA-256 instead (verifiedBy sha256 in the report)",
    Aspect.CHECKSUMS: "checksum verification reads the objects it cannot ask the store about",
    Aspect.COPY_CONDITIONALS: "server-side copies are made without the source condition; "
    "the source is checked before and after instead",
    Aspect.MARKER_COPIES: "directory markers are written by PutObject with their metadata, "
    "content headers and tags (they have no bytes to copy)",
}


@dataclass(frozen=True)
class Finding:
    """One aspect one store lacks: what it answered, and what objmig does instead."""

    store: str
    aspect: Aspect
    answer: str

    @property
    def message(self) -> str:
        return f"{self.store}: no {self.aspect} ({self.answer}): {CONSEQUENCES[self.aspect]}"


class StoreFeatures:
    """What one store lacks, learned this run. `store` names it in messages
    (e.g. "target http://minio:9000")."""

    def __init__(self, store: str) -> None:
        self.store = store
        self._missing: dict[Aspect, Finding] = {}
        self._unreported: list[Finding] = []

    def lacks(self, aspect: Aspect) -> bool:
        return aspect in self._missing

    def learn_missing(self, aspect: Aspect, answer: str) -> None:
        """The store does not support `aspect` (it answered `answer`); said once."""
        if aspect in self._missing:
            return
        finding = Finding(self.store, aspect, answer)
        self._missing[aspect] = finding
        self._unreported.append(finding)
        log.warning("%s", finding.message)

    @property
    def findings(self) -> list[Finding]:
        return list(self._missing.values())

    def unreported(self) -> list[Finding]:
        """Findings not yet recorded (see `reported`), oldest first."""
        return list(self._unreported)

    def reported(self, findings: list[Finding]) -> None:
        """`findings` are recorded: `unreported` leaves them out from now on."""
        self._unreported = [f for f in self._unreported if f not in findings]


def unsupported(exc: S3ResponseError) -> bool:
    """A store's way of saying "I do not implement this" (not a transient error)."""
    return exc.status in (405, 501) or exc.code in ("NotImplemented", "NotSupported")


async def probe_tags(client: S3HttpClient, bucket: str, prefix: str) -> None:
    """Ask once whether the store has object tags: GetObjectTagging of a key that does not
    exist. A 404 means it has (the request was understood); NotImplemented that it has
    not. Anything else proves nothing either way and is left to the copies."""
    key = f"{prefix}.objmig-probe-{uuid.uuid4().hex}"
    try:
        await client.get_tags(bucket, key)
    except S3ResponseError as exc:
        if unsupported(exc):
            client.features.learn_missing(Aspect.TAGS, f"GetObjectTagging: {exc.code}")
