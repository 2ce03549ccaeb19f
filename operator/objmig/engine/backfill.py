"""The backfill: each object's attributes written into the application's own table.

A batch is written in one transaction of the application's database and recorded in the
ledger before and after, so that a crash anywhere leaves what the next attempt needs to
finish without writing a row twice, and a rollback can take back exactly what was written:

1. lock the batch's rows (``SELECT ... FOR UPDATE``) and read each column: its value, and
   whether it holds the value to write (or, recovering, the planned and the earlier one);
2. plan: every column that is empty (or any, with ``overwrite``) and does not hold the new
   value yet gets ``[before, after]``. An object whose ledger record still holds the plan
   of an attempt that stopped is recovered from it: a column holding the planned value was
   written then, one holding the value from before was not (it is written now), anything
   else was changed by the application since and is left alone (a conflict);
3. record the plans in the ledger (`Ledger.plan_backfill`), still holding the locks;
4. write (per column: compare-and-swap) and commit;
5. record each object's outcome (`Ledger.finish_backfill`): ``written`` (with what),
   ``alreadySet``, ``noRow`` or ``conflict``.

A rollback reads the records back and puts ``before`` where ``after`` still stands, with
the same two statements. Values travel as text and the server casts them to each column's
type, which `BackfillTable.open` learns (and checks against each attribute) first.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from objmig.api.conditions import Reason
from objmig.api.migration import BackfillSpec, ObjectMigrationSpec
from objmig.engine.appdb import (
    Connection,
    Table,
    answer,
    batches,
    connection,
    describe_table,
    quote_identifier,
)
from objmig.engine.pipeline.outcomes import ApplicationError
from objmig.ledger import Ledger, ObjectRow, ObjectState

Outcome = Literal["written", "alreadySet", "noRow", "conflict"]
#: What the ledger keeps per column: [value before, value written], as text.
Change = list[str | None]

#: A value of each attribute's kind, to learn at the start whether its column can hold it.
_EXAMPLES = {
    "hash": "d41d8cd98f00b204e9800998ecf8427e",
    "size": "1024",
    "checksum": "sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
    "versionId": "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY+MTRCxf3vjVBH40Nr8X8gdRQBpUMLUo",
}
_TIME_EXAMPLE = datetime(2024, 1, 1, tzinfo=UTC)


def attribute_text(
    attribute: str, value: Any, last_modified_as: Literal["epochMillis", "timestamp"]
) -> str | None:
    """An attribute's value as the text the server casts into its column (None: unknown)."""
    if value is None or value == "":
        return None
    if attribute == "lastModified":
        assert isinstance(value, datetime)
        if last_modified_as == "epochMillis":
            return str(int(value.timestamp() * 1000))
        return value.astimezone(UTC).isoformat()
    return str(value)


def object_attributes(row: ObjectRow) -> dict[str, Any]:
    """What the backfill writes of one object: the object as verified, that is after a copy
    the target's attributes, and with copy.mode none what the look saw of the object where
    it is (both are recorded as the row's target)."""
    return {
        "hash": row.target_etag,
        "lastModified": row.target_last_modified,
        "size": row.size,
        "checksum": row.target_checksum,
        "versionId": row.target_version_id,
    }


@dataclass(frozen=True)
class BackfillItem:
    """One object to backfill: its ledger row, where its row is found, what goes there."""

    id: int
    match: str | None  # the key column's value; None: the object has no row id
    values: dict[str, str]  # column -> text of the value to write (known values only)
    prior: Mapping[str, Any] | None  # the ledger's record of an earlier attempt

    @property
    def earlier_plan(self) -> Mapping[str, Change]:
        """What an attempt that stopped had planned (empty when none stopped)."""
        plan: Mapping[str, Change] = (self.prior or {}).get("plan") or {}
        return plan


def backfill_items(spec: ObjectMigrationSpec, rows: Iterable[ObjectRow]) -> list[BackfillItem]:
    """The backfill's view of rows: where each object's row is found and what goes there."""
    action = spec.backfill
    assert action is not None
    columns = action.columns.by_attribute()
    items = []
    for row in rows:
        attributes = object_attributes(row)
        values = {}
        for attribute, column in columns.items():
            text = attribute_text(attribute, attributes[attribute], action.last_modified_as)
            if text is not None:
                values[column] = text
        match = row.key if action.match == "key" else row.row_id
        items.append(BackfillItem(row.id, match, values, row.backfill))
    return items


