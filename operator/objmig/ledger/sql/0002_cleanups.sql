-- objmig ledger, schema version 2: MigrationCleanup requests and their per-object outcomes.

-- One row per cleanup request (a MigrationCleanup resource, or one `objmig cleanup` spec).
CREATE TABLE cleanups (
    id           bigserial PRIMARY KEY,
    -- "namespace/name" of the MigrationCleanup.
    name         text NOT NULL UNIQUE,
    uid          text NOT NULL DEFAULT '',
    migration_id bigint NOT NULL REFERENCES migrations (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    state        jsonb NOT NULL DEFAULT '{}'::jsonb
);

-- One row per source object a cleanup considers. outcome: planned (not decided yet),
-- deleted, would_delete (dry run), skipped (a gate did not hold; reason says which),
-- failed (DeleteObjects refused). Leases as for objects: claimed items are held by one
-- worker, and an expired lease returns the item to the pool.
CREATE TABLE cleanup_items (
    cleanup_id       bigint NOT NULL REFERENCES cleanups (id) ON DELETE CASCADE,
    object_id        bigint NOT NULL REFERENCES objects (id) ON DELETE CASCADE,
    outcome          text NOT NULL DEFAULT 'planned'
        CHECK (outcome IN ('planned', 'deleted', 'would_delete', 'skipped', 'failed')),
    reason           text,
    message          text,
    lease_owner      text,
    lease_expires_at timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cleanup_id, object_id)
);

CREATE INDEX cleanup_items_planned_idx ON cleanup_items (cleanup_id, object_id)
    WHERE outcome = 'planned';

-- Deleting a migration cascades to its cleanup items object by object; without this index
-- each of those checks would scan the table.
CREATE INDEX cleanup_items_object_idx ON cleanup_items (object_id);
