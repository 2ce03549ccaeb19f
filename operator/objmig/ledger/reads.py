"""Reading the ledger: single rows, counts, the status window, iteration and reports.

Owns the read-side SQL (including the folding of ``object_count_deltas`` that ``counts``
does when they pile up), the streaming of rows for reports and the verification digest.
"""

from __future__ import annotations

import io
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from inspect import iscoroutinefunction
from typing import IO, Literal, Protocol, cast

import asyncpg

from objmig.ledger.base import _COLUMNS, LedgerBase
from objmig.ledger.models import (
    FAILURE_STATES,
    ContentCounts,
    Counts,
    Digest,
    ObjectRow,
    ObjectState,
    StateCount,
)
from objmig.ledger.report import (
    REPORT_COLUMNS,
    DigestBuilder,
    ReportFormat,
    encode_report_rows,
    report_header,
)
from objmig.ledger.schema import Connection

#: Rows fetched per round trip when streaming (reports, digest, iteration).
STREAM_BATCH = 2_000
#: ``counts`` folds the delta rows of a migration once there are more than this many.
COMPACT_DELTAS_AFTER = 256
#: Advisory lock class (two-int form) serialising delta compaction per migration ("omcg").
_COMPACT_LOCK_CLASS = 0x6F6D6367


class AsyncSink(Protocol):
    """Anything with ``async def write(bytes)``: an aiofiles file, an upload stream, ..."""

    async def write(self, data: bytes, /) -> object:
        """Consume one chunk of the report."""
        ...


ReportOutput = IO[bytes] | IO[str] | AsyncSink


