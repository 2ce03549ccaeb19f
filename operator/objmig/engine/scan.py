"""Inventory: list (or read the manifest of) the source, filter, and record it in the ledger.

A scan is idempotent: re-running it inserts what is new, sends changed objects back to
``pending`` and leaves the rest alone, so the same code serves the first inventory, a resume
after a crash, and the catch-up rounds before cutover.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from objmig.api.base import SecretKeySelector
from objmig.api.migration import ObjectMigrationSpec
from objmig.api.migration.templates import uses
from objmig.engine.appdb import batches, stream_worklist
from objmig.engine.context import MigrationContext, Side
from objmig.engine.secrets import ConfigMapNotFound
from objmig.ledger import (
    ConfigMapWorklist,
    InventoryResult,
    InventoryRow,
    Ledger,
    MigrationState,
    ScanRecord,
)
from objmig.storage.bucket import list_objects
from objmig.storage.errors import classify, describe
from objmig.storage.fanout import list_fanned_out
from objmig.storage.manifest import (
    ManifestEntry,
    ManifestFormat,
    parse_csv,
    parse_lines,
    read_manifest_file,
    read_manifest_object,
)
from objmig.storage.reader import ObjectReader
from objmig.storage.s3http import S3HttpClient
from objmig.storage.types import ObjectInfo

log = logging.getLogger(__name__)

_MANIFEST_FORMATS: dict[str, ManifestFormat] = {
    "lines": "lines",
    "csv": "csv",
    "s3-inventory": "inventory",
}
# Manifest entries without sizes are HEADed this many at a time.
_HEAD_CONCURRENCY = 32


def manifest_config_map(spec: ObjectMigrationSpec) -> SecretKeySelector | None:
    """The ConfigMap key holding the spec's worklist, if it names one."""
    manifest = spec.selection.manifest
    return manifest.config_map_ref if manifest is not None else None


def config_map_worklist(
    ref: SecretKeySelector, data: Mapping[str, str] | None, where: str
) -> ConfigMapWorklist:
    """The ConfigMap's worklist, to hand to the scan through the ledger.

    The driver stores it before each scan (the operator from the cluster, ``objmig run``
    from its --config-maps file), because the scan runs where there is no Kubernetes API:
    in a pod with the ledger and S3 only.

    ``data`` is the ConfigMap's data (None: no such ConfigMap); ``where`` finishes the
    error message, saying where this driver looked.
    """
    if data is None or ref.key not in data:
        raise ConfigMapNotFound(
            f"ConfigMap {ref.name!r} with key {ref.key!r} "
            f"(spec.selection.manifest.configMapRef) not found {where}"
        )
    return ConfigMapWorklist(name=ref.name, key=ref.key, text=data[ref.key])


def keeps_keys_apart(spec: ObjectMigrationSpec) -> bool:
    """Whether the target keys of distinct source objects are distinct: the key template
    keeps the whole key, or the whole of it relative to the source prefix (and, for several
    buckets, the bucket); a content-addressed layout maps identical content to one key on
    purpose."""
    template = spec.target.key_template
    if spec.content_addressed:
        return True
    keeps_key = uses(template, "key") or uses(template, "relative")
    if spec.source.buckets is None:
        return keeps_key
    path = spec.target.filesystem.path if spec.target.filesystem is not None else ""
    return keeps_key and (uses(template, "bucket") or "{bucket}" in path)


class ScanFailed(Exception):
    """A scan that could not finish (the store, the network, TLS, a worklist), in words
    for the Failed condition: no traceback, nothing left saying "Scanning"."""


def scan_failure(exc: BaseException, bucket: str, prefix: str) -> ScanFailed:
    """The `ScanFailed` for what stopped a scan of `bucket`/`prefix`."""
    return ScanFailed(f"listing s3://{bucket}/{prefix} failed: {classify(exc).message}")


@dataclass(frozen=True)
class ScanOutcome:
    """What one scan found."""

    scan_id: int
    result: InventoryResult
    finished_at: datetime

    @property
    def delta(self) -> int:
        """Objects that are new or changed since the previous scan."""
        return self.result.new + self.result.changed


