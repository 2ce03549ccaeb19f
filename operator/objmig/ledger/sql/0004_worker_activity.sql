-- objmig ledger, schema version 4: what each worker reports while it works.

-- One row per worker incarnation (lease owner) of a migration, rewritten every few seconds
-- by that worker. The status reads them for what object states cannot tell: bytes moving
-- inside objects not finished yet (the rate and the ETA), retries and their last error,
-- and whether the owner of a lease is still alive.
CREATE TABLE worker_activity (
    migration_id    bigint NOT NULL REFERENCES migrations (id) ON DELETE CASCADE,
    owner           text NOT NULL,
    -- Bytes this worker has written to the target so far (never decreases).
    bytes_moved     bigint NOT NULL DEFAULT 0,
    -- Of those, the bytes of objects it has not finished yet.
    bytes_in_flight bigint NOT NULL DEFAULT 0,
    -- Attempts of this worker that ended in an error to be retried.
    retries         bigint NOT NULL DEFAULT 0,
    last_error      text,
    last_error_at   timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (migration_id, owner)
);
