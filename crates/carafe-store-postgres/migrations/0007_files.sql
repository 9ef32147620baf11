-- Buckets: named upload policies (the policy is JSON, validated by the server).
CREATE TABLE buckets (
    name        TEXT PRIMARY KEY,
    policy      JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

-- Uploaded files. The bytes live in object storage under keys made from `id`.
CREATE TABLE files (
    id          UUID PRIMARY KEY,
    bucket      TEXT NOT NULL,
    name        TEXT NOT NULL,
    size        BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    mime        TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('processing', 'ready', 'quarantined', 'rejected', 'failed')),
    error_code  TEXT,
    error       TEXT,
    owner       TEXT,
    metadata    JSONB NOT NULL,
    job_id      BIGINT,
    scan        JSONB,
    thumbnails  JSONB NOT NULL DEFAULT '[]',
    legal_hold  BOOLEAN NOT NULL DEFAULT false,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    deleted_at  TIMESTAMPTZ
);
CREATE INDEX files_bucket ON files (bucket, id) WHERE deleted_at IS NULL;
CREATE INDEX files_owner ON files (owner, id) WHERE deleted_at IS NULL;
CREATE INDEX files_created ON files (bucket, created_at) WHERE deleted_at IS NULL;
