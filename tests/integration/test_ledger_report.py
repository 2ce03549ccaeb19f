"""Report export, verification digest and row iteration against a real PostgreSQL."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import gc
import hashlib
import io
import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

import pytest

from objmig.ledger import DigestBuilder, Ledger, ObjectState, StepResult
from objmig.ledger.report import REPORT_COLUMNS
from tests.fixtures.postgres import inventory_rows

LEASE = timedelta(minutes=5)


async def _verify(ledger: Ledger, migration_id: int, limit: int) -> None:
    rows = await ledger.claim(migration_id, "w", [ObjectState.PENDING], limit, LEASE)
    await ledger.record(
        "w",
        [
            StepResult(
                id=r.id,
                state=ObjectState.VERIFIED,
                target_etag=f"t-{r.etag}",
                source_checksum="sha256:" + hashlib.sha256(r.key.encode()).hexdigest(),
            )
            for r in rows
        ],
    )


class _BlockCountingSink:
    """An async sink that writes to a file and samples live Python memory blocks.

    ``sys.getallocatedblocks`` counts the interpreter's live allocations at no cost (unlike
    tracemalloc, which slows an export tenfold); sampled at every write, while the current
    batch is alive, its peak above the starting level bounds what the export holds.
    """

    def __init__(self, out: BinaryIO) -> None:
        gc.collect()
        self.out = out
        self.base = sys.getallocatedblocks()
        self.peak_blocks = 0
        self.writes = 0

    async def write(self, data: bytes, /) -> None:
        self.out.write(data)
        self.writes += 1
        self.peak_blocks = max(self.peak_blocks, sys.getallocatedblocks() - self.base)


@pytest.mark.slow
async def test_report_of_100k_rows_streams_in_bounded_memory(
    ledger: Ledger, tmp_path: Path
) -> None:
    total = 100_000
    mid = await ledger.ensure_migration("ns/big")
    await ledger.upsert_inventory(mid, inventory_rows(total), scan_id=1)
    await _verify(ledger, mid, 1000)

    for fmt in ("jsonl", "csv"):
        path = tmp_path / f"report.{fmt}"
        with path.open("wb") as out:
            sink = _BlockCountingSink(out)
            written = await ledger.export_report(mid, sink, fmt)

        assert written == total
        # Holding every row would keep millions of objects alive (a value per column per
        # row); streaming keeps about one 2,000-row batch: a few percent of that.
        all_rows_at_once = total * len(REPORT_COLUMNS)
        assert sink.peak_blocks < all_rows_at_once / 20, (fmt, sink.peak_blocks)
        assert sink.writes >= total // 2_000
        with path.open(encoding="utf-8", newline="") as f:
            parsed = (json.loads(line) for line in f) if fmt == "jsonl" else csv.DictReader(f)
            count = verified = 0
            previous = ""
            for row in parsed:
                if count == 0:
                    assert list(row) == list(REPORT_COLUMNS)
                assert row["key"] > previous
                previous = row["key"]
                count += 1
                verified += row["state"] == "verified"
        assert count == total
        assert verified == 1000


async def test_report_to_text_and_async_sinks_and_only_failed(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a")
    await ledger.upsert_inventory(mid, inventory_rows(10), scan_id=1)
    rows = await ledger.claim(mid, "w", [ObjectState.PENDING], 3, LEASE)
    # What the status counts as failed: failed, and changed at the source (issue 25.7).
    states = [ObjectState.FAILED, ObjectState.FAILED, ObjectState.SOURCE_CHANGED]
    await ledger.record(
        "w",
        [
            StepResult(id=r.id, state=state, last_error='quote " and, comma')
            for r, state in zip(rows, states, strict=True)
        ],
    )

    class Sink:
        def __init__(self) -> None:
            self.chunks: list[bytes] = []

        async def write(self, data: bytes, /) -> None:
            self.chunks.append(data)

    text = io.StringIO()
    sink = Sink()
    assert await ledger.export_report(mid, text, "csv") == 10
    assert await ledger.export_report(mid, sink, "jsonl", only_failed=True) == 3

    parsed_csv = list(csv.DictReader(io.StringIO(text.getvalue())))
    assert len(parsed_csv) == 10
    failed = [json.loads(line) for line in b"".join(sink.chunks).decode().splitlines()]
    assert sorted(f["state"] for f in failed) == ["failed", "failed", "source_changed"]
    assert failed[0]["last_error"] == 'quote " and, comma'
    assert {p["last_error"] for p in parsed_csv} == {"", 'quote " and, comma'}


async def test_report_rejects_unknown_format(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="unknown report format"):
        await ledger.export_report(1, io.StringIO(), "xml")  # type: ignore[arg-type]


async def test_digest_is_stable_and_matches_the_documented_encoding(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a")
    # Keys whose byte order differs from a naive locale order.
    odd = [
        dataclasses.replace(r, key=k)
        for r, k in zip(inventory_rows(4), ["b", "B", "a/é", "a/z"], strict=True)
    ]
    await ledger.upsert_inventory(mid, odd + inventory_rows(20), scan_id=1)
    await _verify(ledger, mid, 15)

    first = await ledger.verification_digest(mid)
    second = await ledger.verification_digest(mid, batch_size=3)

    assert first == second
    verified = [r async for r in ledger.iter_rows(mid, [ObjectState.VERIFIED], batch_size=4)]
    assert [r.key for r in verified] == sorted(r.key for r in verified)
    expected = DigestBuilder()
    for r in sorted(verified, key=lambda r: (r.key.encode(), r.version_id.encode())):
        expected.add(
            r.key, r.version_id, r.size, r.etag, r.target_key, r.target_etag, r.source_checksum
        )
    assert first.sha256 == expected.hexdigest()
    assert (first.objects, first.bytes) == (15, sum(r.size for r in verified))


async def test_digest_changes_when_a_verified_row_changes(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a")
    await ledger.upsert_inventory(mid, inventory_rows(10), scan_id=1)
    await _verify(ledger, mid, 10)
    before = await ledger.verification_digest(mid)
    target = await ledger.claim(mid, "v", [ObjectState.VERIFIED], 1, LEASE)

    await ledger.record(
        "v", [StepResult(id=target[0].id, state=ObjectState.VERIFIED, target_etag="other")]
    )
    after_etag = await ledger.verification_digest(mid)
    await ledger.upsert_inventory(
        mid, [dataclasses.replace(inventory_rows(1)[0], etag="changed")], scan_id=2
    )
    after_rescan = await ledger.verification_digest(mid)

    assert len({before.sha256, after_etag.sha256, after_rescan.sha256}) == 3
    assert after_etag.objects == 10
    assert after_rescan.objects == 9


async def test_digest_of_a_migration_without_verified_rows_is_the_empty_digest(
    ledger: Ledger,
) -> None:
    mid = await ledger.ensure_migration("ns/a")
    await ledger.upsert_inventory(mid, inventory_rows(3), scan_id=1)

    digest = await ledger.verification_digest(mid)

    assert (digest.objects, digest.bytes) == (0, 0)
    assert digest.sha256 == hashlib.sha256(b"objmig-verification-v1\n").hexdigest()


async def test_iter_rows_streams_every_row_in_key_order_with_state_filter(
    ledger: Ledger,
) -> None:
    mid = await ledger.ensure_migration("ns/a")
    base = inventory_rows(25)
    versions = [dataclasses.replace(base[0], version_id=v) for v in ("v1", "v2")]
    await ledger.upsert_inventory(mid, base + versions, scan_id=1)
    await _verify(ledger, mid, 5)

    everything = [r async for r in ledger.iter_rows(mid, batch_size=4)]
    verified = [r async for r in ledger.iter_rows(mid, [ObjectState.VERIFIED], batch_size=2)]

    assert len(everything) == 27
    identities = [(r.key, r.version_id) for r in everything]
    assert identities == sorted(identities)
    assert len(set(identities)) == 27
    assert len(verified) == 5
    assert all(r.state is ObjectState.VERIFIED for r in verified)


async def test_abandoned_iteration_does_not_hold_a_connection(ledger: Ledger) -> None:
    mid = await ledger.ensure_migration("ns/a")
    await ledger.upsert_inventory(mid, inventory_rows(50), scan_id=1)

    async with contextlib.aclosing(ledger.iter_rows(mid, batch_size=10)) as rows:
        async for _ in rows:
            break

    # Every pooled connection can still be acquired at once.
    size = ledger.pool.get_max_size()
    conns = [await ledger.pool.acquire(timeout=5) for _ in range(size)]
    for conn in conns:
        await ledger.pool.release(conn)