class ReadsMixin(LedgerBase):
    """Rows, counts, windows, reports and the verification digest."""

    async def breakdown(
        self, migration_id: int, column: Literal["skip_reason", "storage_class", "error_code"]
    ) -> dict[str, StateCount]:
        """Objects and bytes grouped by one column (plans, skip and error summaries)."""
        if column not in ("skip_reason", "storage_class", "error_code"):
            # The column name is interpolated into SQL: refuse anything but the three.
            raise ValueError(f"cannot break down by {column!r}")
        records = await self._pool.fetch(
            f"""
            SELECT coalesce({column}, '') AS value, count(*) AS objects,
                   coalesce(sum(size), 0) AS bytes
            FROM objects WHERE migration_id = $1
            GROUP BY 1 ORDER BY 1
            """,  # noqa: S608 - column is one of three literals
            migration_id,
        )
        return {
            r["value"]: StateCount(objects=int(r["objects"]), bytes=int(r["bytes"]))
            for r in records
            if r["value"]
        }

    async def etag_unproven(self, migration_id: int) -> dict[str, int]:
        """Verified objects not proven by their ETag, by what proved them instead.

        Cheap where ETags prove most copies (``verify.mode: etag``): a partial index holds
        only the others."""
        records = await self._pool.fetch(
            """
            SELECT verified_by, count(*) AS objects FROM objects
            WHERE migration_id = $1 AND state = 'verified' AND verified_by <> 'etag'
            GROUP BY 1 ORDER BY 1
            """,
            migration_id,
        )
        return {str(r["verified_by"]): int(r["objects"]) for r in records}

    async def get_object(self, object_id: int) -> ObjectRow | None:
        """One row by id, or None."""
        record = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM objects WHERE id = $1",  # noqa: S608 - constants only
            object_id,
        )
        return None if record is None else ObjectRow.from_record(record)

    async def find_object(
        self, migration_id: int, key: str, version_id: str = "", *, bucket: str = ""
    ) -> ObjectRow | None:
        """One row by its identity, or None."""
        record = await self._pool.fetchrow(
            f"""
            SELECT {_COLUMNS} FROM objects
            WHERE migration_id = $1 AND bucket = $4 AND key = $2 AND version_id = $3
            """,  # noqa: S608 - only module constants are interpolated
            migration_id,
            key,
            version_id,
            bucket,
        )
        return None if record is None else ObjectRow.from_record(record)

    async def counts(self, migration_id: int) -> Counts:
        """Exact objects and bytes per state, and those in flight, from one snapshot.

        Per-state totals come from ``object_count_deltas`` (kept exact by triggers in the
        same transactions that change rows), in-flight totals from the small partial index
        of leased rows, so the cost does not grow with the number of objects. When the
        delta rows pile up they are folded afterwards (a write, serialised per migration).
        """
        async with self._pool.acquire() as conn:
            records = await conn.fetch(
                """
                SELECT 'state' AS kind, state, sum(objects)::bigint AS objects,
                       sum(bytes)::bigint AS bytes, count(*) AS n
                FROM object_count_deltas WHERE migration_id = $1
                GROUP BY state
                UNION ALL
                SELECT 'leased', state, count(*), coalesce(sum(size), 0)::bigint, 0
                FROM objects
                WHERE migration_id = $1 AND lease_owner IS NOT NULL
                  AND lease_expires_at > now()
                GROUP BY state
                """,
                migration_id,
            )
            by_state: dict[ObjectState, StateCount] = {}
            in_flight_by_state: dict[ObjectState, StateCount] = {}
            delta_rows = 0
            for r in records:
                count = StateCount(objects=int(r["objects"]), bytes=int(r["bytes"]))
                state = ObjectState(r["state"])
                if r["kind"] == "state":
                    delta_rows += int(r["n"])
                    if count.objects or count.bytes:
                        by_state[state] = count
                else:
                    in_flight_by_state[state] = count
            if delta_rows > COMPACT_DELTAS_AFTER:
                await self._compact_deltas(conn, migration_id)
        in_flight = StateCount()
        for count in in_flight_by_state.values():
            in_flight += count
        return Counts(by_state=by_state, in_flight=in_flight, in_flight_by_state=in_flight_by_state)

    async def _compact_deltas(self, conn: Connection, migration_id: int) -> None:
        # One compactor per migration at a time: a second DELETE racing the first would skip
        # rows the first deleted, yet not see the first's (uncommitted) replacement row.
        async with conn.transaction():
            locked = await conn.fetchval(
                "SELECT pg_try_advisory_xact_lock($1, ($2 % 2147483647)::int)",
                _COMPACT_LOCK_CLASS,
                migration_id,
            )
            if not locked:
                return
            await conn.execute(
                """
                WITH gone AS (
                    DELETE FROM object_count_deltas WHERE migration_id = $1
                    RETURNING bucket, state, objects, bytes
                )
                INSERT INTO object_count_deltas (migration_id, bucket, state, objects, bytes)
                SELECT $1, bucket, state, sum(objects), sum(bytes) FROM gone
                GROUP BY bucket, state
                HAVING sum(objects) <> 0 OR sum(bytes) <> 0
                """,
                migration_id,
            )

    async def bucket_counts(
        self, migration_id: int, *, limit: int | None = None
    ) -> dict[str, dict[ObjectState, StateCount]]:
        """Objects and bytes per state of each bucket (migrations of several buckets).

        From the same trigger-kept deltas as :meth:`counts`, so it costs the number of
        buckets, not of objects. ``limit``: the first buckets in name order only.
        """
        records = await self._pool.fetch(
            """
            WITH named AS (
                SELECT DISTINCT bucket FROM object_count_deltas
                WHERE migration_id = $1 ORDER BY bucket LIMIT $2
            )
            SELECT d.bucket, d.state, sum(d.objects)::bigint AS objects,
                   sum(d.bytes)::bigint AS bytes
            FROM object_count_deltas d JOIN named USING (bucket)
            WHERE d.migration_id = $1
            GROUP BY d.bucket, d.state
            """,
            migration_id,
            limit,
        )
        found: dict[str, dict[ObjectState, StateCount]] = {}
        for r in records:
            count = StateCount(objects=int(r["objects"]), bytes=int(r["bytes"]))
            if count.objects or count.bytes:
                found.setdefault(r["bucket"], {})[ObjectState(r["state"])] = count
        return found

    async def content_counts(self, migration_id: int) -> ContentCounts:
        """What deduplication saved: verified objects against the distinct content keys
        they point to (a content-addressed layout writes each content once).

        Exact by construction, whichever worker happened to write a content first; one
        pass over the migration's verified rows.
        """
        record = await self._pool.fetchrow(
            """
            SELECT count(*) AS objects, coalesce(sum(size), 0)::bigint AS bytes,
                   count(*) FILTER (WHERE first) AS contents,
                   coalesce(sum(size) FILTER (WHERE first), 0)::bigint AS content_bytes
            FROM (
                SELECT size, row_number() OVER (PARTITION BY target_key ORDER BY id) = 1 AS first
                FROM objects
                WHERE migration_id = $1 AND state IN ('verified', 'deleted')
                  AND target_key IS NOT NULL
            ) AS verified
            """,
            migration_id,
        )
        assert record is not None
        return ContentCounts(
            objects=int(record["objects"]),
            bytes=int(record["bytes"]),
            contents=int(record["contents"]),
            content_bytes=int(record["content_bytes"]),
        )

    async def window(self, migration_id: int, limit: int) -> tuple[list[ObjectRow], bool]:
        """A bounded list of rows for the resource status, and whether rows were left out.

        Order: ``failed`` and ``source_changed`` rows (most recently updated first), then
        leased rows (in flight; most recently claimed or renewed first, so a lease that
        expired without being cleared comes last), then ``skipped`` rows (each with the
        reason it was left alone), most recently updated first. Verified, deleted and
        pending rows are not listed: the counts say how many there are, and a window full
        of them would hide nothing but noise. ``truncated`` is True when more rows of those
        kinds exist than ``limit``.
        """
        if limit <= 0:
            total = await self._pool.fetchval(
                """
                SELECT EXISTS (SELECT 1 FROM objects WHERE migration_id = $1
                               AND (state IN ('failed', 'source_changed', 'skipped')
                                    OR lease_owner IS NOT NULL))
                """,
                migration_id,
            )
            return [], bool(total)
        # Each branch fetches limit + 1 so that "more than limit in total" is decidable.
        # Rows recorded in one batch share updated_at: the id breaks ties, so the window
        # (and with it the status) does not reorder between two reads of the same data.
        records = await self._pool.fetch(
            f"""
            (SELECT 0 AS part, {_COLUMNS} FROM objects
             WHERE migration_id = $1 AND state IN ('failed', 'source_changed')
             ORDER BY updated_at DESC, id DESC LIMIT $2)
            UNION ALL
            (SELECT 1, {_COLUMNS} FROM objects
             WHERE migration_id = $1 AND lease_owner IS NOT NULL
               AND state NOT IN ('failed', 'source_changed')
             ORDER BY lease_expires_at DESC, id DESC LIMIT $2)
            UNION ALL
            (SELECT 2, {_COLUMNS} FROM objects
             WHERE migration_id = $1 AND lease_owner IS NULL AND state = 'skipped'
             ORDER BY updated_at DESC, id DESC LIMIT $2)
            """,  # noqa: S608 - only module constants are interpolated
            migration_id,
            limit + 1,
        )
        # UNION ALL keeps branch order in practice but SQL does not promise it: sort by
        # part, keeping each branch's internal order (Python's sort is stable).
        ordered = sorted(records, key=lambda r: int(r["part"]))
        rows = [ObjectRow.from_record(r) for r in ordered[:limit]]
        return rows, len(ordered) > limit

    async def iter_rows(
        self,
        migration_id: int,
        states: Sequence[ObjectState] | None = None,
        *,
        batch_size: int = STREAM_BATCH,
        bucket: str | None = None,
    ) -> AsyncIterator[ObjectRow]:
        """Every row of the migration (optionally only ``states``) in (bucket, key,
        version_id) order.

        Streams by keyset pagination: each page is a short query, and no connection or
        transaction is held while the caller works on a page, so a slow consumer (cutover,
        cleanup) neither pins a pool connection nor holds back VACUUM. Rows changed during
        the iteration are seen as they are when their page is read.
        """
        state_filter = None if states is None else [str(ObjectState(s)) for s in states]
        # A row comparison over the whole index key lets each page start with an index seek.
        # The first page uses >= from ('', ''), which is below or equal to every real key.
        query = f"""
            SELECT {_COLUMNS} FROM objects
            WHERE (migration_id, bucket, key, version_id) {{op}} ($1, $6::text, $2::text, $3::text)
              AND migration_id = $1
              AND ($4::text[] IS NULL OR state = ANY($4::text[]))
              AND ($7::text IS NULL OR bucket = $7::text)
            ORDER BY migration_id, bucket, key, version_id
            LIMIT $5
        """  # noqa: S608 - only module constants are interpolated
        op, last_bucket, last_key, last_version = ">=", bucket or "", "", ""
        while True:
            records = await self._pool.fetch(
                query.format(op=op),
                migration_id,
                last_key,
                last_version,
                state_filter,
                batch_size,
                last_bucket,
                bucket,
            )
            for record in records:
                yield ObjectRow.from_record(record)
            if len(records) < batch_size:
                return
            last = records[-1]
            op, last_bucket, last_key, last_version = (
                ">",
                last["bucket"],
                last["key"],
                last["version_id"],
            )

    async def target_keys(
        self, migration_id: int, *, batch_size: int = STREAM_BATCH
    ) -> AsyncIterator[str]:
        """The distinct target keys of the verified (or since deleted at source) rows, in
        byte order: what a target directory must hold (a content-addressed layout shares
        keys between objects)."""
        query = """
            SELECT DISTINCT target_key COLLATE "C" AS k FROM objects
            WHERE migration_id = $1 AND state IN ('verified', 'deleted')
              AND target_key IS NOT NULL
            ORDER BY 1
        """
        async with aclosing(self._stream(query, (migration_id,), batch_size)) as batches:
            async for batch in batches:
                for record in batch:
                    yield record["k"]

    async def iter_groups(
        self, migration_id: int, *, batch_size: int = STREAM_BATCH
    ) -> AsyncIterator[tuple[str, list[ObjectRow]]]:
        """Each group (``group_key``) with its members in (bucket, key, version_id) order;
        rows without a group are left out. Memory holds one group."""
        query = f"""
            SELECT {_COLUMNS} FROM objects
            WHERE migration_id = $1 AND group_key IS NOT NULL
            ORDER BY group_key, bucket, key, version_id
        """  # noqa: S608 - only module constants are interpolated
        current: str | None = None
        members: list[ObjectRow] = []
        async with aclosing(self._stream(query, (migration_id,), batch_size)) as batches:
            async for batch in batches:
                for record in batch:
                    row = ObjectRow.from_record(record)
                    if row.group_key != current and members:
                        assert current is not None
                        yield current, members
                        members = []
                    current = row.group_key
                    members.append(row)
        if members and current is not None:
            yield current, members

    async def _stream(
        self, query: str, args: Sequence[object], batch_size: int
    ) -> AsyncGenerator[list[asyncpg.Record], None]:
        """Yield batches from a server-side cursor (one transaction, one connection)."""
        async with self._pool.acquire() as conn, conn.transaction(readonly=True):
            cursor = await conn.cursor(query, *args)
            while True:
                batch = await cursor.fetch(batch_size)
                if not batch:
                    return
                yield batch

    async def export_report(
        self,
        migration_id: int,
        out: ReportOutput,
        fmt: ReportFormat = "jsonl",
        *,
        only_failed: bool = False,
        batch_size: int = STREAM_BATCH,
    ) -> int:
        """Stream the per-object report of a migration to ``out``; returns rows written.

        ``out`` is a binary file-like object, a text file-like object (an ``io.TextIOBase``:
        ``open(..., "w")``, ``sys.stdout``, ``StringIO``) or an :class:`AsyncSink`. Rows come
        from a server-side cursor in batches, in (key, version_id) order, so memory stays
        bounded by the batch whatever the migration's size. ``only_failed`` keeps the rows
        the status counts as failed: ``failed`` and ``source_changed`` (both hold the
        cutover back). Formats: see :func:`objmig.ledger.report.encode_report_rows`.
        """
        if fmt not in ("jsonl", "csv"):
            raise ValueError(f"unknown report format {fmt!r}: use 'jsonl' or 'csv'")
        write = _writer(out)
        header = report_header(fmt)
        if header:
            await write(header)
        written = 0
        query = f"""
            SELECT {", ".join(REPORT_COLUMNS)} FROM objects
            WHERE migration_id = $1 AND ($2::text[] IS NULL OR state = ANY($2::text[]))
            ORDER BY bucket, key, version_id
        """  # noqa: S608 - only module constants are interpolated
        states = [s.value for s in FAILURE_STATES] if only_failed else None
        async with aclosing(self._stream(query, (migration_id, states), batch_size)) as batches:
            async for batch in batches:
                await write(encode_report_rows(batch, fmt))
                written += len(batch)
        return written

    async def verification_digest(
        self, migration_id: int, *, batch_size: int = STREAM_BATCH
    ) -> Digest:
        """The digest over the verified rows, which a cleanup approval must quote.

        SHA-256 over, in order, a fixed header and one length-prefixed record per
        ``verified`` row in ascending (key, version_id) byte order. Exact encoding::

            input  = b"objmig-verification-v1\\n" || record(row_1) || record(row_2) || ...
            record = field(key) || field(version_id) || field(size) || field(etag)
                     || field(target_key) || field(target_etag) || field(source_checksum)
            field(v) = uint32_big_endian(len(b)) || b
                       where b = UTF-8 of v, size as decimal ASCII, NULL as b""

        Returned as lowercase hex, with the number of rows and their total size. Any change
        to a verified row's listed fields, or a row entering or leaving ``verified``, changes
        the digest. (``objmig.ledger.report.DigestBuilder`` implements the encoding.)

        A migration of several buckets (rows with a bucket) uses version 2: the header
        ``objmig-verification-v2``, rows in (bucket, key, version_id) order, and
        ``field(bucket)`` first in each record. Its ``Digest.buckets`` holds one version 2
        digest per bucket, over that bucket's rows alone: what a cleanup of one bucket
        quotes.
        """
        whole: DigestBuilder | None = None
        buckets: dict[str, DigestBuilder] = {}
        query = """
            SELECT bucket, key, version_id, size, etag, target_key, target_etag, source_checksum
            FROM objects
            WHERE migration_id = $1 AND state = 'verified'
            ORDER BY bucket, key, version_id
        """
        async with aclosing(self._stream(query, (migration_id,), batch_size)) as batches:
            async for batch in batches:
                for r in batch:
                    bucket = r["bucket"]
                    record = (
                        r["key"],
                        r["version_id"],
                        r["size"],
                        r["etag"],
                        r["target_key"],
                        r["target_etag"],
                        r["source_checksum"],
                    )
                    if whole is None:
                        whole = DigestBuilder(version=2 if bucket else 1)
                    whole.add(*record, bucket=bucket)
                    if bucket:
                        if bucket not in buckets:
                            buckets[bucket] = DigestBuilder(version=2)
                        buckets[bucket].add(*record, bucket=bucket)
        if whole is None:
            whole = DigestBuilder()
        return Digest(
            objects=whole.objects,
            bytes=whole.bytes,
            sha256=whole.hexdigest(),
            buckets={
                name: Digest(objects=b.objects, bytes=b.bytes, sha256=b.hexdigest())
                for name, b in buckets.items()
            },
        )


def _writer(out: ReportOutput) -> Callable[[str], Awaitable[None]]:
    """An ``async write(str)`` for any supported report output."""
    write = out.write
    if iscoroutinefunction(write):
        sink = cast(AsyncSink, out)

        async def write_async(text: str) -> None:
            await sink.write(text.encode("utf-8"))

        return write_async
    if isinstance(out, io.TextIOBase):
        text_out = cast(IO[str], out)

        async def write_text(text: str) -> None:
            text_out.write(text)

        return write_text
    binary_out = cast(IO[bytes], out)

    async def write_binary(text: str) -> None:
        binary_out.write(text.encode("utf-8"))

    return write_binary