async def run_scan(
    ledger: Ledger,
    migration_id: int,
    context: MigrationContext,
    source: Side,
    *,
    scan_id: int | None = None,
    on_rows: Callable[[], None] | None = None,
) -> ScanOutcome:
    """Scan the source once more and record the outcome in the migration's state.

    ``scan_id`` numbers the scan (default: one more than the last); the operator passes its
    own number so a retried scan pod repeats the same scan instead of starting a new one.
    ``on_rows`` is called whenever a batch of rows is in the ledger (for workers copying
    while the scan goes on).
    """
    state = await ledger.get_state(migration_id)
    if scan_id is None:
        scan_id = state.scan.id + 1
    await ledger.update_state(
        migration_id, scan=state.scan.model_copy(update={"id": scan_id, "running": True})
    )
    changes = SelectionChanges()
    rows = _inventory(context, source, state, changes)
    try:
        result = await ledger.upsert_inventory(
            migration_id, rows, scan_id, on_chunk=on_rows, in_place=context.same_bucket
        )
    except BaseException as exc:
        # Not running any more; what stopped it goes into the Failed condition's message.
        why = None if isinstance(exc, asyncio.CancelledError) else describe(exc)
        await ledger.update_state(
            migration_id,
            scan=state.scan.model_copy(update={"id": scan_id, "running": False, "last_error": why}),
        )
        raise
    if not keeps_keys_apart(context.spec):
        collided = await ledger.fail_target_collisions(migration_id)
        if collided:
            log.warning("%d objects share a target key with another source key", collided)
    if changes.count:
        log.warning(
            "%d objects are selected otherwise than before: include/exclude follow rclone's "
            "filter rules now (e.g. %s); see docs/guide.md, 'Selecting objects'",
            changes.count,
            ", ".join(changes.examples),
        )
    finished = datetime.now(UTC)
    await ledger.update_state(
        migration_id,
        scan=ScanRecord(
            id=scan_id,
            running=False,
            completed_at=finished,
            new=result.new,
            changed=result.changed,
            unchanged=result.unchanged,
            selected_differently=changes.count,
            selected_differently_examples=tuple(changes.examples),
        ),
    )
    return ScanOutcome(scan_id, result, finished)


@dataclass
class SelectionChanges:
    """Objects a scan's globs select otherwise than before they followed rclone's rules."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def note(self, key: str, *, selected: bool) -> None:
        self.count += 1
        if len(self.examples) < 5:
            self.examples.append(("+" if selected else "-") + key)


async def _inventory(
    context: MigrationContext, source: Side, state: MigrationState, changes: SelectionChanges
) -> AsyncIterator[InventoryRow]:
    selection = context.selection
    listed: AsyncIterator[FoundIn]
    if context.spec.selection.manifest is not None:
        listed = _in_bucket("", _from_manifest(context, source, state))
    elif context.buckets is not None:
        listed = _from_buckets(context, source)
    else:
        listed = _in_bucket("", _from_listing(context, source, context.spec.source.bucket))
    count = 0
    limit = context.spec.selection.limit
    content_addressed = context.spec.content_addressed
    async for bucket, info, row_id in listed:
        # A manifest's entry missing from the source (no ETag) stays selected as listed.
        selected = not info.etag or selection.matches(info)
        if info.etag and selection.changed(info):
            changes.note(info.key, selected=selected)
        if not selected:
            continue
        yield InventoryRow(
            key=info.key,
            version_id=info.version_id or "",
            size=info.size,
            etag=info.etag,
            # Inventory manifests may not say when an object changed; later steps then
            # compare ETag, size and version only.
            last_modified=None if info.last_modified == _EPOCH else info.last_modified,
            storage_class=info.storage_class or "STANDARD",
            # A content-addressed key is known once the content has been read.
            target_key=None
            if content_addressed
            else context.target_key_for(info.key, info.last_modified, info.etag, bucket=bucket),
            row_id=row_id,
            bucket=bucket,
            group_key=context.group_of(info.key, info.last_modified, info.etag, bucket),
        )
        count += 1
        if limit is not None and count >= limit:
            return


#: An object as a scan found it, and the application's row id a SQL worklist gave with it.
Found = tuple[ObjectInfo, str | None]
#: The same, with the bucket it was found in ("" for a migration of one bucket).
FoundIn = tuple[str, ObjectInfo, str | None]


async def _in_bucket(bucket: str, listed: AsyncIterator[Found]) -> AsyncIterator[FoundIn]:
    async for info, row_id in listed:
        yield bucket, info, row_id


async def list_buckets(source: Side) -> list[str]:
    """Every bucket of the account the source's credentials list, in name order."""
    client = await source.sdk()
    names: list[str] = []
    token: str | None = None
    while True:
        answer = await (
            client.list_buckets(ContinuationToken=token) if token else client.list_buckets()
        )
        names += [bucket["Name"] for bucket in answer.get("Buckets", [])]
        token = answer.get("ContinuationToken")
        if not token:
            return sorted(names)


async def _from_buckets(context: MigrationContext, source: Side) -> AsyncIterator[FoundIn]:
    """Every selected bucket's listing, bucket after bucket (in name order)."""
    assert context.buckets is not None
    chosen = [name for name in await list_buckets(source) if context.buckets.matches(name)]
    log.info("scanning %d buckets: %s", len(chosen), ", ".join(chosen[:20]))
    for bucket in chosen:
        async for info, row_id in _from_listing(context, source, bucket):
            yield bucket, info, row_id


