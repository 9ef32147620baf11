-- Recurring jobs: a cron expression in a time zone, the enqueue request to make at each tick,
-- and the next tick (UTC, unix milliseconds), which the maintenance leader advances.
CREATE TABLE schedules (
    name         TEXT PRIMARY KEY,
    cron         TEXT NOT NULL,
    timezone     TEXT NOT NULL,
    job          TEXT NOT NULL,
    paused       INTEGER NOT NULL DEFAULT 0,
    next_fire_at INTEGER NOT NULL,
    last_fire_at INTEGER,
    last_job_id  INTEGER,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
) STRICT;
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE paused = 0;
