-- Workflows of jobs: every step is a job (workflow_id, workflow_step); steps that wait for
-- others are in state 'pending' until the workflow starts them.
CREATE TABLE workflows (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT NOT NULL,
    state        TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    finalized_at INTEGER
) STRICT;
CREATE INDEX workflows_running ON workflows (id) WHERE state = 'running';
CREATE INDEX workflows_finalized ON workflows (finalized_at) WHERE finalized_at IS NOT NULL;
ALTER TABLE jobs ADD COLUMN workflow_id INTEGER;
ALTER TABLE jobs ADD COLUMN workflow_step INTEGER;
CREATE INDEX jobs_workflow ON jobs (workflow_id, workflow_step) WHERE workflow_id IS NOT NULL;
