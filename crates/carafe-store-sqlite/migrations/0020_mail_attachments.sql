-- A mail's attachments and inline parts, in the order given (`position`). Bytes given with the
-- mail are kept here (`content`); a Carafe file is referenced (`file_id`) and read when the
-- message is sent, so it is not a foreign key: the mail does not keep the file from being
-- deleted. Exactly one of the two is set. `cid` is an inline part's Content-ID.
CREATE TABLE mail_attachments (
    mail_id       TEXT NOT NULL REFERENCES mail (id) ON DELETE CASCADE,
    position      INTEGER NOT NULL,
    filename      TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    cid           TEXT,
    size          INTEGER NOT NULL CHECK (size >= 0),
    file_id       TEXT,
    content       BLOB,
    PRIMARY KEY (mail_id, position),
    CHECK ((file_id IS NULL) <> (content IS NULL))
) STRICT;
