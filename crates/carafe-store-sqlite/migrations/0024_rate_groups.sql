-- Rate groups: one rate limit shared by several queues (one group per SMTP relay), enforced
-- in the claim transaction like a queue's own limits. The row holds the settings and where
-- the limits stand: the token bucket (`tokens` at `tokens_at`), the slow-down a throttling
-- relay caused (`slowed_rate` at `slowed_at`) and the claims counted in the current hour and
-- day. Times are milliseconds since the epoch. A queue names its group in `rate_group`; a
-- name with no row limits nothing. A campaign names the relay its mail goes out through
-- (NULL: the default one).
CREATE TABLE rate_groups (
    name             TEXT PRIMARY KEY,
    rate_per_second  REAL NOT NULL,
    burst            INTEGER NOT NULL,
    hourly_cap       INTEGER,
    daily_cap        INTEGER,
    tokens           REAL NOT NULL,
    tokens_at        INTEGER NOT NULL,
    slowed_rate      REAL,
    slowed_at        INTEGER,
    hour_start       INTEGER NOT NULL,
    hour_count       INTEGER NOT NULL,
    day_start        INTEGER NOT NULL,
    day_count        INTEGER NOT NULL
) STRICT;
ALTER TABLE queues ADD COLUMN rate_group TEXT;
ALTER TABLE mail_campaigns ADD COLUMN relay TEXT;
