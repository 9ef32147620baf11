-- Claim limits per queue, enforced inside the claim transaction: at most `concurrency_limit`
-- running jobs, and a token bucket of `rate_per_second` (holding one second of tokens).
ALTER TABLE queues ADD COLUMN concurrency_limit INTEGER;
ALTER TABLE queues ADD COLUMN rate_per_second REAL;
ALTER TABLE queues ADD COLUMN tokens REAL NOT NULL DEFAULT 0;
ALTER TABLE queues ADD COLUMN tokens_at INTEGER NOT NULL DEFAULT 0;
