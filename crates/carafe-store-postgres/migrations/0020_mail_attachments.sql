-- A mail's attachments and inline parts, in the order given (`position`), written in the same
-- transaction as the mail. Bytes given with the mail are kept here (`content`); a Carafe file
-- is referenced (`file_id`) and read when the message is sent. Exactly one of the two is set.
-- No foreign keys: as for mail_events, the rows are written with their mail and would be
-- deleted with it, and a referenced file may be gone by the time the message is sent.
CREATE TABLE mail_attachments (
    mail_id       UUID NOT NULL,
    position      INTEGER NOT NULL,
    filename      TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    cid           TEXT,
    size          BIGINT NOT NULL,
    file_id       UUID,
    content       BYTEA,
    PRIMARY KEY (mail_id, position),
    CHECK ((file_id IS NULL) <> (content IS NULL))
);