def _side(changes: Mapping[str, Change], which: int) -> dict[str, str | None]:
    """Each column's value from before (``which`` 0) or the one written (1)."""
    return {column: change[which] for column, change in changes.items()}


@dataclass(frozen=True)
class Seen:
    """One locked row: per column its value as text, and whether it equals the value
    asked about first (`after`) and second (`before`)."""

    values: list[str | None]
    after: list[bool]
    before: list[bool]


def plan_columns(
    columns: Sequence[str], overwrite: bool, item: BackfillItem, seen: Seen
) -> tuple[dict[str, Change], dict[str, Change], Outcome]:
    """What to do with one object's row, as it was found locked: (columns to write now,
    columns an earlier attempt wrote, the outcome). Pure; see the module's steps 2 and 5.
    """
    plan: dict[str, Change] = {}
    written: dict[str, Change] = {}
    conflict = False
    earlier = item.earlier_plan
    for index, column in enumerate(columns):
        if column in earlier:
            if seen.after[index]:
                written[column] = list(earlier[column])
            elif seen.before[index]:
                plan[column] = list(earlier[column])
            else:
                conflict = True  # the application wrote it since: leave it alone
            continue
        after = item.values.get(column)
        if after is None or seen.after[index]:
            continue
        if seen.values[index] is None or overwrite:
            plan[column] = [seen.values[index], after]
    if plan or written:
        return plan, written, "written"
    return plan, written, "conflict" if conflict else "alreadySet"


@dataclass(frozen=True)
class RevertResult:
    """What a rollback of the backfill did."""

    restored: int = 0  # rows whose written values were put back
    already: int = 0  # rows found as they were before (an earlier attempt put them back)
    conflicts: int = 0  # rows the application changed since: left alone

    def __add__(self, other: RevertResult) -> RevertResult:
        return RevertResult(
            self.restored + other.restored,
            self.already + other.already,
            self.conflicts + other.conflicts,
        )


