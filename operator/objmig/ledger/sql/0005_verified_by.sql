-- objmig ledger, schema version 5: how each copy was proven, and what it did without.

-- verified_by: what proved the copy of a verified row: 'etag' (the target's ETag equals the
-- source's, part boundaries kept), or the checksum algorithm whose values of both sides were
-- compared ('sha256', 'crc32c', ...), a SHA-256 also when the bytes were read to prove it.
-- degraded: the aspects of S3 this object's copy did without because its store lacks them
-- (comma-separated, e.g. 'partSizes'); NULL when it lacked nothing.
ALTER TABLE objects ADD COLUMN verified_by text;
ALTER TABLE objects ADD COLUMN degraded text;

-- The status counts the objects verify.mode etag could not prove by their ETag. In etag
-- mode (the default) they are the exception, so this index stays small and the count cheap.
CREATE INDEX objects_etag_unproven_idx ON objects (migration_id)
    WHERE state = 'verified' AND verified_by <> 'etag';
