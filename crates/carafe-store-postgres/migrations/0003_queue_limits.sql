-- Claim limits per queue, enforced inside the claim transaction (the queue's row is locked
-- while a limited queue is claimed): at most `concurrency_limit` running jobs, and a token
-- bucket of `rate_per_second` (holding one second of tokens).
ALTER TABLE queues ADD COLUMN concurrency_limit integer;
ALTER TABLE queues ADD COLUMN rate_per_second double precision;
ALTER TABLE queues ADD COLUMN tokens double precision NOT NULL DEFAULT 0;
ALTER TABLE queues ADD COLUMN tokens_at timestamptz NOT NULL DEFAULT 'epoch';
