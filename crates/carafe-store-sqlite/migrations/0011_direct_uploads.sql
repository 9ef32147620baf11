-- Direct-upload sessions: the client sends the bytes straight to storage (`incoming/<id>`),
-- then asks Carafe to check and record them. The id is the future file's id.
CREATE TABLE direct_uploads (
    id          TEXT PRIMARY KEY,
    bucket      TEXT NOT NULL,
    owner       TEXT,
    name        TEXT NOT NULL,
    size        INTEGER NOT NULL CHECK (size >= 0),
    metadata    TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('open', 'completing', 'completed')),
    multipart   TEXT,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX direct_uploads_expiry ON direct_uploads (expires_at);
