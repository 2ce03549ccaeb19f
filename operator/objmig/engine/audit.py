"""The audit before cutover: the target as a whole against the ledger.

Every object is proven one by one (`pipeline.verify`); what only the whole can show is
checked here, once every object is done:

- **a target directory** holds a file for every verified object (a copy deleted since is
  *missing*: its rows go back to the pool and are copied again), and nothing else but
  what `target.filesystem.ignore` allows (*extra* files hold the cutover back: a directory
  that is to replace a bucket must be that bucket); temporaries of writers that died are
  removed;
- **group manifests** (`spec.groups`): each complete group's manifest is written and read
  back byte for byte; a group with a member not verified gets none and holds the cutover
  back (*incomplete*).

Both drivers run it as a stage (`objmig.engine.lifecycle`): the operator as a Job whose
pod mounts the directory, `objmig run` in process. What it found is recorded in the
migration's state, where the cutover gate reads it.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime

from objmig.engine import manifests
from objmig.engine.context import MigrationContext, Side
from objmig.ledger import AuditRecord, Ledger
from objmig.storage.errors import classify
from objmig.storage.filesystem import FileStore
from objmig.storage.selection import compile_glob

log = logging.getLogger(__name__)

#: Extra files (and incomplete groups) named in the state and the status.
EXAMPLES = 10
#: Missing copies sent back to the pool per statement.
_REQUEUE_BATCH = 1000


async def run_audit(
    ledger: Ledger, migration_id: int, context: MigrationContext, *, round_: int, wave: int
) -> AuditRecord:
    """Audit the target; record and return what was found."""
    record = AuditRecord(round=round_, wave=wave)
    async with context.clients() as (_, target):
        written: list[str] = []
        if context.spec.groups is not None:
            record, written = await _write_manifests(ledger, migration_id, context, target, record)
        if isinstance(target, FileStore):
            record = await _audit_tree(ledger, migration_id, context, target, record, written)
    record = record.model_copy(update={"completed_at": datetime.now(UTC)})
    await ledger.update_state(migration_id, audit=record)
    log.info(
        "audit: %d files, %d missing, %d extra, %d of %d group manifests written",
        record.files,
        record.missing,
        record.extra,
        record.manifests_written,
        record.groups,
    )
    return record


async def _write_manifests(
    ledger: Ledger,
    migration_id: int,
    context: MigrationContext,
    target: Side,
    record: AuditRecord,
) -> tuple[AuditRecord, list[str]]:
    """Write (and read back) the manifest of every complete group; count the others."""
    groups = written = incomplete = 0
    examples: list[str] = []
    keys: list[str] = []
    bucket = context.spec.target.bucket
    async for group, rows in ledger.iter_groups(migration_id):
        verdict = manifests.judge(rows)
        if not verdict.members:
            continue  # every object of it was left alone on purpose
        groups += 1
        if not verdict.complete:
            incomplete += 1
            if len(examples) < EXAMPLES:
                examples.append(group)
            continue
        buckets = {row.bucket for row in verdict.members}
        key = context.manifest_key(group, buckets.pop() if len(buckets) == 1 else "")
        document = manifests.build(group, verdict.members, context.spec.source.prefix)
        if await read_document(target, bucket, key) == document:
            written += 1  # there already, as it would be written (a run again)
            keys.append(key)
            continue
        if isinstance(target, FileStore):
            await target.put(
                key, document, content_type="application/json", migration_tag=context.name
            )
        else:
            await target.http.put(
                bucket,
                key,
                document,
                len(document),
                {"content-type": "application/json", "x-amz-meta-objmig-migration": context.name},
            )
        if await read_document(target, bucket, key) != document:
            raise ManifestMismatch(
                f"group {group!r}: {key} read back differs from what was written"
            )
        written += 1
        keys.append(key)
    update = {
        "groups": groups,
        "manifests_written": written,
        "incomplete_groups": incomplete,
        "incomplete_examples": tuple(examples),
    }
    return record.model_copy(update=update), sorted(keys)


class ManifestMismatch(Exception):
    """A manifest read back is not the one written: the audit fails, and is run again."""


async def read_document(target: Side, bucket: str, key: str) -> bytes | None:
    """The bytes of a (small) object or file, None when there is none."""
    try:
        async with target.http.get(bucket, key) as got:
            parts = []
            while chunk := await got.body.read(1024 * 1024):
                parts.append(chunk)
    except Exception as exc:
        if classify(exc).kind == "not_found":
            return None
        raise
    return b"".join(parts)


async def _audit_tree(
    ledger: Ledger,
    migration_id: int,
    context: MigrationContext,
    target: FileStore,
    record: AuditRecord,
    manifest_keys: list[str],
) -> AuditRecord:
    """Files against target keys, both in byte order, merged in one pass."""
    removed = await target.sweep()
    directory = context.spec.target.filesystem
    ignored = [compile_glob(p) for p in directory.ignore] if directory is not None else []
    prefix = "" if context.target_path_template else context.spec.target.prefix
    expected = _merge(_stream(ledger.target_keys(migration_id)), _aiter(manifest_keys))
    files = target.keys(prefix)
    missing: list[str] = []
    extra: list[str] = []
    extras = file_count = 0
    want = await anext(expected, None)
    async for page in files:
        for key in page:
            file_count += 1
            while want is not None and want < key:
                missing.append(want)
                want = await anext(expected, None)
            if want == key:
                want = await anext(expected, None)
                continue
            if any(glob.fullmatch(key) for glob in ignored):
                continue
            extras += 1
            if len(extra) < EXAMPLES:
                extra.append(key)
        if len(missing) >= _REQUEUE_BATCH:
            await ledger.requeue_targets(migration_id, missing)
            record = record.model_copy(update={"missing": record.missing + len(missing)})
            missing = []
    while want is not None:
        missing.append(want)
        want = await anext(expected, None)
    if missing:
        await ledger.requeue_targets(migration_id, missing)
        log.warning(
            "audit: %d copies are missing from %s; copying them again", len(missing), target.root
        )
    return record.model_copy(
        update={
            "files": file_count,
            "missing": record.missing + len(missing),
            "extra": extras,
            "extra_examples": tuple(extra),
            "temporaries_removed": removed,
        }
    )


async def _stream(keys: AsyncIterator[str]) -> AsyncIterator[str]:
    async for key in keys:
        yield key


async def _aiter(items: Iterable[str]) -> AsyncIterator[str]:
    for item in items:
        yield item


async def _merge(*streams: AsyncIterator[str]) -> AsyncIterator[str]:
    """Sorted key streams merged into one sorted stream, without duplicates."""
    heads: list[tuple[str, int]] = []
    for index, stream in enumerate(streams):
        first = await anext(stream, None)
        if first is not None:
            heapq.heappush(heads, (first, index))
    last: str | None = None
    while heads:
        key, index = heapq.heappop(heads)
        if key != last:
            yield key
            last = key
        following = await anext(streams[index], None)
        if following is not None:
            heapq.heappush(heads, (following, index))