class BackfillTable:
    """The spec's backfill bound to the application's table, with its two statements."""

    def __init__(self, action: BackfillSpec, table: Table) -> None:
        self.action = action
        self._columns = list(action.columns.by_attribute().values())
        self._table = table
        self._read = self._read_sql()
        self._write = self._write_sql()

    @classmethod
    async def open(cls, action: BackfillSpec, conn: Connection) -> BackfillTable:
        """Learn the table's column types and check that each attribute fits its column.

        Raises `ApplicationError` (``BackfillInvalid``) naming the field otherwise, before
        anything is written.
        """
        attributes = action.columns.by_attribute()
        table = await describe_table(
            conn,
            action.table,
            [(action.key_column, "spec.backfill.keyColumn")]
            + [(column, f"spec.backfill.columns.{a}") for a, column in attributes.items()],
        )
        for attribute, column in attributes.items():
            example = _EXAMPLES.get(attribute) or attribute_text(
                attribute, _TIME_EXAMPLE, action.last_modified_as
            )
            column_type = table.types[column]
            try:
                await conn.fetchval(f"SELECT $1::text::{column_type}", example)
            except Exception as error:
                how = f" (lastModifiedAs {action.last_modified_as})"
                raise ApplicationError(
                    Reason.BACKFILL_INVALID,
                    f"spec.backfill.columns.{attribute}: column {column!r} is {column_type}, "
                    f"which cannot hold {example!r}{how if attribute == 'lastModified' else ''}"
                    f": {str(error).splitlines()[0]}",
                ) from None
        return cls(action, table)

    # -- the statements ---------------------------------------------------------------------

    def _key(self) -> tuple[str, str]:
        column = self.action.key_column
        return quote_identifier(column), self._table.types[column]

    def _read_sql(self) -> str:
        """Lock the rows and read each column: as text, equal to $after, equal to $before."""
        key, key_type = self._key()
        selected, names, params = ["w.ord"], ["k"], ["$1::text[]"]
        for index, column in enumerate(self._columns):
            quoted, cast = quote_identifier(column), self._table.types[column]
            selected += [
                f"t.{quoted}::text AS v{index}",
                f"t.{quoted} IS NOT DISTINCT FROM w.a{index}::{cast} AS a{index}",
                f"t.{quoted} IS NOT DISTINCT FROM w.b{index}::{cast} AS b{index}",
            ]
            names += [f"a{index}", f"b{index}"]
            params += [f"${len(params) + 1}::text[]", f"${len(params) + 2}::text[]"]
        # Identifiers are validated by the API model and quoted; types are the server's own.
        return (
            f"SELECT {', '.join(selected)} FROM {self._table.quoted} t "  # noqa: S608
            f"JOIN unnest({', '.join(params)}) WITH ORDINALITY AS w({', '.join(names)}, ord) "
            f"ON t.{key} = w.k::{key_type} FOR UPDATE OF t"
        )

    def _write_sql(self) -> str:
        """Per flagged column: where it still holds $expected, set $value (a CAS)."""
        key, key_type = self._key()
        sets, names, params = [], ["k"], ["$1::text[]"]
        for index, column in enumerate(self._columns):
            quoted, cast = quote_identifier(column), self._table.types[column]
            sets.append(
                f"{quoted} = CASE WHEN w.p{index} AND t.{quoted} IS NOT DISTINCT FROM "
                f"w.e{index}::{cast} THEN w.n{index}::{cast} ELSE t.{quoted} END"
            )
            names += [f"p{index}", f"e{index}", f"n{index}"]
            n = len(params)
            params += [f"${n + 1}::bool[]", f"${n + 2}::text[]", f"${n + 3}::text[]"]
        return (
            f"UPDATE {self._table.quoted} t SET {', '.join(sets)} "  # noqa: S608
            f"FROM unnest({', '.join(params)}) AS w({', '.join(names)}) "
            f"WHERE t.{key} = w.k::{key_type}"
        )

    async def _lock(
        self,
        conn: Connection,
        matches: Sequence[str],
        after: Sequence[Mapping[str, str | None]],
        before: Sequence[Mapping[str, str | None]],
    ) -> dict[int, Seen]:
        """Lock the rows of ``matches``; what each holds, by position in ``matches``."""
        arrays: list[list[str | None]] = [list(matches)]
        for column in self._columns:
            arrays.append([a.get(column) for a in after])
            arrays.append([b.get(column) for b in before])
        count = len(self._columns)
        found: dict[int, Seen] = {}
        for record in await conn.fetch(self._read, *arrays):
            found[int(record["ord"]) - 1] = Seen(
                [record[f"v{i}"] for i in range(count)],
                [bool(record[f"a{i}"]) for i in range(count)],
                [bool(record[f"b{i}"]) for i in range(count)],
            )
        return found

    async def _swap(
        self, conn: Connection, changes: Sequence[tuple[str, Mapping[str, Change]]]
    ) -> None:
        """Per row (match, {column: [expected, value]}): set value where expected stands."""
        if not changes:
            return
        arrays: list[list[Any]] = [[match for match, _ in changes]]
        for column in self._columns:
            arrays.append([column in cols for _, cols in changes])
            arrays.append([cols[column][0] if column in cols else None for _, cols in changes])
            arrays.append([cols[column][1] if column in cols else None for _, cols in changes])
        await conn.execute(self._write, *arrays)

    # -- writing ----------------------------------------------------------------------------

    async def write(
        self, conn: Connection, ledger: Ledger, owner: str | None, items: Sequence[BackfillItem]
    ) -> dict[int, dict[str, Any]]:
        """Backfill one batch in one transaction; each object's outcome record, by id.

        ``owner``: only objects whose rows this worker still holds are written (None: no
        leases, as at cutover); the others are left out of the result.
        """
        records: dict[int, dict[str, Any]] = {
            item.id: {"outcome": "noRow"} for item in items if item.match is None
        }
        reachable = [item for item in items if item.match is not None]
        plans: dict[int, dict[str, Change]] = {}
        transaction = conn.transaction()
        await answer(transaction.start())
        try:
            # Recovering from a stopped attempt, ask whether its planned values or the
            # earlier ones stand.
            found = await answer(
                self._lock(
                    conn,
                    [item.match or "" for item in reachable],
                    [item.values | _side(item.earlier_plan, 1) for item in reachable],
                    [_side(item.earlier_plan, 0) for item in reachable],
                )
            )
            for position, item in enumerate(reachable):
                seen = found.get(position)
                if seen is None:
                    records[item.id] = {"outcome": "noRow"}
                    continue
                plan, written, outcome = plan_columns(
                    self._columns, self.action.overwrite, item, seen
                )
                if plan:
                    plans[item.id] = plan
                records[item.id] = {"outcome": outcome, "written": written | plan}
            held = await ledger.plan_backfill(owner, plans)
            await answer(
                self._swap(
                    conn,
                    [(item.match or "", plans[item.id]) for item in reachable if item.id in held],
                )
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await transaction.rollback()
            raise
        await answer(transaction.commit())
        done = {i: r for i, r in records.items() if i in held or i not in plans}
        kept = await ledger.finish_backfill(owner, done)
        return {i: r for i, r in done.items() if i in kept}

    # -- taking back ------------------------------------------------------------------------

    async def revert(
        self, conn: Connection, records: Sequence[tuple[str | None, Mapping[str, Any]]]
    ) -> RevertResult:
        """Put back what each record says was written (or planned when a stop came), where
        the written value still stands; ``records`` are (match, the ledger's record)."""
        wanted = [
            (match, dict(record.get("written") or record.get("plan") or {}))
            for match, record in records
            if match is not None
        ]
        wanted = [(match, cols) for match, cols in wanted if cols]
        restored = already = conflicts = 0
        async with conn.transaction():
            found = await self._lock(
                conn,
                [match or "" for match, _ in wanted],
                [_side(cols, 1) for _, cols in wanted],
                [_side(cols, 0) for _, cols in wanted],
            )
            changes: list[tuple[str, dict[str, Change]]] = []
            for position, (match, cols) in enumerate(wanted):
                seen = found.get(position)
                if seen is None:
                    already += 1  # the application's row is gone: nothing of ours stands
                    continue
                back: dict[str, Change] = {}
                clash = False
                for index, column in enumerate(self._columns):
                    if column not in cols:
                        continue
                    before, after = cols[column]
                    if seen.after[index]:
                        back[column] = [after, before]
                    elif not seen.before[index]:
                        clash = True
                if back:
                    changes.append((match or "", back))
                    restored += 1
                elif clash:
                    conflicts += 1
                else:
                    already += 1
            await self._swap(conn, changes)
        return RevertResult(restored=restored, already=already, conflicts=conflicts)


# -- at cutover, and on rollback ------------------------------------------------------------


@dataclass(frozen=True)
class BackfillTotals:
    """How many objects ended each way in one pass of the backfill."""

    written: int = 0
    already_set: int = 0
    no_row: int = 0
    conflicts: int = 0

    def add(self, records: Iterable[Mapping[str, Any]]) -> BackfillTotals:
        outcomes = [record.get("outcome") for record in records]
        return BackfillTotals(
            self.written + outcomes.count("written"),
            self.already_set + outcomes.count("alreadySet"),
            self.no_row + outcomes.count("noRow"),
            self.conflicts + outcomes.count("conflict"),
        )


async def backfill_verified(
    ledger: Ledger, migration_id: int, spec: ObjectMigrationSpec, dsn: str
) -> BackfillTotals:
    """Backfill every verified object not backfilled yet: the cutover's pass.

    After a copy this writes the target's attributes, as the applications are pointed at
    the target; with copy.mode none the workers did it object by object already, and this
    finds what they did not (objects verified before a rollback took their values back).
    """
    action = spec.backfill
    assert action is not None
    totals = BackfillTotals()
    async with connection(dsn) as conn:
        table = await BackfillTable.open(action, conn)
        due = _not_backfilled(ledger.iter_rows(migration_id, [ObjectState.VERIFIED]))
        async for batch in batches(due, action.batch_size):
            items = backfill_items(spec, batch)
            totals = totals.add((await table.write(conn, ledger, None, items)).values())
    return totals


async def _not_backfilled(rows: AsyncIterator[ObjectRow]) -> AsyncIterator[ObjectRow]:
    async for row in rows:
        if row.backfilled_at is None:
            yield row


async def revert_backfill(
    ledger: Ledger, migration_id: int, spec: ObjectMigrationSpec, dsn: str
) -> RevertResult:
    """Take back what the backfill wrote (as the ledger records it), and forget the
    records: the rollback's pass. Values the application changed since are left alone."""
    action = spec.backfill
    assert action is not None
    result = RevertResult()
    async with connection(dsn) as conn:
        table = await BackfillTable.open(action, conn)
        async for page in ledger.backfill_records(migration_id):
            for start in range(0, len(page), action.batch_size):
                chunk = page[start : start + action.batch_size]
                matches = [r.key if action.match == "key" else r.row_id for r in chunk]
                result += await table.revert(
                    conn, [(m, r.backfill) for m, r in zip(matches, chunk, strict=True)]
                )
                await ledger.forget_backfill([r.id for r in chunk])
    return result
