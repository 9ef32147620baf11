-- Push delivery: a job with a target URL is POSTed there by Carafe instead of being claimed
-- by pull workers. Pull claims and push claims each walk their own partial index.
ALTER TABLE jobs ADD COLUMN target TEXT;
DROP INDEX jobs_claim;
CREATE INDEX jobs_claim ON jobs (queue, priority, scheduled_at, id)
    WHERE state IN ('available', 'scheduled', 'retryable') AND target IS NULL;
CREATE INDEX jobs_push ON jobs (queue, priority, scheduled_at, id)
    WHERE state IN ('available', 'scheduled', 'retryable') AND target IS NOT NULL;
