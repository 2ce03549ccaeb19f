"""The work queue: leases on object rows and the results written under them.

Owns ``claim`` (and its SQL, whose expressions must match the claim index), ``heartbeat``,
``release``, ``record`` (and its SQL), the lease housekeeping (``return_expired_leases``,
``lease_owners``, ``expire_leases``) and the bulk state changes that end leases
(``requeue``, ``fail_target_collisions``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from objmig.ledger.base import _O_COLUMNS, LedgerBase, _affected
from objmig.ledger.models import ACTIVE_STATES, ObjectRow, ObjectState, StepResult
from objmig.ledger.outage import LedgerWait
from objmig.ledger.schema import Connection

# The claim index orders on this exact expression; queries must spell it identically.
_NOT_BEFORE = "COALESCE(not_before, '-infinity'::timestamptz)"

#: Sorts before any real not_before, as NULL does in the claim index.
_NEVER = datetime.min.replace(tzinfo=UTC)

#: A lease that ended without a result was an attempt all the same (its worker was killed,
#: or cut off): it counts. A restore poll is no attempt at the object.
_INTERRUPTED = "CASE WHEN state = 'restoring' THEN 0 ELSE 1 END"


#: Optional StepResult fields: (name, SQL type, "keep" = None keeps the stored value, or
#: "clear" = None stores NULL because the field describes only the latest step).
_RECORD_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("target_key", "text", "keep"),
    ("target_etag", "text", "keep"),
    ("target_version_id", "text", "keep"),
    ("source_checksum", "text", "keep"),
    ("target_checksum", "text", "keep"),
    ("restore_requested_at", "timestamptz", "keep"),
    ("target_last_modified", "timestamptz", "keep"),
    ("source_metadata", "jsonb", "keep"),
    ("last_error", "text", "clear"),
    ("error_code", "text", "clear"),
    ("skip_reason", "text", "clear"),
    ("not_before", "timestamptz", "clear"),
    ("verified_by", "text", "clear"),
    ("degraded", "text", "clear"),
    ("not_preserved", "text", "clear"),
)


@functools.cache
def _record_sql(
    present: tuple[str, ...],
    increments: bool,
    hooks: bool = False,
    only_while_dry_run: bool = False,
) -> str:
    """The UPDATE ... FROM unnest(...) of ``Ledger.record`` for one shape of batch.

    ``present`` names the optional fields sent as arrays (in ``_RECORD_FIELDS`` order);
    at most 2**16 shapes exist and a worker uses a handful, so caching the text keeps
    asyncpg's prepared-statement cache effective. ``increments`` and ``hooks``: the
    batch sends the ``increment_attempts`` and ``hook_done`` flags. ``only_while_dry_run``:
    see ``record``.
    """
    params = ["$2::bigint[]", "$3::text[]"]
    names = ["id", "state"]
    kinds = {name: (sql_type, mode) for name, sql_type, mode in _RECORD_FIELDS}
    for name in present:
        params.append(f"${len(params) + 2}::{kinds[name][0]}[]")
        names.append(name)
    if increments:
        params.append(f"${len(params) + 2}::bool[]")
        names.append("increment_attempts")
    if hooks:
        params.append(f"${len(params) + 2}::bool[]")
        names.append("hook_done")
    sets = ["state = r.state"]
    for name, _, mode in _RECORD_FIELDS:
        if name in present:
            sets.append(
                f"{name} = COALESCE(r.{name}, o.{name})" if mode == "keep" else f"{name} = r.{name}"
            )
        elif mode == "clear":
            sets.append(f"{name} = NULL")
    if increments:
        sets.append("attempts = o.attempts + CASE WHEN r.increment_attempts THEN 1 ELSE 0 END")
    if hooks:
        sets.append("hook_done_at = CASE WHEN r.hook_done THEN now() ELSE o.hook_done_at END")
    sets += [
        # A row finishing its application steps was verified when it entered `finishing`.
        "verified_at = CASE WHEN r.state IN ('verified', 'finishing')"
        " AND o.state <> 'finishing' THEN now() ELSE o.verified_at END",
        "deleted_at = CASE WHEN r.state = 'deleted' THEN now() ELSE o.deleted_at END",
        "lease_owner = NULL",
        "lease_expires_at = NULL",
        "updated_at = now()",
    ]
    # The owner travels as a column of r, not as a filter on objects: statistics taken while
    # nothing was leased make "lease_owner = $1" look like one row, and the planner then
    # scans the whole table and re-runs unnest() for each leased row it finds (quadratic in
    # the batch; 5x slower records once a ledger had been analysed). As a join condition it
    # narrows nothing, so rows are found by id: through the primary key, or on a small
    # table by one hash join. IS NOT DISTINCT FROM rather than "=", so the leased-rows
    # partial index, whose dead entries linger until VACUUM, is never the way in.
    params.append("array_fill($1::text, ARRAY[cardinality($2::bigint[])])")
    names.append("owner")
    set_list = ",\n    ".join(sets)
    dry_run = (
        "\n  AND (SELECT (m.state->>'dryRun')::boolean FROM migrations m"
        " WHERE m.id = o.migration_id)"
        if only_while_dry_run
        else ""
    )
    return (
        f"UPDATE objects o SET\n    {set_list}\n"
        f"FROM unnest({', '.join(params)}) AS r({', '.join(names)})\n"
        f"WHERE o.id = r.id AND o.lease_owner IS NOT DISTINCT FROM r.owner{dry_run}"
    )


#: A version of a key is claimable once no older version of it is still to be done: the
#: scan lists versions newest first (a lower id), and ties in (whole-second) last-modified
#: fall back to that order.
_OLDER_VERSIONS_DONE = f"""
      AND NOT EXISTS (
          SELECT 1 FROM objects older
          WHERE older.migration_id = objects.migration_id AND older.bucket = objects.bucket
            AND older.key = objects.key
            AND (older.last_modified < objects.last_modified
                 OR (older.last_modified = objects.last_modified AND older.id > objects.id))
            AND older.state IN ({", ".join(f"'{s.value}'" for s in ACTIVE_STATES)})
      )"""  # noqa: S608 - only module constants are interpolated


@functools.cache
def _claim_sql(after_hint: bool, versions_in_order: bool = False) -> str:
    """The claim statement (see ``Ledger.claim``).

    With ``after_hint`` the scan of free rows starts after ($6 = not_before or NULL,
    $7 = id). Two statements rather than one with an OR, so that each keeps an index
    condition under a generic plan. ``versions_in_order``: see ``_OLDER_VERSIONS_DONE``.
    """
    after = (
        f"AND ({_NOT_BEFORE}, id) > (COALESCE($6::timestamptz, '-infinity'), $7::bigint)"
        if after_hint
        else ""
    )
    if versions_in_order:
        after += _OLDER_VERSIONS_DONE
    return f"""
