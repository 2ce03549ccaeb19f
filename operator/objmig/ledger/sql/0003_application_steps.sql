-- objmig ledger, schema version 3: the application's per-object steps.

-- finishing: the object is verified (or, with copy.mode none, looked at) and a step of the
-- application's (its hook, its backfill) is still to be done; claimed like pending work.
ALTER TABLE objects DROP CONSTRAINT objects_state_check;
ALTER TABLE objects ADD CONSTRAINT objects_state_check CHECK (state IN (
    'pending', 'restoring', 'copied', 'verified', 'finishing', 'skipped',
    'failed', 'source_changed', 'deleted'));

ALTER TABLE objects
    -- The application's row id a SQL worklist returned with the key (spec.backfill.match id).
    ADD COLUMN row_id text,
    -- The copy's last-modified as verification saw it, for a backfill of the target's.
    ADD COLUMN target_last_modified timestamptz,
    -- When the per-object hook answered 2xx: it is never called again for this object.
    ADD COLUMN hook_done_at timestamptz,
    -- What the backfill writes into the application's row, recorded before it is written:
    -- {"plan": {column: [before, after]}} while under way, then
    -- {"outcome": "written" | "alreadySet" | "noRow" | "conflict",
    --  "written": {column: [before, after]}} once done (backfilled_at set). A rollback
    -- puts back "before" where "after" still stands.
    ADD COLUMN backfill jsonb,
    ADD COLUMN backfilled_at timestamptz;
