-- The job queue: one row per job, in River's shape (the same columns as SQLite's 0002_jobs).
CREATE TABLE jobs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- never reused
    queue            text NOT NULL,
    state            text NOT NULL CHECK (state IN ('scheduled', 'available', 'running',
                         'retryable', 'completed', 'cancelled', 'discarded')),
    args             jsonb NOT NULL,
    priority         smallint NOT NULL,
    attempt          integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL,
    backoff          jsonb,
    timeout_ms       bigint NOT NULL,
    scheduled_at     timestamptz NOT NULL,
    created_at       timestamptz NOT NULL,
    attempted_at     timestamptz,
    finalized_at     timestamptz,
    attempted_by     text,
    lease_token      text,
    lease_expires_at timestamptz,
    unique_key       text,
    owner            text,
    progress         jsonb,
    checkpoint       jsonb,
    result           jsonb,
    errors           jsonb NOT NULL DEFAULT '[]',
    cancel_requested boolean NOT NULL DEFAULT false,
    event_seq        bigint NOT NULL DEFAULT 0
);

-- A queue table is update-heavy: every job is inserted, then updated at least twice (claim,
-- then complete or fail), and each update leaves a dead tuple behind. Free space in every page
-- (fillfactor 80) lets the new version of a row land on the same page, and lets progress
-- heartbeats, which touch no indexed column, be HOT updates (no index entries at all).
-- Vacuuming once ~2 % of the table has changed instead of the default 20 % keeps the claim
-- index and the heap from filling with dead entries that every claim would have to step over.
ALTER TABLE jobs SET (
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.05
);

-- Claiming walks only waiting jobs, in claim order.
CREATE INDEX jobs_claim ON jobs (queue, priority, scheduled_at, id)
    WHERE state IN ('available', 'scheduled', 'retryable');
-- Rescue finds running jobs whose lease ran out.
CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE state = 'running';
-- Unique keys are looked up newest first.
CREATE INDEX jobs_unique ON jobs (queue, unique_key, id) WHERE unique_key IS NOT NULL;
-- Pruning finds finished jobs by age.
CREATE INDEX jobs_finalized ON jobs (finalized_at) WHERE finalized_at IS NOT NULL;
CREATE INDEX jobs_queue_state ON jobs (queue, state);
CREATE INDEX jobs_owner ON jobs (owner, id) WHERE owner IS NOT NULL;

-- Every change to a job, numbered per job (jobs.event_seq), for live progress streams.
-- No foreign key: events are written in the job's own transaction and pruned with it, and a
-- key would only add a lookup to every insert.
CREATE TABLE job_events (
    job_id bigint NOT NULL,
    seq    bigint NOT NULL,
    at     timestamptz NOT NULL,
    kind   text NOT NULL,
    data   jsonb NOT NULL,
    PRIMARY KEY (job_id, seq)
);

-- Events are append-only but pruned in bulk with their jobs: the same dead-tuple churn, so
-- the same eager vacuuming (no fillfactor: rows are never updated, pages fill up for good).
ALTER TABLE job_events SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.05
);

CREATE TABLE queues (
    name       text PRIMARY KEY,
    paused     boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL
);

-- Named leases for work one instance does at a time.
CREATE TABLE leaders (
    name       text PRIMARY KEY,
    holder     text NOT NULL,
    expires_at timestamptz NOT NULL
);
