-- Suppressions: addresses mail is not sent to (a hard bounce, a complaint, an unsubscribe, or
-- an operator's decision). Addresses are kept lowercased by the server, so the primary key
-- matches them case-insensitively. The first entry for an address stays: adding it again
-- changes nothing. `reason` is bounce, complaint, unsubscribe or manual; `source` says who or
-- what added it.
CREATE TABLE mail_suppressions (
    address     TEXT PRIMARY KEY,
    reason      TEXT NOT NULL,
    source      TEXT NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;
