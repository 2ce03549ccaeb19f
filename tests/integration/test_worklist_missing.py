"""A worklist naming keys the bucket lacks (orphaned records): in every copy mode each such
key is recorded, skipped with reason NotFound (or failed, with copy.missingObjects Fail),
counted as missing in the status and listed by ``objmig report``; nothing else changes."""

from __future__ import annotations

import asyncio
import csv
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from objmig.api.migration import ObjectMigration
from objmig.ledger import Ledger, ObjectState
from objmig.storage.endpoint import Endpoint
from tests.fixtures.s3 import S3Seeder
from tests.integration.engine_support import keys_of, migration, rows_of, run

KEYS = [f"media/{i:02d}.jpg" for i in range(8)]
MISSING = {KEYS[2], KEYS[5]}


async def _seeded(seed: S3Seeder, tmp_path: Path) -> tuple[str, dict[str, str], Path]:
    """A bucket with the worklist's keys but the missing ones, and the worklist file."""
    bucket = await seed.bucket()
    etags = {}
    for index, key in enumerate(KEYS):
        if key not in MISSING:
            etags[key] = (await seed.put_object(bucket, key, 1000 + index)).etag
    worklist = tmp_path / "keys.txt"
    worklist.write_text("\n".join(KEYS) + "\n")
    return bucket, etags, worklist


def from_worklist(
    endpoint: Endpoint, source: str, target: str | None, worklist: Path, **spec: Any
) -> ObjectMigration:
    """A migration of the keys the worklist file names."""
    return migration(
        endpoint, source, target, selection={"manifest": {"path": str(worklist)}}, **spec
    )


async def _report(database_url: str, name: str) -> list[dict[str, str]]:
    """``objmig report NAME --format csv``, one dict per object."""
    command = [sys.executable, "-m", "objmig", "report", name, "--format", "csv"]
    shown = await asyncio.to_thread(
        subprocess.run,
        [*command, "--database-url", database_url],
        capture_output=True,
        text=True,
        check=True,
    )
    return list(csv.DictReader(io.StringIO(shown.stdout)))


@pytest.mark.parametrize("mode", ["stream", "serverSide"])
async def test_a_worklist_key_the_bucket_lacks_is_skipped_not_found_in_a_copy(
    ledger: Ledger,
    database_url: str,
    s3_seed: S3Seeder,
    s3_endpoint: Endpoint,
    tmp_path: Path,
    mode: str,
) -> None:
    source, etags, worklist = await _seeded(s3_seed, tmp_path)
    target = await s3_seed.bucket()
    resource = from_worklist(
        s3_endpoint,
        source,
        target,
        worklist,
        copy={"mode": mode},
    )

    result = await run(ledger, resource, s3_endpoint)

    assert result.outcome == "cut-over", result.status.conditions
    rows = await rows_of(ledger)
    assert set(rows) == set(KEYS)
    assert {k: r.skip_reason for k, r in rows.items() if k in MISSING} == dict.fromkeys(
        MISSING, "NotFound"
    )
    assert {k for k, r in rows.items() if r.state is ObjectState.VERIFIED} == set(etags)
    assert await keys_of(s3_seed.client, target) == etags
    steps = result.status.steps
    assert steps is not None
    assert steps.missing == len(MISSING)
    objects = result.status.progress.objects
    assert (objects.total, objects.succeeded, objects.skipped, objects.failed) == (8, 6, 2, 0)
    report = await _report(database_url, "test/m")
    assert {r["key"] for r in report if r["skip_reason"] == "NotFound"} == MISSING


async def test_missing_objects_fail_fails_each_missing_key_of_a_copy(
    ledger: Ledger, s3_seed: S3Seeder, s3_endpoint: Endpoint, tmp_path: Path
) -> None:
    source, etags, worklist = await _seeded(s3_seed, tmp_path)
    target = await s3_seed.bucket()
    resource = from_worklist(
        s3_endpoint,
        source,
        target,
        worklist,
        copy={"mode": "stream", "missingObjects": "Fail"},
        failurePolicy={"maxFailedObjects": 10},
    )

    result = await run(ledger, resource, s3_endpoint)

    rows = await rows_of(ledger)
    failed = {
        k: (r.error_code, r.attempts) for k, r in rows.items() if r.state is ObjectState.FAILED
    }
    # Failed at the first look: a missing key is not retried.
    assert failed == dict.fromkeys(MISSING, ("NotFound", 1))
    assert await keys_of(s3_seed.client, target) == etags
    assert result.status.progress.objects.failed == len(MISSING)
    steps = result.status.steps
    assert steps is not None
    assert steps.missing == len(MISSING)


async def test_a_look_only_run_without_a_target_looks_at_the_source(
    ledger: Ledger, s3_seed: S3Seeder, s3_endpoint: Endpoint, tmp_path: Path
) -> None:
    source, etags, worklist = await _seeded(s3_seed, tmp_path)
    resource = from_worklist(
        s3_endpoint,
        source,
        None,
        worklist,
        copy={"mode": "none"},
    )
    assert resource.spec.target.bucket == source

    result = await run(ledger, resource, s3_endpoint)

    assert result.outcome == "cut-over", result.status.conditions
    rows = await rows_of(ledger)
    assert {k for k, r in rows.items() if r.state is ObjectState.VERIFIED} == set(etags)
    assert {k for k, r in rows.items() if r.skip_reason == "NotFound"} == MISSING
    assert await keys_of(s3_seed.client, source) == etags  # nothing written


async def test_a_worklist_key_deleted_after_the_scan_is_missing_not_failed(
    ledger: Ledger, s3_seed: S3Seeder, s3_endpoint: Endpoint, tmp_path: Path
) -> None:
    source, etags, worklist = await _seeded(s3_seed, tmp_path)
    target = await s3_seed.bucket()

    def spec(dry_run: bool) -> ObjectMigration:
        return from_worklist(
            s3_endpoint,
            source,
            target,
            worklist,
            copy={"mode": "stream"},
            cutover={"catchUp": True},
            dryRun=dry_run,
        )

    # A plan records the worklist as it is; then the application deletes one of its keys,
    # and writes one the plan found missing.
    planned = await run(ledger, spec(True), s3_endpoint)
    assert planned.outcome == "planned"
    assert {k for k, r in (await rows_of(ledger)).items() if r.skip_reason == "NotFound"} == (
        MISSING
    )
    gone, come = KEYS[0], sorted(MISSING)[0]
    await s3_seed.client.delete_object(Bucket=source, Key=gone)
    etags[come] = (await s3_seed.put_object(source, come, 77)).etag

    result = await run(ledger, spec(False), s3_endpoint)

    assert result.outcome == "cut-over", result.status.conditions
    rows = await rows_of(ledger)
    assert {k for k, r in rows.items() if r.skip_reason == "NotFound"} == {
        *(MISSING - {come}),
        gone,
    }
    assert rows[gone].state is ObjectState.SKIPPED
    # Missing at the plan, there at the run: not the object the plan recorded, so it ends
    # source_changed and the catch-up round's scan takes it up as it is now.
    assert rows[come].state is ObjectState.VERIFIED
    del etags[gone]
    assert await keys_of(s3_seed.client, target) == etags
