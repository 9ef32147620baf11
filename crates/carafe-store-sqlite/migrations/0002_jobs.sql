-- The job queue: one row per job, in River's shape. Times are unix milliseconds, UTC.
CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, even after pruning
    queue            TEXT NOT NULL,
    state            TEXT NOT NULL,
    args             TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    backoff          TEXT,
    timeout_ms       INTEGER NOT NULL,
    scheduled_at     INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    attempted_at     INTEGER,
    finalized_at     INTEGER,
    attempted_by     TEXT,
    lease_token      TEXT,
    lease_expires_at INTEGER,
    unique_key       TEXT,
    owner            TEXT,
    progress         TEXT,
    checkpoint       TEXT,
    result           TEXT,
    errors           TEXT NOT NULL DEFAULT '[]',
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    event_seq        INTEGER NOT NULL DEFAULT 0
) STRICT;

-- Claiming walks only waiting jobs, in claim order.
CREATE INDEX jobs_claim ON jobs (queue, priority, scheduled_at, id)
    WHERE state IN ('available', 'scheduled', 'retryable');
CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_unique ON jobs (queue, unique_key, id) WHERE unique_key IS NOT NULL;
CREATE INDEX jobs_finalized ON jobs (finalized_at) WHERE finalized_at IS NOT NULL;
CREATE INDEX jobs_queue_state ON jobs (queue, state);
CREATE INDEX jobs_owner ON jobs (owner, id) WHERE owner IS NOT NULL;

-- Every change to a job, numbered per job (jobs.event_seq), for live progress streams.
CREATE TABLE job_events (
    job_id INTEGER NOT NULL,
    seq    INTEGER NOT NULL,
    at     INTEGER NOT NULL,
    kind   TEXT NOT NULL,
    data   TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
) STRICT, WITHOUT ROWID;

CREATE TABLE queues (
    name       TEXT PRIMARY KEY,
    paused     INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL
) STRICT;

-- Named leases for work one instance does at a time.
CREATE TABLE leaders (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
