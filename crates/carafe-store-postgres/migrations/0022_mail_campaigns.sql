-- The campaign a mail is one recipient's copy of (NULL for mail sent on its own). Messages
-- carry it too, copied from their mail as `tags` are, so counting, cancelling and listing a
-- campaign's messages reads `mail_messages` alone. No foreign keys: mail is written once and
-- campaigns are never deleted, so a key would only add a lookup to every insert.
ALTER TABLE mail ADD COLUMN campaign_id UUID;
ALTER TABLE mail_messages ADD COLUMN campaign_id UUID;
-- A campaign's messages by status: counting them, cancelling the queued and deferred ones,
-- and listing one status newest first (`id DESC`). Only campaign messages are indexed.
CREATE INDEX mail_messages_campaign_status ON mail_messages (campaign_id, status, id)
    WHERE campaign_id IS NOT NULL;
-- A campaign's messages newest first (`campaign_id = $1 AND id < $2 ORDER BY id DESC`).
CREATE INDEX mail_messages_campaign ON mail_messages (campaign_id, id)
    WHERE campaign_id IS NOT NULL;
-- Counting a campaign's unsubscribes looks suppressions up by the message that made them
-- (`source = 'message:<id>'`); only unsubscribes are indexed, as only they are counted.
CREATE INDEX mail_suppressions_unsubscribe ON mail_suppressions (source)
    WHERE reason = 'unsubscribe';

-- Campaigns: one template sent to many recipients. `recipients` (rows stored) and `expanded`
-- (rows, in row order, already turned into messages) are kept by the store: `expanded` only
-- moves with a compare-and-set in the transaction that stores that batch's mail, whose row
-- lock makes two servers expanding one campaign take turns and the second one's batch miss.
-- Tags, template data and the import report are JSON, as mail's tags are: only read whole.
-- Ids are UUIDv7, so `id` order is creation order and listings go newest first by `id DESC`.
CREATE TABLE mail_campaigns (
    id                UUID PRIMARY KEY,
    name              TEXT NOT NULL,
    template          TEXT NOT NULL,
    template_version  INTEGER,
    locale            TEXT,
    from_addr         TEXT NOT NULL,
    reply_to          TEXT,
    tags              JSONB NOT NULL,
    data              JSONB NOT NULL,
    rate              DOUBLE PRECISION,
    send_at           TIMESTAMPTZ,
    autostart         BOOLEAN NOT NULL,
    state             TEXT NOT NULL CHECK (state IN ('importing', 'ready', 'sending', 'paused',
                          'cancelled', 'failed')),
    source            UUID,
    recipients        BIGINT NOT NULL DEFAULT 0,
    expanded          BIGINT NOT NULL DEFAULT 0,
    import_report     JSONB NOT NULL,
    actor             TEXT NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL,
    started_at        TIMESTAMPTZ
);
-- The campaigns being sent, which every server looks for when it starts and as it runs.
CREATE INDEX mail_campaigns_started ON mail_campaigns (id) WHERE state IN ('sending', 'paused');

-- A campaign's recipients in row order (the file's row number, or the list index + 1), read
-- batch by batch as the campaign is expanded. `email_lower` is what makes an address appear
-- once per campaign: an import inserts with `ON CONFLICT DO NOTHING` on it, and what was not
-- inserted is what it skipped.
CREATE TABLE mail_campaign_recipients (
    campaign_id  UUID NOT NULL REFERENCES mail_campaigns (id) ON DELETE CASCADE,
    row          BIGINT NOT NULL,
    email        TEXT NOT NULL,
    email_lower  TEXT NOT NULL,
    data         JSONB NOT NULL,
    PRIMARY KEY (campaign_id, row),
    UNIQUE (campaign_id, email_lower)
);
