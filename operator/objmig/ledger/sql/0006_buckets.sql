-- objmig ledger, schema version 6: the bucket of each object (a migration of several
-- buckets of an account lists them all into one ledger), per-bucket counts, and, for
-- migrations with group manifests (spec.groups), each object's group and the source's
-- metadata the manifest lists.

-- '' for migrations of one bucket or a directory: their rows, their order and their
-- verification digest are as before.
ALTER TABLE objects ADD COLUMN bucket text COLLATE "C" NOT NULL DEFAULT '';
-- {"metadata": {...}, "contentType": ...} of the source as the copy saw it; written only
-- for migrations with group manifests (spec.groups), which list every member's metadata.
ALTER TABLE objects ADD COLUMN source_metadata jsonb;
-- The group (spec.groups.by) of the object, rendered at scan time; NULL without groups.
ALTER TABLE objects ADD COLUMN group_key text COLLATE "C";

ALTER TABLE objects DROP CONSTRAINT objects_identity;
ALTER TABLE objects ADD CONSTRAINT objects_identity UNIQUE (migration_id, bucket, key, version_id);

-- Counts per bucket too (status.buckets), from the same triggers: a statement's net change
-- per (migration, bucket, state).
ALTER TABLE object_count_deltas ADD COLUMN bucket text COLLATE "C" NOT NULL DEFAULT '';

CREATE OR REPLACE FUNCTION objmig_count_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO object_count_deltas (migration_id, bucket, state, objects, bytes)
    SELECT migration_id, bucket, state, count(*), sum(size)
    FROM new_rows
    GROUP BY migration_id, bucket, state;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION objmig_count_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO object_count_deltas (migration_id, bucket, state, objects, bytes)
    SELECT migration_id, bucket, state, sum(n), sum(b)
    FROM (
        SELECT migration_id, bucket, state, -1 AS n, -size AS b FROM old_rows
        UNION ALL
        SELECT migration_id, bucket, state, 1, size FROM new_rows
    ) AS d
    GROUP BY migration_id, bucket, state
    HAVING sum(n) <> 0 OR sum(b) <> 0;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION objmig_count_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO object_count_deltas (migration_id, bucket, state, objects, bytes)
    SELECT migration_id, bucket, state, -count(*), -sum(size)
    FROM old_rows
    GROUP BY migration_id, bucket, state;
    RETURN NULL;
END
$$;