WITH expired AS (
    -- Leases whose owner stopped renewing: the small leased index.
    SELECT id FROM objects
    WHERE migration_id = $1 AND lease_owner IS NOT NULL
      AND lease_expires_at <= now()
      AND state = $2 AND {_NOT_BEFORE} <= now()
    ORDER BY lease_expires_at, id
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), free AS (
    -- Unleased rows: the claim index holds only these, so concurrent claimers do not wade
    -- through each other's leased rows.
    SELECT id FROM objects
    WHERE migration_id = $1 AND state = $2 AND lease_owner IS NULL
      AND {_NOT_BEFORE} <= now() {after}
    ORDER BY {_NOT_BEFORE}, id
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), picked AS (
    -- Evaluated lazily: "free" is not read once "expired" filled the batch.
    (SELECT id, false AS swept FROM expired)
    UNION ALL
    (SELECT id, true FROM free)
    LIMIT $3
)
UPDATE objects o
SET lease_owner = $4, lease_expires_at = now() + $5::interval,
    -- A row taken from an expired lease: that lease's attempt was interrupted.
    attempts = o.attempts + CASE WHEN picked.swept THEN 0 ELSE {_INTERRUPTED} END
FROM picked
WHERE o.id = picked.id
RETURNING picked.swept, {_O_COLUMNS}
"""  # noqa: S608 - only module constants are interpolated


def _within(
    pairs: list[tuple[ObjectRow, bool]], budget: int | None, *, first: bool
) -> tuple[list[tuple[ObjectRow, bool]], list[int]]:
    """The claimed rows (in claim order) that fit ``budget`` bytes, and the ids beyond it.

    ``first``: nothing was claimed before, so the first row is kept whatever its size.
    """
    if budget is None:
        return pairs, []
    kept: list[tuple[ObjectRow, bool]] = []
    for index, (row, swept) in enumerate(pairs):
        if row.size > budget and not (first and not kept):
            return kept, [other.id for other, _ in pairs[index:]]
        kept.append((row, swept))
        budget -= row.size
    return kept, []


async def _give_back(conn: Connection, owner: str, ids: list[int]) -> None:
    """End leases just taken on rows past a claim's byte budget (nothing else changed)."""
    await conn.execute(
        "UPDATE objects SET lease_owner = NULL, lease_expires_at = NULL "
        "WHERE id = ANY($1::bigint[]) AND lease_owner = $2",
        ids,
        owner,
    )


