"""The engine end to end against a real S3 server over HTTP and a real PostgreSQL ledger."""

from __future__ import annotations

import asyncio
import io
import math
import time
from collections import Counter
from collections.abc import Iterable
from datetime import datetime

import asyncpg
import pytest
from types_aiobotocore_s3 import S3Client

from objmig.api.migration import ObjectMigrationStatus
from objmig.engine.local_run import LocalRun
from objmig.engine.secrets import env_name
from objmig.ledger import Ledger, ObjectRow, ObjectState
from objmig.local.postgres import EmbeddedPostgres
from objmig.storage.copy import CopyOptions, SourceObject, TargetObject, copy_object
from objmig.storage.endpoint import Credentials, Endpoint
from objmig.storage.s3http import S3HttpClient
from tests.fixtures.s3 import S3Backend, S3Seeder
from tests.integration.engine_support import (
    keys_of,
    migration,
    rows_of,
    run,
    secrets_for,
    sha256_of,
)
from tests.support.catalog import catalog_action, catalog_database, catalog_rows, refuse_location
from tests.support.s3proxy import (
    Delay,
    Fail,
    Hold,
    Reset,
    RewriteHeaders,
    S3FaultProxy,
    SeenRequest,
    Truncate,
)

KiB = 1024
MiB = 1024 * KiB
# How long a test waits for something that comes within seconds on an idle machine.
PATIENCE = 120.0


