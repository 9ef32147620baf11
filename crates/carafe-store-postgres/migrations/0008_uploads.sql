-- Resumable (tus) uploads: how many bytes are durable (`received`, the tus offset), who may
-- append now (the lock), and until when the upload lives. The chunks' bytes live in object
-- storage.
CREATE TABLE uploads (
    id            UUID PRIMARY KEY,
    bucket        TEXT NOT NULL,
    owner         TEXT,
    length        BIGINT NOT NULL CHECK (length >= 0),
    received      BIGINT NOT NULL DEFAULT 0 CHECK (received >= 0 AND received <= length),
    metadata      JSONB NOT NULL,
    actor         TEXT NOT NULL,
    chunks        INTEGER NOT NULL DEFAULT 0,
    status        TEXT NOT NULL CHECK (status IN ('active', 'completed', 'failed', 'terminated')),
    file_id       UUID,
    error_code    TEXT,
    lock_holder   TEXT,
    locked_until  TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX uploads_expiry ON uploads (expires_at);

-- The chunks that hold an upload's bytes, one per accepted PATCH.
CREATE TABLE upload_chunks (
    upload_id   UUID NOT NULL REFERENCES uploads (id) ON DELETE CASCADE,
    start       BIGINT NOT NULL,
    size        BIGINT NOT NULL,
    key         TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    PRIMARY KEY (upload_id, start)
);
