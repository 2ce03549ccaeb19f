"""Migrations and their JSON state documents (and those of cleanups).

Owns the ``migrations`` rows (create, find, list, delete) and every read or write of the
``state`` documents of migrations and cleanups: ``get_state``/``update_state``,
``start_cleanup``/``start_rollback`` (conditional marks in the migration's state) and
``get_cleanup_state``/``update_cleanup_state``. A change to the shape of those documents
belongs here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Unpack, cast

from objmig.ledger.base import LedgerBase, MigrationConflict, UnknownMigration, _affected
from objmig.ledger.models import MigrationRow
from objmig.ledger.state import (
    CleanupChanges,
    CleanupState,
    MigrationChanges,
    MigrationState,
    StoreFinding,
    encode_changes,
)


class MigrationsMixin(LedgerBase):
    """Migrations and the state documents of migrations and cleanups."""

    async def ensure_migration(self, name: str, uid: str = "") -> int:
        """Return the id of migration ``name``, creating it if needed.

        ``uid`` is the Kubernetes ``metadata.uid`` (``""`` when there is none, as in the
        CLI). An existing migration without a uid adopts the given one.

        Raises:
            MigrationConflict: ``name`` exists with a different non-empty uid, i.e. the
                resource was deleted and re-created while its ledger rows survived; the
                caller decides whether to ``delete_migration`` the old one.
        """
        row = await self._pool.fetchrow(
            """
            INSERT INTO migrations (name, uid) VALUES ($1, $2)
            ON CONFLICT (name) DO UPDATE
                SET uid = CASE WHEN migrations.uid = '' THEN EXCLUDED.uid
                               ELSE migrations.uid END
            RETURNING id, uid
            """,
            name,
            uid,
        )
        assert row is not None  # INSERT ... RETURNING always returns the row
        if uid and row["uid"] != uid:
            raise MigrationConflict(
                f"migration {name!r} already exists in the ledger for uid {row['uid']!r}, "
                f"not {uid!r}: delete the old ledger entry or use another name"
            )
        return int(row["id"])

    async def find_migration(self, name: str) -> int | None:
        """The id of migration ``name``, or None."""
        value = await self._pool.fetchval("SELECT id FROM migrations WHERE name = $1", name)
        return None if value is None else int(value)

    async def list_migrations(self) -> list[MigrationRow]:
        """All migrations, oldest first."""
        records = await self._pool.fetch(
            "SELECT id, name, uid, created_at, state FROM migrations ORDER BY id"
        )
        return [MigrationRow(**dict(r)) for r in records]

    async def delete_migration(self, migration_id: int) -> bool:
        """Delete a migration and all its rows; returns whether it existed."""
        async with self._pool.acquire() as conn, conn.transaction():
            status = await conn.execute("DELETE FROM migrations WHERE id = $1", migration_id)
            # The cascade to objects made the count trigger write deltas for this id.
            await conn.execute(
                "DELETE FROM object_count_deltas WHERE migration_id = $1", migration_id
            )
        return _affected(status) > 0

    async def get_state(self, migration_id: int) -> MigrationState:
        """Where the migration's lifecycle stands (its bookkeeping document).

        Raises:
            UnknownMigration: no such migration.
        """
        state = await self._pool.fetchval(
            "SELECT state FROM migrations WHERE id = $1", migration_id
        )
        if state is None:
            raise UnknownMigration(f"no migration with id {migration_id}")
        return MigrationState.model_validate(state)

    async def update_state(
        self, migration_id: int, **changes: Unpack[MigrationChanges]
    ) -> MigrationState:
        """Set sections of the migration's bookkeeping atomically; returns the result.

        Each section given replaces the stored one whole (``jsonb ||``); ``None`` clears it.
        Concurrent writes of different sections both land.

        Raises:
            UnknownMigration: no such migration.
        """
        state = await self._pool.fetchval(
            "UPDATE migrations SET state = state || $2::jsonb WHERE id = $1 RETURNING state",
            migration_id,
            encode_changes(MigrationState, changes),
        )
        if state is None:
            raise UnknownMigration(f"no migration with id {migration_id}")
        return MigrationState.model_validate(state)

    async def record_store_findings(
        self, migration_id: int, findings: Sequence[StoreFinding]
    ) -> None:
        """Add what the migration's stores lack (see `StoreFinding`), keyed by store and
        aspect; entries for other keys stay, so concurrent workers' findings all land."""
        if not findings:
            return
        entries = {
            f"{finding.store}/{finding.aspect}": finding.model_dump(mode="json", by_alias=True)
            for finding in findings
        }
        await self._pool.execute(
            """
            UPDATE migrations
            SET state = jsonb_set(
                state, '{storeFeatures}', coalesce(state->'storeFeatures', '{}') || $2::jsonb
            )
            WHERE id = $1
            """,
            migration_id,
            entries,
        )

    async def start_cleanup(self, migration_id: int) -> bool:
        """Record that source objects may be deleted from now on; False if not allowed.

        Allowed only while the migration is cut over, not rolled back, and no rollback has
        begun (see `start_rollback`): one statement decides between the two, so a cleanup
        and a rollback started at the same moment cannot both go ahead.
        """
        started = await self._pool.fetchval(
            """
            UPDATE migrations SET state = state || '{"cleanupStarted": true}'::jsonb
            WHERE id = $1
              AND state->'cutover'->>'at' IS NOT NULL
              AND state->'cutover'->>'rolledBackAt' IS NULL
              AND coalesce(state->>'rollbackStarted', 'false') <> 'true'
            RETURNING true
            """,
            migration_id,
        )
        return bool(started)

    async def start_rollback(self, migration_id: int) -> bool:
        """Record that the cutover is being reverted; False once a cleanup has started.

        The mark stays until the rollback finishes (a half-done rollback keeps cleanups
        out, see `start_cleanup`); clear it with ``update_state(id, rollback_started=False)``.
        """
        started = await self._pool.fetchval(
            """
            UPDATE migrations SET state = state || '{"rollbackStarted": true}'::jsonb
            WHERE id = $1 AND coalesce(state->>'cleanupStarted', 'false') <> 'true'
            RETURNING true
            """,
            migration_id,
        )
        return bool(started)

    async def migration_created_at(self, migration_id: int) -> datetime | None:
        """When the migration was first recorded (bounds which uploads can be objmig's)."""
        value = await self._pool.fetchval(
            "SELECT created_at FROM migrations WHERE id = $1", migration_id
        )
        return cast("datetime | None", value)

    async def get_cleanup_state(self, cleanup_id: int) -> CleanupState:
        """Where a cleanup stands (its bookkeeping document)."""
        value = await self._pool.fetchval("SELECT state FROM cleanups WHERE id = $1", cleanup_id)
        return CleanupState.model_validate(value or {})

    async def update_cleanup_state(
        self, cleanup_id: int, **changes: Unpack[CleanupChanges]
    ) -> None:
        """Set sections of a cleanup's bookkeeping (``None`` clears one)."""
        await self._pool.execute(
            "UPDATE cleanups SET state = state || $2::jsonb WHERE id = $1",
            cleanup_id,
            encode_changes(CleanupState, changes),
        )