class LeasesMixin(LedgerBase):
    """Claiming, renewing and releasing rows, and recording step results."""

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record], wait: LedgerWait | None = None) -> None:
        super().__init__(pool, wait)
        # claim() sweeps each (migration, state) queue from where its last claim ended:
        # the rows before that point were claimed, and their dead index entries would
        # otherwise be stepped over by every claim until VACUUM removes them.
        self._claim_hints: dict[tuple[int, str], tuple[datetime | None, int]] = {}

    async def claim(
        self,
        migration_id: int,
        owner: str,
        states: Sequence[ObjectState],
        limit: int,
        lease: timedelta,
        *,
        versions_in_order: bool = False,
        max_bytes: int | None = None,
    ) -> list[ObjectRow]:
        """Lease up to ``limit`` claimable rows in ``states`` to ``owner``.

        Claimable: in one of ``states``, ``not_before`` NULL or past, and no live lease (an
        expired lease counts as free even if ``return_expired_leases`` never ran). Rows
        locked by a concurrent claimer are skipped (``FOR UPDATE SKIP LOCKED``), so
        concurrent claimers never receive the same row. Order: ``states`` in the given
        priority; within a state, rows whose lease expired, then unleased rows by (time they
        became eligible, id). Unleased rows are taken as a sweep: each claim continues after
        the last row this Ledger claimed in that state, and starts again from the front
        when the sweep reaches the end (so a row released behind the sweep waits at most one
        pass). Only the lease columns change, and ``attempts`` of a row taken from an expired
        lease (an interrupted attempt); a finished attempt is counted by ``record``.

        ``owner`` must be unique per worker incarnation (e.g. pod name plus a random
        suffix): a restarted worker must not be able to record results for leases its
        previous life held.

        ``versions_in_order`` (a migration of every version of each key): a version is
        claimable only once every older version of its key is done, so that versions
        reach their one target key oldest first and never two at once.

        ``max_bytes`` bounds the claim by size as well as by count: rows are taken in order
        while their sizes add up to at most ``max_bytes`` (the first row always), so one
        worker does not take every large object of a run while others idle.
        """
        if limit <= 0:
            return []
        claimed: list[ObjectRow] = []
        budget = max_bytes
        full = False  # the byte budget is spent: no state is claimed from any more
        async with self._pool.acquire() as conn:
            for state in dict.fromkeys(states):  # de-duplicated, order kept
                if full:
                    break
                value = str(ObjectState(state))
                hint_key = (migration_id, value)
                hint = self._claim_hints.get(hint_key)
                while (remaining := limit - len(claimed)) > 0:
                    args: tuple[object, ...] = (migration_id, value, remaining, owner, lease)
                    if hint is not None:
                        args += hint
                    records = await conn.fetch(
                        _claim_sql(hint is not None, versions_in_order), *args
                    )
                    # RETURNING has no order; restore the claim order.
                    pairs = sorted(
                        ((ObjectRow.from_record(r), bool(r["swept"])) for r in records),
                        key=lambda pair: (pair[0].not_before or _NEVER, pair[0].id),
                    )
                    pairs, surplus = _within(pairs, budget, first=not claimed)
                    if surplus:
                        await _give_back(conn, owner, surplus)
                    rows = [row for row, _ in pairs]
                    claimed.extend(rows)
                    if budget is not None:
                        budget -= sum(row.size for row in rows)
                        full = bool(surplus) or budget <= 0
                    swept = [row for row, from_sweep in pairs if from_sweep]
                    if swept:
                        # The sweep's last row: expired leases found elsewhere don't move it.
                        self._claim_hints[hint_key] = (swept[-1].not_before, swept[-1].id)
                    if full or len(rows) >= remaining or hint is None:
                        break
                    # The sweep reached the end: start again from the front once, for
                    # rows released or re-queued behind the hint.
                    hint = None
                    self._claim_hints.pop(hint_key, None)
        return claimed

    async def heartbeat(self, owner: str, ids: Sequence[int], lease: timedelta) -> set[int]:
        """Extend ``owner``'s leases on ``ids`` to now + ``lease``.

        Returns the ids still held: an id missing from the result was lost (another worker
        claimed it after our lease expired) and its work must be abandoned.
        """
        if not ids:
            return set()
        records = await self._pool.fetch(
            """
            UPDATE objects SET lease_expires_at = now() + $3::interval
            WHERE id = ANY($2::bigint[]) AND lease_owner IS NOT DISTINCT FROM $1::text
            RETURNING id
            """,
            owner,
            list(ids),
            lease,
        )
        return {int(r["id"]) for r in records}

    async def release(
        self,
        owner: str,
        ids: Sequence[int],
        not_before: datetime | None = None,
    ) -> int:
        """Give rows back without a result (e.g. on shutdown); returns how many were held.

        ``not_before`` (a datetime), when given, delays the next claim of these rows.
        """
        if not ids:
            return 0
        status = await self._pool.execute(
            """
            UPDATE objects
            SET lease_owner = NULL, lease_expires_at = NULL,
                not_before = COALESCE($3::timestamptz, not_before)
            WHERE id = ANY($2::bigint[]) AND lease_owner IS NOT DISTINCT FROM $1::text
            """,
            owner,
            list(ids),
            not_before,
        )
        return _affected(status)

    async def return_expired_leases(self, migration_id: int) -> int:
        """Clear leases that have expired; returns how many.

        Not needed for correctness (``claim`` ignores expired leases), but it makes counts
        and the status window stop showing dead workers' rows as in flight sooner.
        """
        status = await self._pool.execute(
            f"""
            UPDATE objects SET lease_owner = NULL, lease_expires_at = NULL,
                               attempts = attempts + {_INTERRUPTED}
            WHERE migration_id = $1 AND lease_owner IS NOT NULL AND lease_expires_at <= now()
            """,  # noqa: S608 - only module constants are interpolated
            migration_id,
        )
        return _affected(status)

    async def record(
        self, owner: str, results: Sequence[StepResult], *, only_while_dry_run: bool = False
    ) -> int:
        """Write step results in one round trip; returns how many were applied.

        A result applies only while ``owner`` still holds the row's lease (even an expired
        one nobody else has claimed since): once another worker has claimed the row, a late
        result from a worker that lost its lease is dropped. Applying clears the lease and
        sets ``updated_at``. See :class:`StepResult` for which fields overwrite and which
        accumulate.

        ``only_while_dry_run``: the results are a dry run's plan, which applies only while
        the migration is still a dry run (its state says ``dryRun``): a worker that started
        as one must not end rows as planned once the real run has begun. Rows not applied
        stay leased to ``owner``.
        """
        if not results:
            return 0
        # Only columns that some result sets travel as unnest() arrays: a typical batch
        # sets two or three of the ten optional fields, and every array costs encoding on
        # our side and unnesting on the server's. (list.count runs in C: cheaper than a
        # generator of "is not None" tests.) str() of an ObjectState is its value; a bad
        # plain string is refused by the table's CHECK constraint.
        arrays: list[list[Any]] = [
            [r.id for r in results],
            [str(r.state) for r in results],
        ]
        present: list[str] = []
        total = len(results)
        for name, _, _ in _RECORD_FIELDS:
            column = [getattr(r, name) for r in results]
            if column.count(None) != total:
                present.append(name)
                arrays.append(column)
        increments = [r.increment_attempts for r in results]
        has_increments = any(increments)
        if has_increments:
            arrays.append(increments)
        hooks = [r.hook_done for r in results]
        has_hooks = any(hooks)
        if has_hooks:
            arrays.append(hooks)
        sql = _record_sql(tuple(present), has_increments, has_hooks, only_while_dry_run)
        status = await self._pool.execute(sql, owner, *arrays)
        return _affected(status)

    async def fail_target_collisions(self, migration_id: int) -> int:
        """Fail every row whose target key is also another source key's; returns how many.

        A key template that drops part of the key (``{basename}``, dates) can map several
        source keys onto one target key: each copy would overwrite the one before, and
        all of them would pass as verified. Versions of one key sharing it are fine. The
        rows' leases are ended, so a worker copying one cannot record it verified.
        """
        status = await self._pool.execute(
            """
            WITH shared AS (
                SELECT target_key FROM objects
                WHERE migration_id = $1 AND state <> 'deleted'
                GROUP BY target_key HAVING count(DISTINCT (bucket, key)) > 1
            )
            UPDATE objects o
            SET state = 'failed', error_code = 'TargetKeyCollision',
                last_error = 'the key template maps other source keys onto target key '
                             || o.target_key || ' too',
                updated_at = now(), lease_owner = NULL, lease_expires_at = NULL
            FROM shared
            WHERE o.migration_id = $1 AND o.target_key = shared.target_key
              AND o.state <> 'deleted'
            """,
            migration_id,
        )
        return _affected(status)

    async def requeue(
        self,
        migration_id: int,
        states: Sequence[ObjectState],
        *,
        skip_reasons: Sequence[str] | None = None,
        keys: Sequence[str] | None = None,
    ) -> int:
        """Send rows in ``states`` back to ``pending`` with a clean slate; returns how many.

        Used when the meaning of an end state no longer holds: a dry run's plan rows when
        the real run starts (``skip_reasons`` narrows to those), or failed rows the user
        asked to retry (``keys`` narrows to those, every version of each). Leased rows are
        left alone: their worker is still on them.
        """
        status = await self._pool.execute(
            """
            UPDATE objects
            SET state = 'pending', attempts = 0, last_error = NULL, error_code = NULL,
                skip_reason = NULL, not_before = NULL, updated_at = now(),
                lease_owner = NULL, lease_expires_at = NULL
            WHERE migration_id = $1 AND state = ANY($2::text[])
              AND ($3::text[] IS NULL OR skip_reason = ANY($3::text[]))
              AND ($4::text[] IS NULL OR key = ANY($4::text[]))
              AND (lease_expires_at IS NULL OR lease_expires_at <= now())
            """,
            migration_id,
            [str(ObjectState(s)) for s in states],
            list(skip_reasons) if skip_reasons is not None else None,
            list(keys) if keys is not None else None,
        )
        return _affected(status)

    async def requeue_targets(self, migration_id: int, target_keys: Sequence[str]) -> int:
        """Send the verified rows whose copy is ``target_keys`` back to ``pending``, target
        fields cleared: the audit of a target directory found those copies gone."""
        if not target_keys:
            return 0
        status = await self._pool.execute(
            """
            UPDATE objects
            SET state = 'pending', attempts = 0, last_error = NULL, error_code = NULL,
                skip_reason = NULL, not_before = NULL, updated_at = now(),
                target_etag = NULL, target_version_id = NULL, target_checksum = NULL,
                not_preserved = NULL, verified_at = NULL, lease_owner = NULL,
                lease_expires_at = NULL
            WHERE migration_id = $1 AND state = 'verified' AND target_key = ANY($2::text[])
            """,
            migration_id,
            list(target_keys),
        )
        return _affected(status)

    async def lease_owners(self, migration_id: int) -> list[str]:
        """Owners holding live leases on the migration's rows."""
        records = await self._pool.fetch(
            """
            SELECT DISTINCT lease_owner FROM objects
            WHERE migration_id = $1 AND lease_owner IS NOT NULL AND lease_expires_at > now()
            """,
            migration_id,
        )
        return [r["lease_owner"] for r in records]

    async def expire_leases(self, migration_id: int, owners: Sequence[str]) -> int:
        """End the leases of ``owners`` now (they are known to be dead); returns how many.

        Each counts as an attempt of its object: it was interrupted."""
        status = await self._pool.execute(
            f"""
            UPDATE objects SET lease_owner = NULL, lease_expires_at = NULL,
                               attempts = attempts + {_INTERRUPTED}
            WHERE migration_id = $1 AND lease_owner = ANY($2::text[])
            """,  # noqa: S608 - only module constants are interpolated
            migration_id,
            list(owners),
        )
        return _affected(status)
