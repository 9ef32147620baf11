-- The campaign a mail is one recipient's copy of (NULL for other mail). Its messages carry it
-- too, copied from the mail like `tags`, so counting, cancelling and listing a campaign's
-- messages needs no join. Not a foreign key: the send log outlives the campaign.
ALTER TABLE mail ADD COLUMN campaign_id TEXT;
ALTER TABLE mail_messages ADD COLUMN campaign_id TEXT;
-- Counting (by status) and cancelling (the waiting ones) a campaign's messages.
CREATE INDEX mail_messages_campaign_status ON mail_messages (campaign_id, status)
    WHERE campaign_id IS NOT NULL;
-- Listing a campaign's messages newest first (`ORDER BY id DESC`, keyset on id).
CREATE INDEX mail_messages_campaign ON mail_messages (campaign_id, id)
    WHERE campaign_id IS NOT NULL;
-- The unsubscribes a campaign's links made: suppressions with source `message:{id}`.
CREATE INDEX mail_suppressions_unsubscribe ON mail_suppressions (source)
    WHERE reason = 'unsubscribe';

-- Campaigns: one template sent to many recipients, each a mail of its own. `recipients` counts
-- the rows in mail_campaign_recipients; `expanded` is the cursor of the recipients (in row
-- order) already turned into mail, moved in the transaction that stores each batch of it, so
-- a restart carries on where the last batch committed. `tags` is a JSON array of strings,
-- `data` any JSON value, `import` the import report (JSON). `source_file` is the file the
-- recipients were read from; not a foreign key, the campaign does not keep it from being
-- deleted. Ids are UUIDv7 text: they sort by creation.
CREATE TABLE mail_campaigns (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    template          TEXT NOT NULL,
    template_version  INTEGER CHECK (template_version >= 0),
    locale            TEXT,
    from_addr         TEXT NOT NULL,
    reply_to          TEXT,
    tags              TEXT NOT NULL,
    data              TEXT NOT NULL,
    rate              REAL,
    send_at           INTEGER,
    autostart         INTEGER NOT NULL,
    state             TEXT NOT NULL CHECK (state IN ('importing', 'ready', 'sending', 'paused',
                          'cancelled', 'failed')),
    source_file       TEXT,
    recipients        INTEGER NOT NULL DEFAULT 0 CHECK (recipients >= 0),
    expanded          INTEGER NOT NULL DEFAULT 0 CHECK (expanded >= 0),
    import            TEXT NOT NULL,
    actor             TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    started_at        INTEGER
) STRICT;
-- The started campaigns (served after a restart), oldest first.
CREATE INDEX mail_campaigns_started ON mail_campaigns (created_at, id)
    WHERE state IN ('sending', 'paused');

-- A campaign's recipients, by their row (the file's row number, or the position given): read
-- in row order, batch by batch, when the campaign's mail is made. `email_lower` (lowercased by
-- the server) keeps an address from being added twice to one campaign, whatever its case.
-- `data` is the recipient's template data (JSON).
CREATE TABLE mail_campaign_recipients (
    campaign_id  TEXT NOT NULL REFERENCES mail_campaigns (id) ON DELETE CASCADE,
    row          INTEGER NOT NULL CHECK (row >= 0),
    email        TEXT NOT NULL,
    email_lower  TEXT NOT NULL,
    data         TEXT NOT NULL,
    PRIMARY KEY (campaign_id, row),
    UNIQUE (campaign_id, email_lower)
) STRICT, WITHOUT ROWID;
