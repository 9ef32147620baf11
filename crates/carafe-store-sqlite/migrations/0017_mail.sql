-- Mail submissions: what was asked to be sent, once for all its recipients. Addresses are kept
-- formatted ("Name <a@b>"); lists (to, cc, bcc, tags) are JSON arrays of strings, headers a
-- JSON array of [name, value] pairs. `message_id` is the Message-ID header every recipient's
-- copy carries. Ids are UUIDv7 text: they sort by creation.
CREATE TABLE mail (
    id          TEXT PRIMARY KEY,
    message_id  TEXT NOT NULL,
    from_addr   TEXT NOT NULL,
    reply_to    TEXT,
    to_addrs    TEXT NOT NULL,
    cc_addrs    TEXT NOT NULL,
    bcc_addrs   TEXT NOT NULL,
    subject     TEXT NOT NULL,
    text_body   TEXT,
    html_body   TEXT,
    headers     TEXT NOT NULL,
    tags        TEXT NOT NULL,
    actor       TEXT NOT NULL,
    send_at     INTEGER,
    created_at  INTEGER NOT NULL
) STRICT;

-- One message per recipient, each with its own state and attempts. `position` keeps the
-- order the recipients were given in; `recipient_lower` (lowercased by the server) serves the
-- case-insensitive recipient filter; `tags` is the mail's, copied so the tag filter needs no
-- join. `event_seq` numbers the message's timeline (mail_events.seq). The sending job is not
-- a foreign key: finished jobs are pruned, the send log stays.
CREATE TABLE mail_messages (
    id               TEXT PRIMARY KEY,
    mail_id          TEXT NOT NULL REFERENCES mail (id) ON DELETE CASCADE,
    position         INTEGER NOT NULL,
    recipient        TEXT NOT NULL,
    recipient_lower  TEXT NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('to', 'cc', 'bcc')),
    status           TEXT NOT NULL CHECK (status IN ('queued', 'sending', 'sent', 'deferred',
                         'failed', 'suppressed', 'bounced', 'complained', 'cancelled')),
    attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    reply            TEXT,
    relay_id         TEXT,
    tags             TEXT NOT NULL,
    job_id           INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    sent_at          INTEGER,
    event_seq        INTEGER NOT NULL DEFAULT 0
) STRICT;
-- Listings are newest first (`ORDER BY id DESC`, the primary key) with these filters.
CREATE UNIQUE INDEX mail_messages_mail ON mail_messages (mail_id, position);
CREATE INDEX mail_messages_recipient ON mail_messages (recipient_lower, id);
CREATE INDEX mail_messages_status ON mail_messages (status, id);

-- Every change to a message, numbered per message (mail_messages.event_seq), oldest first.
CREATE TABLE mail_events (
    message_id  TEXT NOT NULL REFERENCES mail_messages (id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    data        TEXT NOT NULL,
    PRIMARY KEY (message_id, seq)
) STRICT, WITHOUT ROWID;

-- Messages captured instead of sent (no relay configured): the exact bytes a relay would have
-- received, with what the outbox is searched by. No foreign keys: the outbox is cleared on its
-- own, and the send log outlives it. `header_message_id` is the Message-ID header.
CREATE TABLE mail_outbox (
    id                 TEXT PRIMARY KEY,
    message_id         TEXT NOT NULL,
    mail_id            TEXT NOT NULL,
    envelope_from      TEXT NOT NULL,
    recipient          TEXT NOT NULL,
    recipient_lower    TEXT NOT NULL,
    subject            TEXT NOT NULL,
    header_message_id  TEXT NOT NULL,
    tags               TEXT NOT NULL,
    size               INTEGER NOT NULL CHECK (size >= 0),
    raw                BLOB NOT NULL,
    created_at         INTEGER NOT NULL
) STRICT;
-- Newest first is `ORDER BY id DESC` on the primary key; the recipient filter has its own.
CREATE INDEX mail_outbox_recipient ON mail_outbox (recipient_lower, id);
