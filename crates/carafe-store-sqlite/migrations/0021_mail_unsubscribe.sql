-- Whether each recipient's copy of a mail carries one-click unsubscribe headers (RFC 8058):
-- a link naming the recipient's message, which the server writes when it builds the copy.
ALTER TABLE mail ADD COLUMN unsubscribe INTEGER NOT NULL DEFAULT 0;