async def test_stream_copy_keeps_etags_content_metadata_and_tags(
    ledger: Ledger, s3_backend: S3Backend, backend_seed: S3Seeder, backend_client: S3Client
) -> None:
    source = await backend_seed.bucket()
    target = await backend_seed.bucket()
    part = s3_backend.min_part_size
    seeded = [
        await backend_seed.put_object(source, "a/small.txt", 3 * KiB, metadata={"owner": "x"}),
        await backend_seed.put_object(source, "a/empty", 0),
        await backend_seed.put_object(source, "b/tagged", 10 * KiB, tags={"team": "blue"}),
        await backend_seed.put_multipart(source, "big/uneven", [part, part, part // 3]),
        await backend_seed.put_multipart(
            source, "big/meta", [part, part + 17], metadata={"storage-version": "2"}
        ),
    ]
    resource = migration(
        s3_backend.endpoint,
        source,
        target,
        copy={"mode": "stream", "partConcurrency": 2},
        target_extra={"storageClass": s3_backend.other_storage_class},
    )

    result = await run(ledger, resource, s3_backend.endpoint)

    assert result.outcome == "cut-over", [(o.key, o.last_error) for o in result.status.objects]
    copied = await keys_of(backend_client, target)
    for obj in seeded:
        assert copied[obj.key] == obj.etag, obj.key
        assert await sha256_of(backend_client, target, obj.key) == obj.sha256
        head = await backend_client.head_object(Bucket=target, Key=obj.key)
        assert head.get("StorageClass") == s3_backend.other_storage_class
        for name, value in obj.metadata.items():
            assert head["Metadata"][name] == value
        if obj.tags:
            tags = await backend_client.get_object_tagging(Bucket=target, Key=obj.key)
            assert {t["Key"]: t["Value"] for t in tags["TagSet"]} == dict(obj.tags)
    rows = await rows_of(ledger)
    assert {r.state for r in rows.values()} == {ObjectState.VERIFIED}
    assert all(r.cut_over_at is not None for r in rows.values())


async def test_server_side_copy_of_many_parts_keeps_etag(
    ledger: Ledger, s3_backend: S3Backend, backend_seed: S3Seeder, backend_client: S3Client
) -> None:
    source = await backend_seed.bucket()
    target = await backend_seed.bucket()
    # Many parts and an odd last one: UploadPartCopy with the source's own byte ranges is
    # the only way the target ETag can come out equal.
    count = 12 if s3_backend.min_part_size <= 2 * KiB else 3
    part = max(2 * KiB, s3_backend.min_part_size)
    many = await backend_seed.put_multipart(source, "many", [part] * count + [777])
    single = await backend_seed.put_object(source, "single", 5 * KiB)
    resource = migration(s3_backend.endpoint, source, target, copy={"mode": "serverSide"})

    result = await run(ledger, resource, s3_backend.endpoint)

    assert result.outcome == "cut-over"
    copied = await keys_of(backend_client, target)
    assert copied["many"] == many.etag
    assert many.etag.endswith(f"-{count + 1}")
    assert copied["single"] == single.etag
    assert await sha256_of(backend_client, target, "many") == many.sha256


async def test_restore_waits_while_the_server_says_restore_is_ongoing(
    ledger: Ledger,
    proxy_endpoint: Endpoint,
    s3_proxy: S3FaultProxy,
    s3_seed: S3Seeder,
    s3_client: S3Client,
) -> None:
    source = await s3_seed.bucket()
    target = await s3_seed.bucket()
    frozen = [
        await s3_seed.put_object(source, f"cold/{i}", 2 * KiB, storage_class="DEEP_ARCHIVE")
        for i in range(3)
    ]
    warm = await s3_seed.put_object(source, "warm", 1 * KiB)
    # moto restores at once; the proxy makes HEAD say "still restoring" until the test has
    # seen the engine look at each archived object again while it was.
    ongoing = s3_proxy.add_rule(
        RewriteHeaders({"x-amz-restore": 'ongoing-request="true"'}),
        method="HEAD",
        bucket=source,
        key="cold/*",
    )
    resource = migration(
        proxy_endpoint,
        source,
        target,
        restore={"tier": "Standard", "days": 1, "pollInterval": "500ms"},
    )

    def cold(requests: list[SeenRequest], bucket: str) -> list[SeenRequest]:
        return [r for r in requests if r.bucket == bucket and r.key.startswith("cold/")]

    async def restore_ends_once_polled() -> None:
        async with asyncio.timeout(PATIENCE):
            while True:
                polls = Counter(
                    r.key for r in cold(s3_proxy.seen("HEAD"), source) if r.action is not None
                )
                if all(polls[o.key] >= 2 for o in frozen):
                    break
                await asyncio.sleep(0.05)
        copied_early = cold(s3_proxy.seen("PUT"), target) + cold(s3_proxy.seen("GET"), source)
        s3_proxy.remove_rule(ongoing)
        assert copied_early == [], "the copy did not wait for the restore"

    result, _ = await asyncio.gather(
        run(ledger, resource, proxy_endpoint), restore_ends_once_polled()
    )

    assert result.outcome == "cut-over"
    restores = [r for r in s3_proxy.seen("POST") if "restore" in r.query]
    assert {r.key for r in restores} == {o.key for o in frozen}
    copied = await keys_of(s3_client, target)
    for obj in [*frozen, warm]:
        assert copied[obj.key] == obj.etag
    rows = await rows_of(ledger)
    assert all(rows[o.key].restore_requested_at is not None for o in frozen)
    assert rows["warm"].restore_requested_at is None


async def test_a_restore_is_looked_at_soon_after_its_request_and_no_eta_is_guessed_meanwhile(
    ledger: Ledger, s3_endpoint: Endpoint, s3_seed: S3Seeder
) -> None:
    source = await s3_seed.bucket()
    target = await s3_seed.bucket()
    await s3_seed.put_object(source, "cold", 2 * KiB, storage_class="GLACIER")
    for i in range(3):
        await s3_seed.put_object(source, f"warm/{i}", 1 * KiB)
    # The default pollInterval (15m): the first look must not wait for it (issue 21.7).
    restore = {"tier": "Expedited", "storageClasses": ["GLACIER"]}
    resource = migration(s3_endpoint, source, target, restore=restore)
    waiting = asyncio.Event()

    def on_status(status: ObjectMigrationStatus) -> None:
        if status.progress.eta == "waiting for restores":
            waiting.set()

    stop = asyncio.Event()
    runner = LocalRun(
        ledger, resource, secrets_for(s3_endpoint), on_status=on_status, status_interval=0.1
    )
    running = asyncio.create_task(runner.run(stop))

    async def waiting_row() -> ObjectRow:
        async with asyncio.timeout(60):
            while True:
                rows = await rows_of(ledger) if await ledger.find_migration("test/m") else {}
                row = rows.get("cold")
                if row is not None and row.state is ObjectState.RESTORING and row.not_before:
                    return row
                await asyncio.sleep(0.05)  # polls the ledger, the condition itself

    row = await waiting_row()
    await asyncio.wait_for(waiting.wait(), 60)
    stop.set()
    result = await running

    assert row.restore_requested_at is not None
    assert row.not_before is not None
    first_look = (row.not_before - row.restore_requested_at).total_seconds()
    assert 29 <= first_look <= 31, first_look
    assert result.outcome == "interrupted"


async def test_archived_objects_are_skipped_without_a_restore_spec(
    ledger: Ledger, s3_endpoint: Endpoint, s3_seed: S3Seeder
) -> None:
    source = await s3_seed.bucket()
    target = await s3_seed.bucket()
    await s3_seed.put_object(source, "cold", 1 * KiB, storage_class="GLACIER")
    await s3_seed.put_object(source, "warm", 1 * KiB)

    result = await run(ledger, migration(s3_endpoint, source, target), s3_endpoint)

    rows = await rows_of(ledger)
    assert rows["cold"].state is ObjectState.SKIPPED
    assert rows["cold"].skip_reason == "ArchivedNotRestored"
    assert rows["warm"].state is ObjectState.VERIFIED
    assert result.status.progress.objects.skipped == 1


@pytest.mark.parametrize("mode", ["stream", "serverSide"])
async def test_a_source_changed_during_its_copy_is_never_cut_over_stale(
    ledger: Ledger,
    proxy_endpoint: Endpoint,
    s3_proxy: S3FaultProxy,
    s3_seed: S3Seeder,
    s3_client: S3Client,
    mode: str,
) -> None:
    source = await s3_seed.bucket()
    target = await s3_seed.bucket()
    for i in range(5):
        await s3_seed.put_object(source, f"steady/{i}", 1 * KiB)
    await s3_seed.put_object(source, "moving", 4 * KiB, seed="old")
    # Hold the copy's read of "moving" while the application rewrites it: the GET of a
    # streamed copy, the CopyObject (a PUT on the target) of a server-side one.
    held_method, held_bucket = ("GET", source) if mode == "stream" else ("PUT", target)
    hold = Hold()
    s3_proxy.add_rule(hold, method=held_method, bucket=held_bucket, key="moving", times=1)

    async def rewrite() -> None:
        # Rewrite while the copy's read is held, then let the read go on.
        await hold.arrived()
        await s3_seed.put_object(source, "moving", 4 * KiB, seed="new")
        hold.release()

    resource = migration(proxy_endpoint, source, target, copy={"mode": mode})
    result, _ = await asyncio.gather(run(ledger, resource, proxy_endpoint), rewrite())

    # The copy's re-check saw the change (its copy of the old bytes proves nothing), and
    # the re-scan every migration makes before its cutover sent it to be copied again:
    # what was cut over is the object as it is now, without catchUp asking for it.
    rows = await rows_of(ledger)
    now = await s3_client.head_object(Bucket=source, Key="moving")
    assert result.outcome == "cut-over", result.status.objects
    assert rows["moving"].state is ObjectState.VERIFIED
    assert rows["moving"].etag == now["ETag"].strip('"')
    assert rows["moving"].attempts == 1  # the row was reset by the re-scan's merge
    assert (await keys_of(s3_client, target))["moving"] == now["ETag"].strip('"')
    assert all(rows[f"steady/{i}"].state is ObjectState.VERIFIED for i in range(5))
    assert rows["moving"].last_seen_scan == 2


async def test_a_source_changed_since_its_verification_is_copied_again_before_the_cutover(
    ledger: Ledger, s3_endpoint: Endpoint, s3_seed: S3Seeder, s3_client: S3Client
) -> None:
    source = await s3_seed.bucket()
    target = await s3_seed.bucket()
    await s3_seed.put_object(source, "a", 1 * KiB)
    await s3_seed.put_object(source, "b", 1 * KiB)
    # Awaiting approval: every object verified, the final re-scan done, no cutover yet.
    manual = {"policy": "Manual"}
    resource = migration(s3_endpoint, source, target, cutover=manual)
    assert (await run(ledger, resource, s3_endpoint)).outcome == "awaiting-cutover"
    changed = await s3_seed.put_object(source, "a", 1 * KiB, seed="changed")
    approved = migration(s3_endpoint, source, target, cutover={**manual, "approved": True})

    result = await run(ledger, approved, s3_endpoint)

    # Approved after a change: the cutover still re-scanned first, and copied "a" again.
    assert result.outcome == "cut-over"
    rows = await rows_of(ledger)
    assert rows["a"].etag == changed.etag
    assert (await keys_of(s3_client, target))["a"] == changed.etag
    assert rows["b"].cut_over_at is not None


async def test_transient_faults_cost_a_request_and_a_body_cut_short_is_read_on(
    ledger: Ledger,
    proxy_endpoint: Endpoint,
    s3_proxy: S3FaultProxy,
    s3_seed: S3Seeder,
    s3_client: S3Client,
) -> None:
    source = await s3_seed.bucket()
    target = await s3_seed.bucket()
    objs = [await s3_seed.put_object(source, f"k{i}", 64 * KiB) for i in range(4)]
    rules = [
        s3_proxy.add_rule(Fail(503, "SlowDown"), method="GET", bucket=source, key="k0", times=2),
        s3_proxy.add_rule(
            Fail(500, "InternalError"), method="PUT", bucket=target, key="k1", times=1
        ),
        s3_proxy.add_rule(Reset(), method="GET", bucket=source, key="k2", times=1),
        s3_proxy.add_rule(Truncate(1000), method="GET", bucket=source, key="k3", times=1),
    ]

    # Streamed, without tags: the only GET of each key is the data read the faults aim at.
    resource = migration(
        proxy_endpoint, source, target, copy={"mode": "stream", "preserveTags": False}
    )
    result = await run(ledger, resource, proxy_endpoint)

    assert result.outcome == "cut-over"
    assert [rule.hits for rule in rules] == [2, 1, 1, 1]
    rows = await rows_of(ledger)
    # Answers that failed are asked for again at once; the object's attempt is not spent.
    assert rows["k0"].attempts == 1
    assert rows["k1"].attempts == 1
    assert rows["k2"].attempts == 1
    # A body cut short is read on from where it stopped, pinned to the same ETag: the
    # upload it feeds never knew.
    assert rows["k3"].attempts == 1
    reads = [r for r in s3_proxy.seen("GET", key="k3") if r.bucket == source]
    ranges = [{k.lower(): v for k, v in r.headers.items()}.get("range") for r in reads]
    assert ranges == [None, "bytes=1000-65535"]
    for obj in objs:
        assert rows[obj.key].state is ObjectState.VERIFIED
        assert await sha256_of(s3_client, target, obj.key) == obj.sha256


async def test_dry_run_writes_nothing_and_reports_a_plan(
    ledger: Ledger, s3_endpoint: Endpoint, s3_seed: S3Seeder, s3_client: S3Client
) -> None:
    source = await s3_seed.bucket()
    target = await s3_seed.bucket()
    same = await s3_seed.put_object(source, "same", 2 * KiB)
    await s3_client.copy_object(
        Bucket=target, Key="same", CopySource={"Bucket": source, "Key": "same"}
    )
    await s3_seed.put_object(source, "new1", 3 * KiB)
    await s3_seed.put_object(source, "new2", 4 * KiB)
    await s3_seed.put_object(source, "cold", 1 * KiB, storage_class="DEEP_ARCHIVE")
    before = await keys_of(s3_client, target)
    resource = migration(
        s3_endpoint, source, target, dryRun=True, restore={"tier": "Bulk", "days": 1}
    )

    result = await run(ledger, resource, s3_endpoint)

    assert result.outcome == "planned"
    assert await keys_of(s3_client, target) == before == {"same": same.etag}
    plan = result.status.plan
    assert plan is not None
    assert (plan.objects, plan.would_copy, plan.would_skip, plan.need_restore) == (4, 2, 1, 1)
    assert plan.by_storage_class == {"DEEP_ARCHIVE": 1, "STANDARD": 3}
    assert result.status.phase == "Completed"
    head = await s3_client.head_object(Bucket=source, Key="cold")
    assert "Restore" not in head, "a dry run must not request restores"

    # The real run after the plan copies everything the plan said it would.
    real = migration(
        s3_endpoint, source, target, restore={"tier": "Bulk", "days": 1, "pollInterval": "100ms"}
    )
    outcome = await run(ledger, real, s3_endpoint)
    assert outcome.outcome == "cut-over"
    assert set(await keys_of(s3_client, target)) == {"same", "new1", "new2", "cold"}


async def test_a_plan_warns_loudly_where_the_globs_select_otherwise_than_before(
    ledger: Ledger, s3_endpoint: Endpoint, s3_seed: S3Seeder
) -> None:
    # Written when `*.tmp` meant "at the top only": rclone's rules (issue 21.7) exclude
    # logs/x.tmp as well, and a plan says so before anything is copied.
    source = await s3_seed.bucket()
    target = await s3_seed.bucket()
    for key in ("x.tmp", "logs/x.tmp", "logs/y.tmp", "keep.txt"):
        await s3_seed.put_object(source, key, 10)
    resource = migration(s3_endpoint, source, target, dryRun=True, selection={"exclude": ["*.tmp"]})

    result = await run(ledger, resource, s3_endpoint)

    plan = result.status.plan
    assert plan is not None
    assert plan.objects == 1
    assert plan.selected_differently == 2
    assert plan.selected_differently_examples == ["-logs/x.tmp", "-logs/y.tmp"]
    scanned = next(c for c in result.status.conditions if c.type == "Scanned")
    assert "WARNING: 2 of the listed objects are selected otherwise than before" in (
        scanned.message
    )
    # Anchored, the pattern means what it meant: nothing to warn about.
    anchored = migration(
        s3_endpoint, source, target, name="a", dryRun=True, selection={"exclude": ["/*.tmp"]}
    )
    plan = (await run(ledger, anchored, s3_endpoint)).status.plan
    assert plan is not None
    assert (plan.objects, plan.selected_differently) == (3, 0)


async def test_verify_only_checks_an_existing_copy_and_writes_nothing(
    ledger: Ledger, s3_backend: S3Backend, backend_seed: S3Seeder, backend_client: S3Client
) -> None:
    source = await backend_seed.bucket()
    target = await backend_seed.bucket()
    for key in ("copied", "missing", "corrupt"):
        await backend_seed.put_object(source, key, 2 * KiB)
    await backend_client.copy_object(
        Bucket=target, Key="copied", CopySource={"Bucket": source, "Key": "copied"}
    )
    await backend_seed.put_object(target, "corrupt", 2 * KiB, seed="different")
    before = await keys_of(backend_client, target)
    resource = migration(s3_backend.endpoint, source, target, verify={"verifyOnly": True})

    result = await run(ledger, resource, s3_backend.endpoint)

    assert await keys_of(backend_client, target) == before
    rows = await rows_of(ledger)
    assert rows["copied"].state is ObjectState.VERIFIED
    assert rows["missing"].state is ObjectState.FAILED
    assert rows["missing"].error_code == "TargetMissing"
    assert rows["corrupt"].state is ObjectState.FAILED
    assert rows["corrupt"].error_code == "ETagMismatch"
    assert result.status.verification.objects == 1


async def test_failure_budget_pauses_the_run_with_the_reason(
    ledger: Ledger,
    proxy_endpoint: Endpoint,
    s3_proxy: S3FaultProxy,
    s3_seed: S3Seeder,
) -> None:
    source = await s3_seed.bucket()
    target = await s3_seed.bucket()
    for i in range(30):
        await s3_seed.put_object(source, f"ok/{i:02d}", 1 * KiB)
    for i in range(10):
        await s3_seed.put_object(source, f"deny/{i:02d}", 1 * KiB)
    s3_proxy.add_rule(Fail(403, "AccessDenied"), method="PUT", bucket=target, key="deny/*")
    resource = migration(
        proxy_endpoint,
        source,
        target,
        failurePolicy={"maxFailedObjects": 3},
        copy={"concurrency": 2},
    )

    result = await run(ledger, resource, proxy_endpoint)

    assert result.outcome == "paused"
    assert result.status.phase == "Paused"
    paused = next(c for c in result.status.conditions if c.type == "Paused")
    assert paused.status == "True"
    assert paused.reason == "FailureBudgetExceeded"
    assert "maxFailedObjects (3)" in paused.message
    assert result.status.cutover.at is None
    failed = [r for r in (await rows_of(ledger)).values() if r.state is ObjectState.FAILED]
    assert failed
    assert all(r.key.startswith("deny/") and r.error_code == "AccessDenied" for r in failed)


async def test_catalog_cutover_swaps_locations_and_rollback_restores_them(
    ledger: Ledger,
    postgres_server: object,
    s3_endpoint: Endpoint,
    s3_seed: S3Seeder,
) -> None:
    source = await s3_seed.bucket()
    target = await s3_seed.bucket()
    keys = [f"docs/{i}.pdf" for i in range(25)]
    for key in keys:
        await s3_seed.put_object(source, key, 512)
    admin = await asyncpg.connect(postgres_server.dsn)  # type: ignore[attr-defined]
    await admin.execute("DROP DATABASE IF EXISTS app_catalog")
    await admin.execute("CREATE DATABASE app_catalog")
    await admin.close()
    app_dsn = postgres_server.dsn_for("app_catalog")  # type: ignore[attr-defined]
    app = await asyncpg.connect(app_dsn)
    await app.execute("CREATE TABLE files (object_key text primary key, location text)")
    await app.executemany(
        "INSERT INTO files VALUES ($1, $2)", [(k, f"s3://{source}/{k}") for k in keys]
    )
    # The application moved one file itself meanwhile: the swap must leave it alone.
    await app.execute(
        "UPDATE files SET location = 's3://elsewhere/x' WHERE object_key = $1", keys[0]
    )
    secrets = secrets_for(s3_endpoint, **{env_name("app-db", "dsn"): app_dsn})
    cutover = {
        "catalog": {
            "dsnSecretRef": {"name": "app-db", "key": "dsn"},
            "table": "public.files",
            "keyColumn": "object_key",
            "locationColumn": "location",
            "batchSize": 10,
        }
    }
    resource = migration(s3_endpoint, source, target, cutover=cutover)

    result = await run(ledger, resource, s3_endpoint, secrets=secrets)

    assert result.outcome == "cut-over"
    locations = dict(await app.fetch("SELECT object_key, location FROM files"))
    assert locations[keys[0]] == "s3://elsewhere/x"
    assert all(locations[k] == f"s3://{target}/{k}" for k in keys[1:])
    assert result.status.cutover.catalog_rows_swapped == 24
    assert "1 changed by the application" in " ".join(result.status.cutover.actions)

    # Running again changes nothing: the cutover is recorded and not repeated.
    again = await run(ledger, resource, s3_endpoint, secrets=secrets)
    assert again.outcome == "cut-over"

    rollback = migration(s3_endpoint, source, target, cutover={**cutover, "rollback": True})
    rolled = await run(ledger, rollback, s3_endpoint, secrets=secrets)

    assert rolled.outcome == "rolled-back"
    locations = dict(await app.fetch("SELECT object_key, location FROM files"))
    assert all(locations[k] == f"s3://{source}/{k}" for k in keys[1:])
    assert locations[keys[0]] == "s3://elsewhere/x"
    cut = next(c for c in rolled.status.conditions if c.type == "CutOver")
    assert (cut.status, cut.reason) == ("False", "RolledBack")
    assert all(r.cut_over_at is None for r in (await rows_of(ledger)).values())
    await app.close()


async def test_a_cutover_that_stops_half_way_rolls_back_and_cuts_over_again_after_a_re_scan(
    ledger: Ledger,
    postgres_server: EmbeddedPostgres,
    s3_endpoint: Endpoint,
    s3_seed: S3Seeder,
    s3_client: S3Client,
) -> None:
    source = await s3_seed.bucket()
    target = await s3_seed.bucket()
    keys = [f"docs/{i:02d}.pdf" for i in range(25)]
    for key in keys:
        await s3_seed.put_object(source, key, 512)
    async with catalog_database(postgres_server, keys, source) as app_dsn:
        app = await asyncpg.connect(app_dsn)
        # The application refuses the last key's new location: the third batch of ten
        # fails after two were committed.
        await refuse_location(app, f"s3://{target}/{keys[-1]}")
        secrets = secrets_for(s3_endpoint, **{env_name("app-db", "dsn"): app_dsn})
        cutover = {"catalog": catalog_action(batchSize=10)}
        resource = migration(s3_endpoint, source, target, cutover=cutover)

        stopped = await run(ledger, resource, s3_endpoint, secrets=secrets)

        assert stopped.outcome == "failed"
        failed = next(c for c in stopped.status.conditions if c.type == "Failed")
        assert failed.reason == "CutoverFailed"
        assert "the application refuses docs/24.pdf" in failed.message
        assert "spec.cutover.rollback: true" in failed.message
        assert next(c for c in stopped.status.conditions if c.type == "CutOver").status == "False"
        on_target = {k for k, loc in (await catalog_rows(app_dsn)).items() if target in loc}
        assert on_target == set(keys[:20])

        rollback = migration(s3_endpoint, source, target, cutover={**cutover, "rollback": True})
        rolled = await run(ledger, rollback, s3_endpoint, secrets=secrets)

        assert rolled.outcome == "rolled-back"
        assert await catalog_rows(app_dsn) == {k: f"s3://{source}/{k}" for k in keys}
        cut = next(c for c in rolled.status.conditions if c.type == "CutOver")
        assert (cut.status, cut.reason) == ("False", "RolledBack")
        assert rolled.status.cutover.rolled_back_at is not None

        # Back on the source, the application writes to it; then the cause is fixed and the
        # cutover asked for again: the re-scan it waits for brings the writes along.
        changed = await s3_seed.put_object(source, keys[3], 700)
        added = await s3_seed.put_object(source, "docs/new.pdf", 300)
        await app.execute("DROP TRIGGER refuse ON assets")
        again = await run(ledger, resource, s3_endpoint, secrets=secrets)

        assert again.outcome == "cut-over", again.status.conditions
        assert await catalog_rows(app_dsn) == {k: f"s3://{target}/{k}" for k in keys}
        copied = await keys_of(s3_client, target)
        assert copied[keys[3]] == changed.etag
        assert copied["docs/new.pdf"] == added.etag
        assert await sha256_of(s3_client, target, keys[3]) == changed.sha256
        rows = await rows_of(ledger)
        assert {r.state for r in rows.values()} == {ObjectState.VERIFIED}
        assert all(r.cut_over_at is not None for r in rows.values())
        await app.close()


async def test_rollback_is_refused_once_cleanup_started(
    ledger: Ledger, s3_endpoint: Endpoint, s3_seed: S3Seeder
) -> None:
    source = await s3_seed.bucket()
    target = await s3_seed.bucket()
    await s3_seed.put_object(source, "a", 100)
    assert (await run(ledger, migration(s3_endpoint, source, target), s3_endpoint)).outcome == (
        "cut-over"
    )
    migration_id = await ledger.find_migration("test/m")
    assert migration_id is not None
    await ledger.update_state(migration_id, cleanup_started=True)

    result = await run(
        ledger, migration(s3_endpoint, source, target, cutover={"rollback": True}), s3_endpoint
    )

    assert result.outcome == "failed"
    assert result.status.cutover.rolled_back_at is None
    assert "rollback is no longer safe" in (result.status.cutover.rollback_blocked or "")
    cut = next(c for c in result.status.conditions if c.type == "CutOver")
    assert cut.status == "True"


async def test_resume_never_recopies_a_verified_object(
    ledger: Ledger,
    proxy_endpoint: Endpoint,
    s3_proxy: S3FaultProxy,
    s3_seed: S3Seeder,
) -> None:
    source = await s3_seed.bucket()
    target = await s3_seed.bucket()
    for i in range(20):
        await s3_seed.put_object(source, f"o{i:02d}", 2 * KiB)
    resource = migration(proxy_endpoint, source, target, copy={"concurrency": 2})
    stop = asyncio.Event()
    # The last object's write waits at the proxy: the first run cannot finish everything
    # before it is stopped, however fast it goes.
    s3_proxy.add_rule(Hold(), method="PUT", bucket=target, key="o19")

    async def stop_after_some() -> None:
        async with asyncio.timeout(PATIENCE):
            while True:
                migration_id = await ledger.find_migration("test/m")
                if migration_id is not None:
                    counts = await ledger.counts(migration_id)
                    if counts.state(ObjectState.VERIFIED).objects >= 3:
                        break
                await asyncio.sleep(0.02)
        stop.set()

    runner = LocalRun(ledger, resource, secrets_for(proxy_endpoint), status_interval=0.1)
    first, _ = await asyncio.gather(runner.run(stop), stop_after_some())
    assert first.outcome == "interrupted"
    done_before = {k for k, r in (await rows_of(ledger)).items() if r.state is ObjectState.VERIFIED}
    assert 0 < len(done_before) < 20
    s3_proxy.clear()
    puts_before = len(s3_proxy.seen("PUT"))

    second = await run(ledger, resource, proxy_endpoint)

    assert second.outcome == "cut-over"
    recopied = {r.key for r in s3_proxy.seen("PUT")[puts_before:] if r.bucket == target}
    assert not recopied & done_before
    assert len(await rows_of(ledger)) == 20


async def test_no_credentials_in_status_or_report(
    ledger: Ledger, s3_endpoint: Endpoint, s3_seed: S3Seeder, tmp_path: object
) -> None:
    source = await s3_seed.bucket()
    target = await s3_seed.bucket()
    await s3_seed.put_object(source, "a", 100)
    secret = "objmig-test-secret"  # the test server's secret key
    result = await run(ledger, migration(s3_endpoint, source, target), s3_endpoint)
    assert secret not in result.status.model_dump_json()
    migration_id = await ledger.find_migration("test/m")
    assert migration_id is not None
    buffer = io.BytesIO()
    await ledger.export_report(migration_id, buffer, "jsonl")
    assert secret.encode() not in buffer.getvalue()
    assert secret not in (await ledger.get_state(migration_id)).model_dump_json()


@pytest.mark.parametrize("s3_backend", ["minio"], indirect=True)
async def test_bad_credentials_fail_the_run_once_with_the_s3_error(
    ledger: Ledger, s3_backend: S3Backend, backend_seed: S3Seeder
) -> None:
    source = await backend_seed.bucket()
    target = await backend_seed.bucket()
    await backend_seed.put_object(source, "a", 1 * KiB)
    endpoint = s3_backend.endpoint
    assert endpoint.credentials is not None
    wrong = secrets_for(
        Endpoint(
            url=endpoint.url,
            credentials=Credentials(endpoint.credentials.access_key_id, "not-the-secret"),
        )
    )

    result = await run(ledger, migration(endpoint, source, target), endpoint, secrets=wrong)

    assert result.outcome == "failed"
    failed = next(c for c in result.status.conditions if c.type == "Failed")
    assert failed.status == "True"
    assert failed.reason == "S3SignatureDoesNotMatch"
    assert "not-the-secret" not in failed.message
    assert result.status.phase == "Failed"


async def _last_modified(client: S3Client, bucket: str) -> dict[str, datetime]:
    found = {}
    for key in await keys_of(client, bucket):
        found[key] = (await client.head_object(Bucket=bucket, Key=key))["LastModified"]
    return found


async def _clock_past_the_second_of(times: Iterable[datetime]) -> None:
    """Wait until the clock has left the second of each of `times`: Last-Modified has
    whole seconds, so an object rewritten from now on shows a later one."""
    latest = math.floor(max(t.timestamp() for t in times))
    async with asyncio.timeout(PATIENCE):
        while time.time() < latest + 1:  # noqa: ASYNC110 - the clock signals nothing
            await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    "mode",
    ["stream", "serverSide"],
)
async def test_if_different_keeps_identical_copies_and_overwrites_different_ones(
    ledger: Ledger,
    proxy_endpoint: Endpoint,
    s3_proxy: S3FaultProxy,
    s3_seed: S3Seeder,
    s3_client: S3Client,
    s3_http: S3HttpClient,
    mode: str,
) -> None:
    source = await s3_seed.bucket()
    target = await s3_seed.bucket()
    same = await s3_seed.put_object(source, "same", 3 * KiB, metadata={"owner": "x"})
    same_multi = await s3_seed.put_multipart(source, "same-multi", [4 * KiB, 4 * KiB, 100])
    different = await s3_seed.put_object(source, "different", 2 * KiB)
    different_multi = await s3_seed.put_multipart(source, "different-multi", [4 * KiB, 10])
    new = await s3_seed.put_object(source, "new", 1 * KiB)
    for obj in (same, same_multi):
        await copy_object(
            s3_http,
            s3_http,
            SourceObject(source, obj.key, etag=obj.etag, size=obj.size),
            TargetObject(target, obj.key),
            CopyOptions(server_side=True),
        )
    await s3_seed.put_object(target, "different", 2 * KiB, seed="stale copy")
    await s3_seed.put_object(target, "different-multi", 4 * KiB + 10, seed="stale copy")
    before = await _last_modified(s3_client, target)
    await _clock_past_the_second_of(before.values())
    resource = migration(
        proxy_endpoint, source, target, copy={"mode": mode, "overwrite": "ifDifferent"}
    )

    result = await run(ledger, resource, proxy_endpoint)

    assert result.outcome == "cut-over", [(o.key, o.last_error) for o in result.status.objects]
    rows = await rows_of(ledger)
    assert {key: row.state for key, row in rows.items()} == dict.fromkeys(
        ("same", "same-multi", "different", "different-multi", "new"), ObjectState.VERIFIED
    )
    after = await _last_modified(s3_client, target)
    # Identical copies are verified in place, not rewritten: a single-part one may be sent
    # (the copy does not look first), but only create-only, which the store refuses.
    for request in s3_proxy.seen("PUT"):
        if request.bucket == target and request.key in ("same", "same-multi"):
            headers = {name.lower(): value for name, value in request.headers.items()}
            assert headers.get("if-none-match") == "*", request
    assert after["same"] == before["same"]
    assert after["same-multi"] == before["same-multi"]
    # Different ones are overwritten with the source's bytes.
    copied = await keys_of(s3_client, target)
    for obj in (same, same_multi, different, different_multi, new):
        assert copied[obj.key] == obj.etag, obj.key
        assert await sha256_of(s3_client, target, obj.key) == obj.sha256
    assert after["different"] > before["different"]
    assert after["different-multi"] > before["different-multi"]


async def test_never_skips_a_different_target_and_leaves_it_alone(
    ledger: Ledger, s3_endpoint: Endpoint, s3_seed: S3Seeder, s3_client: S3Client
) -> None:
    source = await s3_seed.bucket()
    target = await s3_seed.bucket()
    same = await s3_seed.put_object(source, "same", 2 * KiB)
    await s3_seed.put_object(source, "different", 2 * KiB)
    await s3_seed.put_multipart(source, "different-multi", [4 * KiB, 10])
    new = await s3_seed.put_object(source, "new", 1 * KiB)
    await s3_client.copy_object(
        Bucket=target, Key="same", CopySource={"Bucket": source, "Key": "same"}
    )
    theirs = await s3_seed.put_object(target, "different", 2 * KiB, seed="theirs")
    theirs_multi = await s3_seed.put_object(target, "different-multi", 100, seed="theirs")
    resource = migration(s3_endpoint, source, target, copy={"overwrite": "never"})

    result = await run(ledger, resource, s3_endpoint)

    rows = await rows_of(ledger)
    assert rows["same"].state is ObjectState.VERIFIED
    assert rows["new"].state is ObjectState.VERIFIED
    for key in ("different", "different-multi"):
        assert rows[key].state is ObjectState.SKIPPED, key
        assert rows[key].skip_reason == "TargetExistsDifferent"
    assert result.status.progress.objects.skipped == 2
    copied = await keys_of(s3_client, target)
    assert copied == {
        "same": same.etag,
        "new": new.etag,
        "different": theirs.etag,
        "different-multi": theirs_multi.etag,
    }
    assert await sha256_of(s3_client, target, "different") == theirs.sha256


async def test_waiting_for_a_transfer_slot_does_not_count_against_object_timeout(
    ledger: Ledger,
    proxy_endpoint: Endpoint,
    s3_proxy: S3FaultProxy,
    s3_seed: S3Seeder,
) -> None:
    source = await s3_seed.bucket()
    target = await s3_seed.bucket()
    for i in range(3):
        await s3_seed.put_object(source, f"k{i}", 1 * KiB)
    # One transfer slot; every write holds it for 2 s (a slow store: the delay is the
    # behaviour tested). An object waits for the slot while the one before it writes, so
    # wait and attempt together take ~4 s, longer than objectTimeout, yet the attempt alone
    # takes ~2 s. The time is in the test's nature (objectTimeout is a time); the margins
    # are 1 s either side, which the rest of an attempt (three small requests) stays well
    # within on a busy machine.
    s3_proxy.add_rule(Delay(2.0), method="PUT", bucket=target)
    resource = migration(
        proxy_endpoint,
        source,
        target,
        copy={"mode": "stream", "concurrency": 1},
        retry={"attempts": 4, "objectTimeout": "3s", "backoff": {"initial": "50ms"}},
    )

    result = await run(ledger, resource, proxy_endpoint)

    assert result.outcome == "cut-over"
    rows = await rows_of(ledger)
    assert {key: row.attempts for key, row in rows.items()} == {"k0": 1, "k1": 1, "k2": 1}
    assert all(row.error_code is None for row in rows.values())


@pytest.mark.parametrize("mode", ["stream", "serverSide"])
async def test_new_part_size_when_boundaries_are_not_preserved_is_proven_by_checksum(
    ledger: Ledger,
    s3_backend: S3Backend,
    backend_seed: S3Seeder,
    backend_client: S3Client,
    mode: str,
) -> None:
    source = await backend_seed.bucket()
    target = await backend_seed.bucket()
    # S3's smallest part (the least partSize the spec accepts), whatever the server allows.
    part = 5 * MiB
    parted = await backend_seed.put_multipart(source, "parted", [part, part, part])
    large = await backend_seed.put_object(source, "large", 2 * part + 1)
    small = await backend_seed.put_object(source, "small", part // 2)
    resource = migration(
        s3_backend.endpoint,
        source,
        target,
        copy={"mode": mode, "preservePartBoundaries": False, "partSize": str(2 * part)},
    )

    result = await run(ledger, resource, s3_backend.endpoint)

    assert result.outcome == "cut-over", [(o.key, o.last_error) for o in result.status.objects]
    heads = {
        key: await backend_client.head_object(Bucket=target, Key=key)
        for key in ("parted", "large", "small")
    }
    # Three parts, and two parts plus a byte, re-cut into parts of two: two parts each, so
    # other ETags than the source's.
    assert heads["parted"]["ETag"].strip('"').endswith("-2")
    assert heads["large"]["ETag"].strip('"').endswith("-2")
    assert heads["small"]["ETag"].strip('"') == small.etag
    for obj in (parted, large, small):
        assert await sha256_of(backend_client, target, obj.key) == obj.sha256
    rows = await rows_of(ledger)
    # Re-cut objects were proven by SHA-256 of both sides; the small one by its ETag.
    assert rows["parted"].source_checksum == f"sha256:{parted.sha256}"
    assert rows["large"].target_checksum == f"sha256:{large.sha256}"
    assert rows["small"].source_checksum is None


@pytest.mark.parametrize("mode", ["stream", "serverSide", "serverSide-bare"])
async def test_looks_at_source_and_target_are_listings_in_batches(
    ledger: Ledger,
    proxy_endpoint: Endpoint,
    s3_proxy: S3FaultProxy,
    s3_seed: S3Seeder,
    mode: str,
) -> None:
    source = await s3_seed.bucket()
    target = await s3_seed.bucket()
    count = 120
    for i in range(count):
        await s3_seed.put_object(source, f"k/{i:03d}", 512)
    copy: dict[str, object] = {"mode": mode.removesuffix("-bare"), "concurrency": 8}
    if mode.endswith("-bare"):
        # Neither tags nor Object Lock kept: nothing a CopyObject's answer cannot tell.
        copy |= {"preserveTags": False, "preserveObjectLock": False}
    resource = migration(proxy_endpoint, source, target, copy=copy)

    result = await run(ledger, resource, proxy_endpoint)

    assert result.outcome == "cut-over"
    rows = await rows_of(ledger)
    assert all(row.state is ObjectState.VERIFIED for row in rows.values())

    def listings(bucket: str) -> int:
        return len(
            [r for r in s3_proxy.seen("GET") if r.bucket == bucket and "list-type" in r.query]
        )

    def heads(bucket: str) -> int:
        return len([r for r in s3_proxy.seen("HEAD") if r.bucket == bucket])

    def copies(bucket: str) -> int:
        return len(
            [
                r
                for r in s3_proxy.seen("PUT")
                if r.bucket == bucket and any(h.lower() == "x-amz-copy-source" for h in r.headers)
            ]
        )

    # Each bucket is listed once up front (one key: do the credentials work?), the source
    # once more by the scan; the re-checks of 120 objects share a few more listings (they
    # wait for each other) and none falls back to a HEAD. A server-side copy looks at the
    # target keys by listing (MinIO and moto ignore If-None-Match on CopyObject). Nothing
    # is HEADed: every read is pinned to the listed ETag and the write's answer proves the
    # copy (its metadata: directive COPY, or what objmig sent from the GET's headers).
    # A server-side copy that keeps tags or Object Lock (the defaults) HEADs its source
    # first: the GET of a streamed copy tells tag count and lock, a CopyObject's answer
    # neither. Without them, only a server-side copy written in its source's second is
    # made again, with objmig's mark (REPLACE needs a HEAD), so that cleanups can tell
    # the two apart.
    assert listings(source) <= 7
    assert listings(target) <= (1 if mode == "stream" else 6)
    assert heads(target) == 0
    if mode == "stream":
        assert heads(source) == 0
        assert len(s3_proxy.seen("PUT")) == count
    elif mode == "serverSide":
        assert heads(source) == count
        assert copies(target) == count
    else:
        assert heads(source) == copies(target) - count


@pytest.mark.parametrize("mode", ["stream", "serverSide"])
async def test_unequal_parts_are_learned_before_the_copy_and_copied_once(
    ledger: Ledger,
    proxy_endpoint: Endpoint,
    s3_proxy: S3FaultProxy,
    s3_seed: S3Seeder,
    mode: str,
) -> None:
    source = await s3_seed.bucket()
    target = await s3_seed.bucket()
    # Part 1 and the part count suggest equal parts of 6 KiB: wrong for the middle one.
    uneven = await s3_seed.put_multipart(source, "uneven", [6 * KiB, 5 * KiB, 6 * KiB])
    resource = migration(proxy_endpoint, source, target, copy={"mode": mode})

    result = await run(ledger, resource, proxy_endpoint)

    assert result.outcome == "cut-over"
    assert (await rows_of(ledger))["uneven"].target_etag == uneven.etag
    parts = [r for r in s3_proxy.seen("PUT") if r.bucket == target and "partNumber" in r.query]
    assert sorted(r.query["partNumber"] for r in parts) == ["1", "2", "3"], "copied twice"
    # Every byte written was counted by the worker, and the status shows it done.
    migration_id = await ledger.find_migration("test/m")
    assert migration_id is not None
    assert (await ledger.activity(migration_id)).bytes_moved == uneven.size
    progress = result.status.progress
    assert (progress.objects_done, progress.percent, progress.eta) == ("1/1", 100, None)
