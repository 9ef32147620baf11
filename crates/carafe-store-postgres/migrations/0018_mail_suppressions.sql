-- Suppressions: addresses mail is not sent to (bounced, complained, unsubscribed or added by
-- hand). The server keeps `address` lowercased, so the primary key is the lookup. The first
-- entry for an address stays: a later one does not replace its reason or source.
-- `COLLATE "C"` makes `address` order byte order, so keyset pages (`address > $1 ORDER BY
-- address`) go in the same order as on SQLite, whatever the database's collation.
CREATE TABLE mail_suppressions (
    address     TEXT COLLATE "C" PRIMARY KEY,
    reason      TEXT NOT NULL,
    source      TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);