async def _from_listing(
    context: MigrationContext, source: Side, bucket: str
) -> AsyncIterator[Found]:
    spec = context.spec
    versioning = await source.http.bucket_versioning(bucket)
    versioned = versioning in ("Enabled", "Suspended")
    if not versioned and not spec.selection.all_versions:
        # The common case, on the lean client (a page of 1,000 keys costs a tenth of the
        # CPU botocore's modelled parsing spends on it), with a bucket's subtrees under the
        # prefix listed side by side: over a WAN one listing waits a round trip per page.
        # (A directory is listed plainly: its walk has no round trips to overlap.)
        http = source.http
        listing = (
            list_fanned_out(http, bucket, spec.source.prefix)
            if isinstance(http, S3HttpClient)
            else http.list_objects(bucket, spec.source.prefix)
        )
        async for info in listing:
            yield info, None
        return
    async for info in list_objects(
        await source.sdk(),
        bucket,
        spec.source.prefix,
        versions=spec.selection.all_versions,
        # Pin the exact version listed, so every later step (and cleanup) acts on it alone.
        pin_versions=versioned and not spec.selection.all_versions,
    ):
        yield info, None


async def _from_manifest(
    context: MigrationContext, source: Side, state: MigrationState
) -> AsyncIterator[Found]:
    manifest = context.spec.selection.manifest
    assert manifest is not None
    fmt = _MANIFEST_FORMATS[manifest.format]
    entries: AsyncIterator[ManifestEntry]
    row_ids: dict[str, str] = {}
    if manifest.sql is not None:
        assert context.worklist_dsn is not None
        entries = _sql_entries(context.worklist_dsn, manifest.sql.query, row_ids)
    elif manifest.object is not None:
        entries = read_manifest_object(
            await source.sdk(), manifest.object.bucket, manifest.object.key, fmt
        )
    elif manifest.path is not None:
        entries = _aiter(read_manifest_file(Path(manifest.path), fmt))
    else:
        ref = manifest.config_map_ref
        assert ref is not None
        stored = state.manifest_config_map
        if stored is None or (stored.name, stored.key) != (ref.name, ref.key):
            raise ConfigMapNotFound(
                f"ConfigMap {ref.name!r} with key {ref.key!r}: its worklist was not stored "
                "in the ledger before the scan"
            )
        lines = stored.text.splitlines()
        entries = _aiter(parse_csv(lines) if fmt == "csv" else parse_lines(lines))
    async for batch in batches(entries, _HEAD_CONCURRENCY * 4):
        infos = await asyncio.gather(*(_describe(context, source.http, e) for e in batch))
        for entry, info in zip(batch, infos, strict=True):
            row_id = row_ids.pop(entry.key, None)
            if info is not None:
                yield info, row_id


async def _sql_entries(
    dsn: str, query: str, row_ids: dict[str, str]
) -> AsyncIterator[ManifestEntry]:
    """The SQL worklist's keys as manifest entries; each id goes to ``row_ids`` until its
    key is described (a batch's worth at a time)."""
    async for row in stream_worklist(dsn, query):
        if row.row_id is not None:
            row_ids[row.key] = row.row_id
        yield ManifestEntry(key=row.key)


async def _describe(
    context: MigrationContext, client: ObjectReader, entry: ManifestEntry
) -> ObjectInfo | None:
    """Listing facts for a manifest entry; HEAD when the manifest does not carry them.

    A key the manifest names but the source lacks is recorded without facts (an empty
    ETag): the object's first step finds it missing and says so (skipped with reason
    NotFound, or failed with copy.missingObjects Fail), so the status, the report and an
    Event name it instead of the worklist shrinking unnoticed.
    """
    if entry.size is not None and entry.etag is not None:
        return ObjectInfo(
            key=entry.key,
            version_id=entry.version_id,
            size=entry.size,
            etag=entry.etag,
            last_modified=_EPOCH,
            storage_class=entry.storage_class or "STANDARD",
        )
    try:
        head = await client.head(
            context.spec.source.bucket, entry.key, version_id=entry.version_id or None
        )
    except Exception as exc:
        if classify(exc).kind != "not_found":
            raise
        return ObjectInfo(
            key=entry.key, version_id=entry.version_id, size=0, etag="", last_modified=_EPOCH
        )
    return ObjectInfo(
        key=entry.key,
        version_id=entry.version_id,
        size=head.size,
        etag=head.etag,
        last_modified=head.last_modified,
        storage_class=head.storage_class,
    )


async def _aiter(entries: Iterable[ManifestEntry]) -> AsyncIterator[ManifestEntry]:
    for entry in entries:
        yield entry


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
