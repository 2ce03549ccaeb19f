"""The deletion gate: may this source object be deleted, right now? Pure and total.

Deleting the source is the one irreversible step of a migration, so the answer is "delete"
only when every condition holds at the moment of deletion, and otherwise "skip" with the
first reason that failed. The same function answers for the migration as a whole (the
gates a MigrationCleanup reports before it starts) and for each object (re-checked by the
deletion worker right before each DeleteObjects call).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from objmig.api.migration_cleanup import MigrationCleanupSpec
from objmig.api.types import format_duration, parse_duration
from objmig.ledger.models import ObjectRow, ObjectState
from objmig.storage.compare import Seen, changes, same_answers
from objmig.storage.types import MIGRATION_METADATA_KEY, HeadResult


@dataclass(frozen=True)
class MigrationFacts:
    """What the gate needs to know about the migration being cleaned up."""

    cut_over_at: datetime | None
    rolled_back: bool
    digest: str | None
    #: Source and target are one bucket: a key copied onto itself is its own target.
    same_bucket: bool = False
    #: The migration's ledger name, which its copies carry (`objmig-migration`).
    name: str = ""
    #: The bucket a cleanup of one bucket is about ("": the whole migration); `digest`
    #: is then that bucket's.
    bucket: str = ""
    #: Whether source and target could be one store under two names (two endpoints); not
    #: when either is a directory.
    aliases_possible: bool = True


@dataclass(frozen=True)
class Verdict:
    """Delete, or skip with a CamelCase reason and a message a person can act on."""

    delete: bool
    reason: str
    message: str

    @property
    def gate(self) -> str:
        """The name of the gate that decided (for ``status.unmetGates``)."""
        return _GATE_OF_REASON.get(self.reason, self.reason)


_GATE_OF_REASON = {
    "NotCutOver": "CutOver",
    "RolledBack": "CutOver",
    "ApprovalMissing": "Approval",
    "ApprovalDigestMismatch": "Approval",
    "GracePeriodNotElapsed": "GracePeriod",
}


def unmet_gates(spec: MigrationCleanupSpec, facts: MigrationFacts, now: datetime) -> list[Verdict]:
    """Every migration-level gate that does not hold, each with its reason (empty: all hold)."""
    unmet: list[Verdict] = []
    if facts.cut_over_at is None:
        unmet.append(Verdict(False, "NotCutOver", "the migration has not cut over"))
    elif facts.rolled_back:
        unmet.append(Verdict(False, "RolledBack", "the migration's cutover was rolled back"))
    if spec.approval is None:
        unmet.append(
            Verdict(
                False,
                "ApprovalMissing",
                "spec.approval.digest is not set; `objmig approve MIGRATION` prints the digest",
            )
        )
    elif facts.digest is None or spec.approval.digest != facts.digest:
        whose = f"bucket {facts.bucket}'s" if facts.bucket else "the migration's"
        unmet.append(
            Verdict(
                False,
                "ApprovalDigestMismatch",
                f"spec.approval.digest {spec.approval.digest} does not match {whose} "
                f"verification digest {facts.digest or '(none yet)'}; review what was "
                "verified again and quote the current digest",
            )
        )
    if facts.cut_over_at is not None:
        grace = parse_duration(spec.grace_period)
        elapsed = now - facts.cut_over_at
        if elapsed < grace:
            unmet.append(
                Verdict(
                    False,
                    "GracePeriodNotElapsed",
                    f"{format_duration(grace - elapsed)} of gracePeriod {spec.grace_period} "
                    f"left (cut over at {facts.cut_over_at.isoformat()}; deletions start at "
                    f"{(facts.cut_over_at + grace).isoformat()})",
                )
            )
    return unmet


def migration_verdict(spec: MigrationCleanupSpec, facts: MigrationFacts, now: datetime) -> Verdict:
    """The first migration-level gate that does not hold, or a pass."""
    unmet = unmet_gates(spec, facts, now)
    if unmet:
        return unmet[0]
    return Verdict(True, "GatesPassed", "every migration-level gate holds")


def object_verdict(
    spec: MigrationCleanupSpec,
    facts: MigrationFacts,
    row: ObjectRow,
    source: HeadResult | None,
    target: HeadResult | None,
    now: datetime,
) -> Verdict:
    """Whether the source object of ``row`` may be deleted now.

    ``source`` and ``target`` are fresh HEADs (None: the object is not there). Delete only
    if: the migration gates hold; the row is verified (and cut over); ``minAge`` has passed
    since its verification; the source is unchanged since verification (ETag, size,
    version id, last-modified); the target copy exists and matches the verified ETag;
    and the source is not the copy itself (a key copied onto itself, unless a versioned
    bucket kept the original as an older version: that version may go).
    """
    overall = migration_verdict(spec, facts, now)
    if not overall.delete:
        return overall
    if (
        facts.same_bucket
        and row.target_key == row.key
        and (not row.version_id or row.version_id == row.target_version_id)
    ):
        return Verdict(
            False,
            "InPlace",
            "the copy replaced this object in place: it is source and target at once, so "
            "there is no separate source to delete",
        )
    if row.state is not ObjectState.VERIFIED or row.verified_at is None:
        return Verdict(False, "NotVerified", f"ledger state is {row.state.value}, not verified")
    if row.cut_over_at is None:
        return Verdict(False, "NotCutOver", "the object was not part of the cutover")
    min_age = parse_duration(spec.min_age)
    if now - row.verified_at < min_age:
        return Verdict(
            False,
            "MinAgeNotElapsed",
            f"verified {format_duration(now - row.verified_at)} ago; minAge is {spec.min_age}",
        )
    if source is None:
        return Verdict(False, "SourceMissing", "the source object is already gone")
    recorded = Seen(
        row.etag,
        row.size,
        row.version_id,
        int(row.last_modified.timestamp()) if row.last_modified is not None else None,
    )
    current = Seen(
        source.etag, source.size, source.version_id, int(source.last_modified.timestamp())
    )
    changed = changes(recorded, current, version_must_match=True)
    if changed:
        return Verdict(
            False,
            "SourceChangedSinceVerify",
            "source changed since verification: " + ", ".join(changed),
        )
    if target is None:
        return Verdict(False, "TargetMissing", f"the target copy {row.target_key} is gone")
    if row.target_etag is None or target.etag != row.target_etag or target.size != row.size:
        return Verdict(
            False,
            "TargetChangedSinceVerify",
            f"the target copy {row.target_key} no longer matches what was verified",
        )
    if facts.aliases_possible and _may_be_one_object(source, target, facts.name):
        return Verdict(
            False,
            "SourceIsTarget",
            "the source answers as the target copy itself (it carries this migration's "
            "mark, or ETag, size, version and last-modified are the same): they may be one "
            "object reached by two endpoint names",
        )
    return Verdict(True, "Delete", "every gate holds")


def _may_be_one_object(source: HeadResult, target: HeadResult, migration: str) -> bool:
    """Whether two HEADs may have answered for one object.

    The spec cannot tell every alias of an endpoint (two DNS names of one store), so the
    answers decide: a source carrying this migration's mark is one of its copies; a target
    carrying it and a source without it are two objects; otherwise identical answers may
    be one object (a pre-existing identical target written in the same second is spared
    too, which costs nothing but a later cleanup).
    """

    def ours(head: HeadResult) -> bool:
        return bool(migration) and head.metadata.get(MIGRATION_METADATA_KEY) == migration

    if ours(source):
        return True
    if ours(target):
        return False
    return same_answers(source, target)
