-- What providers report after a relay took a message (bounces, complaints, deliveries) names
-- the message by the relay's queue id or by the Message-ID header its copy carried, each with
-- the recipient. These indexes find it without a scan: messages by `relay_id` (only those a
-- relay gave one), mail by `message_id` (its messages then by `mail_messages_mail`).
CREATE INDEX mail_messages_relay ON mail_messages (relay_id) WHERE relay_id IS NOT NULL;
CREATE INDEX mail_message_id ON mail (message_id);
