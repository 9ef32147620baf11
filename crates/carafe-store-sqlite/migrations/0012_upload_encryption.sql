-- The wrapped data key that seals a resumable upload's chunks (JSON: kid, wrapped, segment,
-- as for files); NULL when the chunks are stored in the clear.
ALTER TABLE uploads ADD COLUMN encryption TEXT;
