-- objmig ledger, schema version 7 (after 0006_buckets): what objmig wrote, for leftovers cleanups
-- and reports. Uploads belong to a row by its id, which carries the bucket (version 6).

-- Multipart uploads objmig started and has not seen end (completed or aborted). S3 shows
-- no metadata for an incomplete upload: this is how one is known for objmig's. A killed
-- attempt's are aborted by the next attempt of its object, the rest by a leftovers cleanup.
CREATE TABLE uploads (
    object_id  bigint NOT NULL REFERENCES objects (id) ON DELETE CASCADE,
    upload_id  text NOT NULL,
    target_key text COLLATE "C" NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (object_id, upload_id)
);

-- What the object's copy could not keep of its source (object lock, legal hold, ACL,
-- objmig's marker left out under the metadata limit), in words; NULL: everything.
ALTER TABLE objects ADD COLUMN not_preserved text;
