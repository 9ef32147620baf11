-- Buckets: named upload policies (the policy is JSON, validated by the server).
CREATE TABLE buckets (
    name        TEXT PRIMARY KEY,
    policy      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;

-- Uploaded files. The bytes live in object storage under keys made from `id`.
CREATE TABLE files (
    id          TEXT PRIMARY KEY,
    bucket      TEXT NOT NULL,
    name        TEXT NOT NULL,
    size        INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    mime        TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('processing', 'ready', 'quarantined', 'rejected', 'failed')),
    error_code  TEXT,
    error       TEXT,
    owner       TEXT,
    metadata    TEXT NOT NULL,
    job_id      INTEGER,
    scan        TEXT,
    thumbnails  TEXT NOT NULL DEFAULT '[]',
    legal_hold  INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    deleted_at  INTEGER
) STRICT;
CREATE INDEX files_bucket ON files (bucket, id) WHERE deleted_at IS NULL;
CREATE INDEX files_owner ON files (owner, id) WHERE deleted_at IS NULL;
CREATE INDEX files_created ON files (bucket, created_at) WHERE deleted_at IS NULL;
