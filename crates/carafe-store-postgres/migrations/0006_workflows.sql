-- Workflows of jobs: every step is a job (workflow_id, workflow_step); steps that wait for
-- others are in the new state 'pending' until the workflow starts them.
CREATE TABLE workflows (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('chain', 'group', 'chord')),
    state        text NOT NULL CHECK (state IN ('running', 'completed', 'failed', 'cancelled')),
    created_at   timestamptz NOT NULL,
    finalized_at timestamptz
);
CREATE INDEX workflows_running ON workflows (id) WHERE state = 'running';
CREATE INDEX workflows_finalized ON workflows (finalized_at) WHERE finalized_at IS NOT NULL;
ALTER TABLE jobs ADD COLUMN workflow_id bigint;
ALTER TABLE jobs ADD COLUMN workflow_step integer;
CREATE INDEX jobs_workflow ON jobs (workflow_id, workflow_step) WHERE workflow_id IS NOT NULL;
ALTER TABLE jobs DROP CONSTRAINT jobs_state_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_state_check CHECK (state IN ('pending', 'scheduled',
    'available', 'running', 'retryable', 'completed', 'cancelled', 'discarded'));
