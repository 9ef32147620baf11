-- The wrapped data key of a file encrypted at rest (kid, wrapped, segment); NULL when the
-- file is stored in the clear.
ALTER TABLE files ADD COLUMN encryption JSONB;
