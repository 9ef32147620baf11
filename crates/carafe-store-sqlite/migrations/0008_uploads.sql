-- Resumable (tus) uploads: how many bytes are durable (`received`, the tus offset), who may
-- append now (the lock), and until when the upload lives. The chunks' bytes live in object
-- storage.
CREATE TABLE uploads (
    id            TEXT PRIMARY KEY,
    bucket        TEXT NOT NULL,
    owner         TEXT,
    length        INTEGER NOT NULL CHECK (length >= 0),
    received      INTEGER NOT NULL DEFAULT 0 CHECK (received >= 0 AND received <= length),
    metadata      TEXT NOT NULL,
    actor         TEXT NOT NULL,
    chunks        INTEGER NOT NULL DEFAULT 0,
    status        TEXT NOT NULL CHECK (status IN ('active', 'completed', 'failed', 'terminated')),
    file_id       TEXT,
    error_code    TEXT,
    lock_holder   TEXT,
    locked_until  INTEGER,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL
) STRICT;
CREATE INDEX uploads_expiry ON uploads (expires_at);

-- The chunks that hold an upload's bytes, one per accepted PATCH.
CREATE TABLE upload_chunks (
    upload_id   TEXT NOT NULL REFERENCES uploads (id) ON DELETE CASCADE,
    start       INTEGER NOT NULL,
    size        INTEGER NOT NULL,
    key         TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    PRIMARY KEY (upload_id, start)
) STRICT;
