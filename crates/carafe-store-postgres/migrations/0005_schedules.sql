-- Recurring jobs: a cron expression in a time zone, the enqueue request to make at each tick,
-- and the next tick, which the maintenance leader advances.
CREATE TABLE schedules (
    name         text PRIMARY KEY,
    cron         text NOT NULL,
    timezone     text NOT NULL,
    job          jsonb NOT NULL,
    paused       boolean NOT NULL DEFAULT false,
    next_fire_at timestamptz NOT NULL,
    last_fire_at timestamptz,
    last_job_id  bigint,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE NOT paused;
