-- Mail: what was asked to be sent, once for all its recipients. Written once and never
-- updated: each recipient's progress lives in its own message row. Address lists, headers
-- (`[[name, value], …]`) and tags are JSON arrays: they are only ever read whole.
CREATE TABLE mail (
    id          UUID PRIMARY KEY,
    message_id  TEXT NOT NULL,
    from_addr   TEXT NOT NULL,
    reply_to    TEXT,
    to_addrs    JSONB NOT NULL,
    cc_addrs    JSONB NOT NULL,
    bcc_addrs   JSONB NOT NULL,
    subject     TEXT NOT NULL,
    text_body   TEXT,
    html_body   TEXT,
    headers     JSONB NOT NULL,
    tags        JSONB NOT NULL,
    actor       TEXT NOT NULL,
    send_at     TIMESTAMPTZ,
    created_at  TIMESTAMPTZ NOT NULL
);

-- One message per recipient, with its own state and attempts, written in the same transaction
-- as its mail and the job that sends it (`job_id`). `position` keeps the order the recipients
-- were given in; `tags` are copied from the mail so listings filter without a join;
-- `event_seq` numbers the message's events, as `jobs.event_seq` does a job's. Ids are UUIDv7,
-- so `id` order is creation order and listings go newest first by `id DESC`.
CREATE TABLE mail_messages (
    id          UUID PRIMARY KEY,
    mail_id     UUID NOT NULL REFERENCES mail (id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    recipient   TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('to', 'cc', 'bcc')),
    status      TEXT NOT NULL CHECK (status IN ('queued', 'sending', 'sent', 'deferred', 'failed',
                    'suppressed', 'bounced', 'complained', 'cancelled')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    reply       TEXT,
    relay_id    TEXT,
    tags        JSONB NOT NULL,
    job_id      BIGINT,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    sent_at     TIMESTAMPTZ,
    event_seq   BIGINT NOT NULL DEFAULT 0
);
-- A mail's messages in their order (also serves cancelling a mail and its foreign key).
CREATE UNIQUE INDEX mail_messages_mail ON mail_messages (mail_id, position);
-- Recipients compare case-insensitively: the listing filters on `lower(recipient)`.
CREATE INDEX mail_messages_recipient ON mail_messages (lower(recipient), id);
CREATE INDEX mail_messages_status ON mail_messages (status, id);
-- `tags ? $1` (does the array hold this tag) is answered by a GIN index.
CREATE INDEX mail_messages_tags ON mail_messages USING GIN (tags);

-- Every change to a message, numbered per message (mail_messages.event_seq): its timeline.
-- No foreign key, as for job_events: events are written in the message's own statement and
-- would be pruned with it, and a key would only add a lookup to every insert.
CREATE TABLE mail_events (
    message_id  UUID NOT NULL,
    seq         BIGINT NOT NULL,
    at          TIMESTAMPTZ NOT NULL,
    kind        TEXT NOT NULL,
    data        JSONB NOT NULL,
    PRIMARY KEY (message_id, seq)
);

-- Messages captured instead of sent (no relay configured): the exact bytes a relay would have
-- received, with what the outbox is searched by. No foreign keys: the outbox is cleared on its
-- own, and the send log (the message rows) outlives it. Newest first is `id DESC` on the
-- primary key (UUIDv7); the filters (recipient, subject, tag) scan that order, which is fine
-- for a development tool that holds what one developer sent.
CREATE TABLE mail_outbox (
    id                 UUID PRIMARY KEY,
    message_id         UUID NOT NULL,
    mail_id            UUID NOT NULL,
    envelope_from      TEXT NOT NULL,
    recipient          TEXT NOT NULL,
    subject            TEXT NOT NULL,
    header_message_id  TEXT NOT NULL,
    tags               JSONB NOT NULL,
    size               BIGINT NOT NULL,
    raw                BYTEA NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL
);
