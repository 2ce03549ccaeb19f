-- objmig ledger, schema version 1.
-- Applied by objmig.ledger.schema.apply_schema inside one transaction, under an advisory lock.

-- One row per migration (an ObjectMigration resource, or one `objmig run` spec).
CREATE TABLE migrations (
    id         bigserial PRIMARY KEY,
    -- "namespace/name" for the operator; the spec's name for the CLI.
    name       text NOT NULL UNIQUE,
    -- metadata.uid of the resource, so a re-created resource is not mistaken for the old one.
    uid        text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Free-form engine bookkeeping (scan ids, phase timestamps, ...), merged shallowly.
    state      jsonb NOT NULL DEFAULT '{}'::jsonb
);

-- One row per source object version. key and version_id use the "C" collation so that
-- ordering (the digest, reports, iteration) is byte order on every server, whatever the
-- database's default collation.
CREATE TABLE objects (
    id                   bigserial PRIMARY KEY,
    migration_id         bigint NOT NULL REFERENCES migrations (id) ON DELETE CASCADE,
    key                  text COLLATE "C" NOT NULL,
    -- '' for unversioned buckets: NULL would defeat the unique constraint below.
    version_id           text COLLATE "C" NOT NULL DEFAULT '',
    size                 bigint NOT NULL CHECK (size >= 0),
    etag                 text NOT NULL DEFAULT '',
    last_modified        timestamptz,
    storage_class        text NOT NULL DEFAULT 'STANDARD',
    target_key           text,
    target_etag          text,
    target_version_id    text,
    -- "sha256:<hex>", "crc32c:<base64>", ...
    source_checksum      text,
    target_checksum      text,
    state                text NOT NULL DEFAULT 'pending' CHECK (state IN (
                             'pending', 'restoring', 'copied', 'verified', 'skipped',
                             'failed', 'source_changed', 'deleted')),
    attempts             integer NOT NULL DEFAULT 0,
    last_error           text,
    error_code           text,
    -- A row is "in progress" while lease_expires_at > now(); an expired lease is free.
    lease_owner          text,
    lease_expires_at     timestamptz,
    -- Not to be claimed before this time (retry backoff, restore polling).
    not_before           timestamptz,
    restore_requested_at timestamptz,
    verified_at          timestamptz,
    cut_over_at          timestamptz,
    deleted_at           timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    -- The scan that last listed this object; rows behind the latest scan vanished at source.
    last_seen_scan       integer NOT NULL DEFAULT 0,
    skip_reason          text,
    CONSTRAINT objects_lease_complete CHECK ((lease_owner IS NULL) = (lease_expires_at IS NULL)),
    CONSTRAINT objects_identity UNIQUE (migration_id, key, version_id)
);

-- claim(): per state, unleased rows in (not_before, id) order, so the scan stops at the
-- first row whose not_before lies in the future instead of filtering every waiting row, and
-- leased rows (the head of the queue while workers run) are not in it at all. Claiming a
-- row (setting lease_owner) takes it out; recording a result puts it back under its new state.
CREATE INDEX objects_claim_idx ON objects
    (migration_id, state, (COALESCE(not_before, '-infinity'::timestamptz)), id)
    WHERE lease_owner IS NULL;

-- window(): most recently updated unleased rows first (partial, so that claiming a row, the
-- most frequent update, does not touch it); and the few rows that need a human's eye.
CREATE INDEX objects_updated_idx ON objects (migration_id, updated_at)
    WHERE lease_owner IS NULL;
CREATE INDEX objects_problem_idx ON objects (migration_id, updated_at)
    WHERE state IN ('failed', 'source_changed');

-- Leased rows are few (workers x batch size): a partial index keeps in-flight counts and
-- lease expiry cheap at any table size.
CREATE INDEX objects_leased_idx ON objects (migration_id, lease_expires_at)
    INCLUDE (size, state) WHERE lease_owner IS NOT NULL;

-- Exact per-state totals without scanning objects: every statement that changes objects
-- appends its net (objects, bytes) change per (migration, state) here, from statement-level
-- triggers with transition tables. Append-only, so concurrent workers never wait on a hot
-- counter row (and cannot deadlock on one); Ledger.counts() sums the rows and occasionally
-- folds them into one row per state. No foreign key: deleting a migration cascades to
-- objects, whose trigger then writes rows for the migration being deleted;
-- Ledger.delete_migration removes them in the same transaction.
CREATE TABLE object_count_deltas (
    migration_id bigint NOT NULL,
    state        text NOT NULL,
    objects      bigint NOT NULL,
    bytes        bigint NOT NULL
);
CREATE INDEX object_count_deltas_migration_idx ON object_count_deltas (migration_id);

CREATE FUNCTION objmig_count_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO object_count_deltas (migration_id, state, objects, bytes)
    SELECT migration_id, state, count(*), sum(size)
    FROM new_rows
    GROUP BY migration_id, state;
    RETURN NULL;
END
$$;

CREATE FUNCTION objmig_count_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Leases, heartbeats and scan bumps change neither state nor size: they net to zero
    -- and write nothing.
    INSERT INTO object_count_deltas (migration_id, state, objects, bytes)
    SELECT migration_id, state, sum(n), sum(b)
    FROM (
        SELECT migration_id, state, -1 AS n, -size AS b FROM old_rows
        UNION ALL
        SELECT migration_id, state, 1, size FROM new_rows
    ) AS d
    GROUP BY migration_id, state
    HAVING sum(n) <> 0 OR sum(b) <> 0;
    RETURN NULL;
END
$$;

CREATE FUNCTION objmig_count_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO object_count_deltas (migration_id, state, objects, bytes)
    SELECT migration_id, state, -count(*), -sum(size)
    FROM old_rows
    GROUP BY migration_id, state;
    RETURN NULL;
END
$$;

-- PostgreSQL allows transition tables only on single-event triggers, hence three.
CREATE TRIGGER objects_count_inserted AFTER INSERT ON objects
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION objmig_count_inserted();
CREATE TRIGGER objects_count_updated AFTER UPDATE ON objects
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION objmig_count_updated();
CREATE TRIGGER objects_count_deleted AFTER DELETE ON objects
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION objmig_count_deleted();
