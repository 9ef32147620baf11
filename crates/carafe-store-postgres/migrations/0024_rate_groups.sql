-- Rate groups: one rate limit shared by several queues (one group per SMTP relay), enforced
-- in the claim transaction like a queue's own limits (the group's row is locked while one of
-- its queues is claimed, so instances claiming at once count each other's claims). The row
-- holds the settings and where the limits stand: the token bucket (`tokens` at `tokens_at`),
-- the slow-down a throttling relay caused (`slowed_rate` at `slowed_at`) and the claims
-- counted in the current hour and day. A queue names its group in `rate_group`; a name with
-- no row limits nothing. A campaign names the relay its mail goes out through (NULL: the
-- default one).
CREATE TABLE rate_groups (
    name             text PRIMARY KEY,
    rate_per_second  double precision NOT NULL,
    burst            bigint NOT NULL,
    hourly_cap       bigint,
    daily_cap        bigint,
    tokens           double precision NOT NULL,
    tokens_at        timestamptz NOT NULL,
    slowed_rate      double precision,
    slowed_at        timestamptz,
    hour_start       timestamptz NOT NULL,
    hour_count       bigint NOT NULL,
    day_start        timestamptz NOT NULL,
    day_count        bigint NOT NULL
);
ALTER TABLE queues ADD COLUMN rate_group text;
ALTER TABLE mail_campaigns ADD COLUMN relay text;
